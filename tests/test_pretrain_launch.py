"""launch/pretrain.py end to end on prepared sample data: metrics, eval, model files,
one-line errors, and a real SIGTERM followed by a resume that ends where an
uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CACHE_ENV, HERE

ROOT = os.path.dirname(HERE)


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", **CACHE_ENV)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  return env


def _launch(script, *args, **kw):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        env=_env(), capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  base = tmp_path_factory.mktemp("data")
  with open(os.path.join(ROOT, "bert_jax", "data", "sample_corpus.txt")) as f:
    lines = f.readlines()[:4000]
  corpus = base / "corpus.txt"
  corpus.write_text("".join(lines))
  r = _launch("build_vocab.py", f"--input={corpus}", f"--output={base / 'vocab'}",
              "--vocab_size=300", "--lowercase")
  assert r.returncode == 0, r.stderr[-2000:]
  r = _launch("prepare_data.py", f"--input={corpus}", f"--vocab={base / 'vocab'}",
              f"--output={base / 'prepared'}", "--max_seq_length=32", "--eval_fraction=0.1",
              "--num_workers=1")
  assert r.returncode == 0, r.stderr[-2000:]
  return str(base / "prepared")


def _args(data_dir, workdir, steps=20):
  tiny = dict(train_data=data_dir, max_seq_length=32, max_predictions_per_seq=5, batch_size=8,
              num_train_steps=steps, learning_rate=1e-3, warmup_steps=2, schedule="constant",
              log_every_steps=1, eval_every_steps=10, num_eval_batches=2,
              checkpoint_every_steps=10)
  tiny.update({"model.hidden_size": 32, "model.intermediate_size": 64, "model.num_heads": 2,
               "model.max_position_embeddings": 32})
  return [f"--config={os.path.join(ROOT, 'configs', 'tiny.py')}", f"--workdir={workdir}"] + [
      f"--config.{k}={v}" for k, v in tiny.items()]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_wrong_config_key_is_one_line(tmp_path, data_dir):
  r = _launch("pretrain.py", *_args(data_dir, tmp_path), "--config.model.prest=tiny")
  assert r.returncode == 1
  assert r.stderr.strip().splitlines() == [
      'error: unknown config key --config.model.prest (Did you mean "preset" instead of '
      '"prest"?)']
  r = _launch("pretrain.py", *_args(data_dir, tmp_path), "--config.max_seq_length=64")
  assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "max_seq_length" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_pretrain_then_sigterm_and_resume(tmp_path, data_dir):
  whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
  r = _launch("pretrain.py", *_args(data_dir, whole))
  assert r.returncode == 0, r.stderr[-3000:]
  rows = _rows(whole)
  train_rows = [row for row in rows if "loss" in row]
  eval_rows = [row for row in rows if "eval_loss" in row]
  assert [row["step"] for row in train_rows] == list(range(1, 21))
  assert [row["step"] for row in eval_rows] == [10, 20]
  assert {"mlm_accuracy", "nsp_accuracy", "seq_per_sec", "learning_rate"} <= set(train_rows[-1])
  assert "step 20/20 | loss" in r.stderr  # the console line
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  model = convert.from_pretrained(whole)
  assert model.config.vocab_size == 300 and model.config.hidden_size == 32
  assert model.tokenizer.vocab_size == 300

  # Preempted: a long run gets SIGTERM after its first logged step (the schedule is constant,
  # so the run length does not change the numbers), then resumes to step 20.
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "pretrain.py"),
                           *_args(data_dir, cut, steps=100000)], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(cut, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.05)
  _, stderr = proc.communicate(timeout=900)
  assert proc.returncode == 143, stderr[-3000:]
  saved = [int(d) for d in os.listdir(os.path.join(cut, "checkpoints")) if d.isdigit()]
  assert saved and max(saved) < 20
  r = _launch("pretrain.py", *_args(data_dir, cut))
  assert r.returncode == 0, r.stderr[-3000:]
  final_cut = [row for row in _rows(cut) if "loss" in row][-1]
  assert final_cut["step"] == 20
  assert final_cut["loss"] == train_rows[-1]["loss"]
  assert final_cut["mlm_accuracy"] == train_rows[-1]["mlm_accuracy"]
