"""Helpers shared by the test modules (imported as `from conftest import ...`), and a test
run that leaves the machine as it found it.

Tiny runs spend most of their time compiling the same steps again, so every test
process and child process shares one persistent compilation cache (keyed by HLO,
so always safe). Everything a run writes lives under pytest's base temp dir:
- the compilation cache (`<basetemp root>/compilation_cache`; set
  BERT_JAX_TEST_COMPILATION_CACHE=DIR to keep one across runs);
- every `tempfile` dir of libraries (tfds' `mkdtemp("tfds")` per dataset info,
  ...) and of child processes (TMPDIR), in `<basetemp root>/tmp`;
- the CPU peak cache of MFU (BERT_JAX_CACHE_DIR), so tests never write ~/.cache.
A session that passed removes the base temp dir at its end (a failed one keeps
it to look at; an explicit --basetemp is the user's and is kept).
"""

import _thread
import gc
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import jax
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # configs/ is a package at the repository root
# Filled in by pytest_configure (the dirs live under pytest's base temp dir).
CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _session_root(config) -> str:
  """The base temp dir of the whole run (the controller's under pytest-xdist)."""
  basetemp = str(config._tmp_path_factory.getbasetemp())  # pylint: disable=protected-access
  worker = getattr(config, "workerinput", None)
  return os.path.dirname(basetemp) if worker is not None else basetemp


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up its factory
def pytest_configure(config):
  root = _session_root(config)
  cache = os.environ.get("BERT_JAX_TEST_COMPILATION_CACHE") or os.path.join(
      root, "compilation_cache")
  tmp = os.path.join(root, "tmp")
  os.makedirs(tmp, exist_ok=True)
  CACHE_ENV.update(JAX_COMPILATION_CACHE_DIR=cache, TMPDIR=tmp,
                   BERT_JAX_CACHE_DIR=os.path.join(root, "bert_jax_cache"))
  jax.config.update("jax_compilation_cache_dir", cache)
  tempfile.tempdir = tmp  # tfds' mkdtemp("tfds") and every other library temp dir
  os.environ["TMPDIR"] = tmp
  os.environ["BERT_JAX_CACHE_DIR"] = CACHE_ENV["BERT_JAX_CACHE_DIR"]
  if getattr(config, "workerinput", None) is None:
    _seed_cpu_peak(CACHE_ENV["BERT_JAX_CACHE_DIR"])
  _guard_gc_callbacks()


def _seed_cpu_peak(directory: str) -> None:
  """Measures the CPU peak once, before the workers load the machine: on a busy CPU runs
  measure it again each time instead of caching it (platform.cpu_peak_flops)."""
  from bert_jax import platform  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, platform.PEAK_CACHE_FILE)
  if not os.path.exists(path):
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump({platform.cpu_key(): platform.measure_matmul_flops()}, f)


def pytest_sessionfinish(session, exitstatus):
  config = session.config
  if getattr(config, "workerinput", None) is not None or config.option.basetemp:
    return
  if exitstatus == 0:
    root = str(config._tmp_path_factory.getbasetemp())  # pylint: disable=protected-access
    tempfile.tempdir = None
    shutil.rmtree(root, ignore_errors=True)


def _guard_gc_callbacks():
  """A Ctrl-C (or a test's KeyboardInterrupt) that lands while jax's `_xla_gc_callback` runs
  inside the garbage collector cannot propagate from there: Python prints it as an
  unraisable exception (pytest: PytestUnraisableExceptionWarning) and drops it. The wrapper
  hands it back to the main thread, where it interrupts the run as it should."""
  def guarded(callback):
    def run(*args):
      try:
        callback(*args)
      except KeyboardInterrupt:
        _thread.interrupt_main()
    run.guarded = True
    return run

  gc.callbacks[:] = [c if getattr(c, "guarded", False) or "xla_gc" not in getattr(
      c, "__name__", "") else guarded(c) for c in gc.callbacks]


def child_env(devices: int = 1, **extra: str) -> dict:
  """Environment of a child process: `devices` simulated CPU devices, the repo importable."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", **CACHE_ENV, **extra)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
  return env


def run_child(script, args, devices=8, timeout=900):
  """Runs `script --child ARGS` with `devices` simulated CPU devices; returns its JSON."""
  proc = subprocess.run([sys.executable, script, "--child", *args], env=child_env(devices),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def start_processes(script, args, num_processes=2, devices=2):
  """`script --child ARGS PORT I` for I < num_processes: a jax.distributed job on loopback
  (each process with `devices` simulated CPU devices). Finish with `process_results`."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return [subprocess.Popen([sys.executable, script, "--child", *args, str(port), str(i)],
                           env=child_env(devices), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(num_processes)]


