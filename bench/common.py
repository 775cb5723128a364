"""What the side-by-side benchmarks share: the repo on the path, the machine's figures
(load, matmul peak), whole commands timed in subprocesses, launchers' metrics.jsonl,
real English text and random-weight Hugging Face BERT dirs.

Why one module: every bench prints the same context (load average, measured peak) and
runs the user-facing command the same way (a child process with this checkout's
`bert_jax` first on its path: the installed package may be another checkout). Each
bench used to carry its own copy of these, and the copies drifted. A bench run as
`python bench/NAME.py` finds this module next to it; importing it puts the repo root
first on `sys.path`, the one place that does so. Nothing here imports jax or torch at
import time (the embedding benches keep jax out of their own process).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from typing import Any, Callable, Optional, Sequence

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
if sys.path[:1] != [REPO]:
  sys.path.insert(0, REPO)


# ---------------------------------------------------------------- the machine


def load_line() -> str:
  """`load average 1m 5m 15m on N CPUs`: a figure without its load is not a result."""
  one, five, fifteen = os.getloadavg()
  return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def load_1m() -> float:
  return round(os.getloadavg()[0], 2)


def alternate(run: int, sides: dict[str, Callable[[], dict]]) -> tuple[dict[str, dict], list[str]]:
  """Runs each side once: in the given order on even runs, reversed on odd ones, so that
  neither side always meets the machine first (caches, turbo, a neighbour's job). Returns
  ({side: its result}, the order run)."""
  order = list(sides) if run % 2 == 0 else list(sides)[::-1]
  return {side: sides[side]() for side in order}, order


def measured_matmul_peak(n: int = 2048, reps: int = 5, dtype: Any = None,
                         inner: int = 1) -> float:
  """FLOP/s of a jitted n x n matmul loop (`inner` chained matmuls per call), best of `reps`.

  There is no datasheet peak for a CPU, so MFU on CPU is against this figure. `dtype`
  defaults to float32. Runs on jax's default platform, in this process.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  dtype = dtype or jnp.float32
  a = jnp.ones((n, n), dtype) / n

  @jax.jit
  def f(x):
    return jax.lax.fori_loop(0, inner, lambda _, y: (y @ a).astype(dtype), x)

  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 * inner / best


def matmul_peak_in_child(env: Optional[dict] = None) -> float:
  """`measured_matmul_peak()` on the CPU in a child process, so jax stays out of this one."""
  code = ("import os; os.environ.setdefault('JAX_PLATFORMS', 'cpu'); import common; "
          "print(common.measured_matmul_peak())")
  done = subprocess.run([sys.executable, "-c", code], env=env or child_env(),
                        capture_output=True, text=True, check=True)
  return float(done.stdout.split()[-1])


# ---------------------------------------------------------- commands and runs


def child_env(**extra: str) -> dict:
  """This environment with the repo (its `bert_jax`) and bench/ (this module) first on
  PYTHONPATH, plus `extra`."""
  env = dict(os.environ, **extra)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, BENCH, env.get("PYTHONPATH")) if p)
  return env


def timed(cmd: Sequence[str], env: Optional[dict] = None) -> float:
  """Seconds `cmd` took from start to exit; exits with the tail of its stderr if it failed."""
  start = time.perf_counter()
  done = subprocess.run(list(cmd), env=env or child_env(), capture_output=True, text=True,
                        check=False)
  elapsed = time.perf_counter() - start
  if done.returncode:
    sys.exit(f"{cmd[1] if len(cmd) > 1 else cmd[0]} failed:\n{done.stderr[-3000:]}")
  return elapsed


def launcher_command(name: str, workdir: str, config: str, overrides: dict) -> list[str]:
  """`python launch/NAME.py --config=configs/CONFIG --workdir=W --config.K=V ...`."""
  return [sys.executable, os.path.join(REPO, "launch", name),
          f"--config={os.path.join(REPO, 'configs', config)}", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in overrides.items()]]


def read_metrics(workdir: str) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl, the file every training run writes."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def speed_rows(rows: list[dict]) -> list[dict]:
  """The rows that carry a throughput figure (the loop logs none for its compile step)."""
  return [r for r in rows if r.get("seq_per_sec")]


def run_launcher(name: str, workdir: str, config: str, overrides: dict,
                 env: Optional[dict] = None, echo: bool = False) -> tuple[list[dict], float]:
  """Runs a training launcher as a user would; its metrics.jsonl rows and wall seconds."""
  cmd = launcher_command(name, workdir, config, overrides)
  if echo:
    print(f"bert_jax: {' '.join(cmd[1:])}", flush=True)
  wall = timed(cmd, env)
  return read_metrics(workdir), wall


