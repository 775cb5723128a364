"""Embedding speed: `launch/embed.py` against a sentence-transformers script, whole processes.

  python bench/embed_vs_sentence_transformers.py [--lines=10000] [--workdir=DIR]

Both sides embed the same ~10k lines of real English (Python standard library
docstrings, gathered at run time, never committed) with the same random-weight
MiniLM-L6-sized BERT (6 layers, hidden 384, 12 heads, intermediate 1536) saved
as a Hugging Face dir, mean pooling, max length 256. Each side is one
subprocess timed from start to exit: imports, model loading, tokenization,
compilation (bert_jax) and the forward passes. The vectors are compared and
the ratio of the median times printed (target: >= 1.5x in favour of
bert_jax), with this CPU's measured fp32 matmul peak and the load average after
each pair of runs (the sides alternate, so load falls on both alike). The
sentence-transformers side runs with TOKENIZERS_PARALLELISM=false, its faster
setting on small machines (the tokenizer threads otherwise fight torch's);
the bert_jax side runs with the environment as it is.

Needs torch, transformers and `pip install sentence-transformers --no-deps`.
scikit-learn (imported by sentence-transformers only for its evaluation
utilities) is replaced by an empty stub when it is not installed.
"""

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def stdlib_lines(count: int) -> list[str]:
  """Sentences-to-paragraphs of English from the stdlib's docstrings, deterministic order."""
  root = sysconfig.get_paths()["stdlib"]
  lines, seen = [], set()
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in ("test", "tests", "site-packages", "idlelib"))
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
          tree = ast.parse(f.read())
      except (SyntaxError, UnicodeDecodeError, ValueError):
        continue
      for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
          continue
        doc = ast.get_docstring(node)
        for paragraph in re.split(r"\n\s*\n", doc or ""):
          text = " ".join(paragraph.split())
          words = text.split()
          wordy = sum(w.isalpha() for w in words) >= len(words) // 2
          if len(words) >= 4 and wordy and text not in seen:
            seen.add(text)
            lines.append(text)
            if len(lines) == count:
              return lines
  return lines


def make_model(directory: str, corpus: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax import vocab_training  # pylint: disable=g-import-not-at-top
  vocab_training.train_wordpiece(corpus, directory, vocab_size=16000, lowercase=True)
  with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
    vocab_size = len(f.read().split("\n")) - 1
  config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=384, num_hidden_layers=6,
                                   num_attention_heads=12, intermediate_size=1536,
                                   max_position_embeddings=512)
  torch.manual_seed(0)
  transformers.BertModel(config).eval().save_pretrained(directory)


def matmul_peak(env: dict) -> float:
  """This CPU's fp32 matmul FLOP/s (bench/pretrain_peers.py), in a child so jax stays out of here."""
  code = ("import os, sys; os.environ.setdefault('JAX_PLATFORMS', 'cpu'); "
          f"sys.path.insert(0, {os.path.join(REPO, 'bench')!r}); import pretrain_peers; "
          "print(pretrain_peers.measured_matmul_peak())")
  done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        check=True)
  return float(done.stdout.split()[-1])


def timed(cmd: list[str], env: dict) -> float:
  start = time.perf_counter()
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  elapsed = time.perf_counter() - start
  if done.returncode:
    sys.exit(f"{cmd[1]} failed:\n{done.stderr[-3000:]}")
  return elapsed


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lines", type=int, default=10000)
  parser.add_argument("--workdir", default=None, help="Keep files here (default: a temp dir).")
  parser.add_argument("--st_batch_size", type=int, default=32, help="SentenceTransformer batch.")
  parser.add_argument("--repeats", type=int, default=3, help="Time each side this many times.")
  parser.add_argument("--st_tokenizers_parallelism", default="false",
                      help="TOKENIZERS_PARALLELISM for the sentence-transformers side: on a 2-core "
                           "machine 'false' made it ~1.8x faster than 'true' or unset.")
  args = parser.parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="embed_bench_")
  os.makedirs(work, exist_ok=True)
  corpus, model_dir = os.path.join(work, "text.txt"), os.path.join(work, "model")
  lines = stdlib_lines(args.lines)
  with open(corpus, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    make_model(model_dir, corpus)
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  theirs_env = dict(env, TOKENIZERS_PARALLELISM=args.st_tokenizers_parallelism)
  ours_out, theirs_out = os.path.join(work, "bert_jax.npy"), os.path.join(work, "st.npy")
  script = os.path.join(work, "st_embed.py")
  with open(script, "w", encoding="utf-8") as f:
    f.write(ST_SCRIPT)
  ours_cmd = [sys.executable, os.path.join(REPO, "launch", "embed.py"), f"--model={model_dir}",
              f"--input={corpus}", f"--output={ours_out}", "--pooling=mean", "--max_seq_length=256"]
  theirs_cmd = [sys.executable, script, model_dir, corpus, theirs_out, str(args.st_batch_size)]
  peak = matmul_peak(env)
  ours_t, theirs_t, loads = [], [], []
  for _ in range(args.repeats):  # alternate, so the machine's load falls on both sides alike
    ours_t.append(timed(ours_cmd, env))
    theirs_t.append(timed(theirs_cmd, theirs_env))
    loads.append(round(os.getloadavg()[0], 2))
  ours, theirs = np.load(ours_out), np.load(theirs_out)
  cos = np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
  tokens = sum(len(line.split()) for line in lines)
  ours_s, theirs_s = float(np.median(ours_t)), float(np.median(theirs_t))
  report = {"lines": len(lines), "words": tokens, "cpu_count": os.cpu_count(),
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "load_average_1m": loads,  # after each pair; > cpu_count: timings are noisy
            "st_tokenizers_parallelism": args.st_tokenizers_parallelism,
            "bert_jax_s": [round(t, 2) for t in ours_t],
            "sentence_transformers_s": [round(t, 2) for t in theirs_t],
            "ratio": round(theirs_s / ours_s, 2),  # of the medians
            "max_abs_diff": float(np.max(np.abs(ours - theirs))),
            "min_cosine": float(cos.min())}
  print(json.dumps(report))
  winner = "bert_jax" if report["ratio"] >= 1 else "sentence-transformers"
  print(f"bert_jax {ours_s:.1f} s, sentence-transformers {theirs_s:.1f} s (medians of "
        f"{args.repeats}): {report['ratio']:.2f}x in favour of {winner} ({len(lines)} lines, "
        f"max |diff| {report['max_abs_diff']:.1e}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, "
        f"load {loads})")
  if report["max_abs_diff"] > 1e-3:
    sys.exit("vectors disagree")


if __name__ == "__main__":
  main()