def process_results(procs, timeout=900):
  """The JSON each child printed last, after checking it exited 0."""
  outs = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=timeout)
    finally:
      p.kill()
    assert p.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  return outs


def load_config(name: str = "tiny.py", arg: str | None = None):
  """`configs/NAME` as a user's --config would load it."""
  spec = importlib.util.spec_from_file_location(f"cfg_{name[:-3]}",
                                                os.path.join(ROOT, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def override(c, **overrides):
  """Sets dotted keys (`model.hidden_size=...`) on a ConfigDict; returns it."""
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  return c


def tiny_config(**overrides):
  """configs/tiny.py shrunk to test size (hidden 32, 2 layers, seq 32, batch 8)."""
  c = load_config("tiny.py")
  c.model.update(hidden_size=32, intermediate_size=64, num_heads=2, num_layers=2,
                 max_position_embeddings=32, hidden_dropout_rate=0.0,
                 attention_dropout_rate=0.0)
  # A constant schedule after warmup: runs of any length compile the same train step.
  c.update(max_seq_length=32, max_predictions_per_seq=5, batch_size=8, num_train_steps=6,
           learning_rate=1e-3, warmup_steps=2, schedule="constant", log_every_steps=1,
           eval_every_steps=0,
           checkpoint_every_steps=2, num_eval_batches=2)
  return override(c, **overrides)


def read_rows(workdir):
  """The rows of WORKDIR/metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def prepare_sample_data(base, num_lines: int = 4000, max_seq_length: int = 32,
                        num_shards: int = 3, mode: str = "nsp") -> str:
  """A small prepared dataset (vocab of 300) from the first lines of the shipped sample corpus
  (`mode`: prepare_pretraining's, e.g. 'packed' for MLM-only packed rows)."""
  from bert_jax import vocab_training  # pylint: disable=g-import-not-at-top
  from bert_jax.data import prepare_pretraining, sample_corpus, text_corpus  # pylint: disable=g-import-not-at-top

  base = str(base)
  os.makedirs(base, exist_ok=True)
  with open(sample_corpus.shipped_path(), encoding="utf-8") as f:
    lines = [next(f) for _ in range(num_lines)]
  corpus = os.path.join(base, "corpus.txt")
  with open(corpus, "w", encoding="utf-8") as f:
    f.writelines(lines)
  vocab = os.path.join(base, "vocab")
  vocab_training.train_wordpiece(corpus, vocab, 300, lowercase=True)
  stats = text_corpus.ReadStats()
  out = os.path.join(base, "prepared")
  options = prepare_pretraining.PrepareOptions(max_seq_length=max_seq_length, eval_fraction=0.1,
                                            num_output_shards=num_shards, mode=mode)
  prepare_pretraining.prepare(text_corpus.read_documents([corpus], stats), stats, vocab, out,
                           options)
  return out


# Throughput columns: absent right after a restart (no timing window yet), so resumed runs
# are compared without them.
TIMING_KEYS = ("seq_per_sec", "tokens_per_sec", "real_tokens_per_sec", "padding_fraction", "mfu")


def sigterm_then_resume(c, tmp_path, at_step: int = 3, after_cut=None):
  """Trains `c` whole and, in another workdir, stopped by SIGTERM at `at_step` then resumed;
  asserts every logged row (but timing) equal; returns (whole, cut) workdirs.
  `after_cut(cut)` runs between the stop and the resume."""
  import signal  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
  train.train_and_evaluate(c, whole)

  def sigterm_at(step):
    if step == at_step:
      os.kill(os.getpid(), signal.SIGTERM)

  first = train.train_and_evaluate(c, cut, step_hook=sigterm_at)
  assert first["preempted"] and first["step"] == at_step
  if after_cut is not None:
    after_cut(cut)
  train.train_and_evaluate(c, cut)
  strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS}  # noqa: E731
                        for r in rows]
  assert strip(read_rows(cut)) == strip(read_rows(whole))  # every loss and metric, bit for bit
  return whole, cut