def load_config(name: str, *args: str):
  """configs/NAME loaded by path, as a user's --config would."""
  spec = importlib.util.spec_from_file_location(f"bench_cfg_{name[:-3]}",
                                                os.path.join(REPO, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


# ------------------------------------------------------------ text and models


def stdlib_docstring_paragraphs():
  """Per stdlib module (in a fixed order), its docstring paragraphs, whitespace folded.

  Real English without a download: read at run time, never committed.
  """
  root = sysconfig.get_paths()["stdlib"]
  skipped = ("test", "tests", "site-packages", "idlelib")
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in skipped)
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
          tree = ast.parse(f.read())
      except (SyntaxError, UnicodeDecodeError, ValueError):
        continue
      yield [" ".join(paragraph.split())
             for node in ast.walk(tree)
             if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
             for paragraph in re.split(r"\n\s*\n", ast.get_docstring(node) or "")]


def stdlib_lines(count: int) -> list[str]:
  """Paragraphs of English from the stdlib's docstrings (mostly words), in a fixed order."""
  lines, seen = [], set()
  for paragraphs in stdlib_docstring_paragraphs():
    for text in paragraphs:
      words = text.split()
      wordy = sum(w.isalpha() for w in words) >= len(words) // 2
      if len(words) >= 4 and wordy and text not in seen:
        seen.add(text)
        lines.append(text)
        if len(lines) == count:
          return lines
  return lines


def write_lines(path: str, lines: Sequence[str]) -> str:
  """One text per line (what launch/embed.py and build_index.py read); returns `path`."""
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  return path


def hf_sizes(layers: int, hidden: int, heads: Optional[int] = None,
             intermediate: Optional[int] = None) -> dict:
  """transformers.BertConfig sizes; by default BERT's shape rules (H/64 heads, 4H MLP)."""
  return dict(num_hidden_layers=layers, hidden_size=hidden,
              num_attention_heads=heads or max(1, hidden // 64),
              intermediate_size=intermediate or 4 * hidden)


def save_random_bert(directory: str, vocab_size: int, sizes: dict, seed: int = 0,
                     max_position_embeddings: int = 512) -> str:
  """A random-weight `BertModel` saved as a Hugging Face dir (seeded: the same every run).

  The vocabulary file is the caller's: it writes or copies `vocab.txt` into `directory`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.BertConfig(vocab_size=vocab_size,
                                   max_position_embeddings=max_position_embeddings, **sizes)
  torch.manual_seed(seed)
  transformers.BertModel(config).eval().save_pretrained(directory)
  return directory


def vocab_size_of(directory: str) -> int:
  with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
    return len(f.read().split("\n")) - 1


# ----------------------------------------------- the embedding benches' inputs

# A random-weight MiniLM-L6-sized BERT: what sentence-transformers' small models look like.
MINILM_SIZES = hf_sizes(6, 384, heads=12, intermediate=1536)

# The sentence-transformers side of the embedding benches: one process, mean pooling,
# max length 256, `encode` at the given batch size, vectors to an .npy.
ST_SCRIPT = r"""
import importlib.util, sys, types, importlib.machinery
if importlib.util.find_spec("sklearn") is None:  # only ST's evaluators use it
  for name in ("sklearn", "sklearn.metrics"):
    mod = types.ModuleType(name); mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = mod
  sys.modules["sklearn.metrics"].pairwise_distances = None
import numpy as np
from sentence_transformers import SentenceTransformer, models
model_dir, input_path, output_path, batch_size = sys.argv[1:5]
word = models.Transformer(model_dir, max_seq_length=256)
pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
model = SentenceTransformer(modules=[word, pool], device="cpu")
with open(input_path, encoding="utf-8") as f:
  texts = f.read().split("\n")[:-1]
vectors = model.encode(texts, batch_size=int(batch_size), convert_to_numpy=True)
np.save(output_path, vectors.astype(np.float32))
"""


def embedding_inputs(work: str, count: int) -> tuple[list[str], str, str, str]:
  """(lines, corpus, model_dir, st_script) of the embedding benches, in `work`.

  `count` stdlib docstring paragraphs in text.txt; model/: a random-weight MiniLM-sized
  BERT with a 16k WordPiece vocab trained on that text (built once, kept between runs);
  st_embed.py: ST_SCRIPT.
  """
  os.makedirs(work, exist_ok=True)
  lines = stdlib_lines(count)
  corpus = write_lines(os.path.join(work, "text.txt"), lines)
  model_dir = os.path.join(work, "model")
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    from bert_jax import vocab_training  # pylint: disable=g-import-not-at-top
    vocab_training.train_wordpiece(corpus, model_dir, vocab_size=16000, lowercase=True)
    save_random_bert(model_dir, vocab_size_of(model_dir), MINILM_SIZES)
  script = os.path.join(work, "st_embed.py")
  with open(script, "w", encoding="utf-8") as f:
    f.write(ST_SCRIPT)
  return lines, corpus, model_dir, script


def compare_vectors(ours, theirs) -> dict:
  """max |a - b| and the smallest row cosine of two [N, E] arrays."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  cos = np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
  return {"max_abs_diff": float(np.max(np.abs(ours - theirs))), "min_cosine": float(cos.min())}


def winner(ratio: float, peer: str) -> str:
  """Who a `peer_time / bert_jax_time` ratio favours."""
  return "bert_jax" if ratio >= 1 else peer
