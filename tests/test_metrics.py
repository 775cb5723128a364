"""Logged metrics: weighted averages over the window, the learning rate of the logged step."""

import subprocess
import sys

import numpy as np
import pytest

import conftest
from bert_jax import loop
from bert_jax import metrics
from bert_jax import heads
from bert_jax.tasks import pretraining
from conftest import read_rows, tiny_config


def test_window_row_weights_by_denominators_and_keeps_the_last_learning_rate():
  acc = metrics.Accumulator()
  acc.add(dict(mlm_loss_sum=np.float32(6.0), mlm_correct=1.0, mlm_weight=3.0, nsp_loss_sum=1.0,
               nsp_correct=1.0, nsp_count=2.0, grad_norm=1.0, learning_rate=1e-5))
  acc.add(dict(mlm_loss_sum=1.0, mlm_correct=1.0, mlm_weight=1.0, nsp_loss_sum=0.0,
               nsp_correct=2.0, nsp_count=2.0, grad_norm=3.0, learning_rate=2e-5))
  task = heads.for_spec(pretraining.spec_of(tiny_config(), {"vocab_size": 128}))
  out = loop.summarize(task, acc.sums, acc.steps, acc.last)
  # Per-token averages over the whole window (1.75 and 0.5), not the mean of the per-step
  # averages (1.5 and 0.667): steps with more masked tokens weigh more.
  assert out["mlm_loss"] == 7.0 / 4.0 and out["mlm_accuracy"] == 2.0 / 4.0
  assert out["nsp_loss"] == 0.25 and out["nsp_accuracy"] == 0.75
  assert out["loss"] == out["mlm_loss"] + out["nsp_loss"]
  assert out["grad_norm"] == 2.0
  assert out["learning_rate"] == 2e-5


def test_console_line_is_short_and_names_the_total_and_eta():
  row = {"loss": 0.41234, "accuracy": 0.5, "grad_norm": 1.2, "learning_rate": 2e-5,
         "seq_per_sec": 812.4, "tokens_per_sec": 103987.0, "mfu": 0.123}
  assert metrics.console_line(1200, row, 9000, 370.0) == (
      "step 1200/9000 | loss 0.412 | accuracy 0.5 | lr 2e-05 | 812 seq/s | mfu 12.3% | "
      "ETA 6m10s")
  assert metrics.console_line(7, {"eval_accuracy": 0.9131, "mfu": None}) == (
      "step 7 | eval_accuracy 0.913")
  assert [metrics.format_duration(s) for s in (0, 59.4, 61, 7325)] == [
      "0s", "59s", "1m01s", "2h02m"]


def test_writer_adds_tokens_and_the_eta_from_the_pace_so_far(tmp_path, monkeypatch):
  clock = iter([100.0, 110.0, 130.0])  # first row (compile), then 10 s and 30 s later
  lines = []
  monkeypatch.setattr(metrics, "emit", lambda log, console: lines.append(console))
  writer = metrics.MetricWriter(str(tmp_path), enabled=True, total_steps=100,
                                tokens_per_step=64)
  writer._eta = metrics._EtaClock(lambda: next(clock))  # pylint: disable=protected-access
  writer.write(10, {"loss": 1.0})
  writer.write(20, {"loss": 0.9})  # 10 steps in 10 s: 80 steps left = 80 s
  writer.write(20, {"eval_accuracy": 0.5})  # eval rows: no tokens, no ETA
  writer.write(30, {"loss": 0.8})  # 20 steps in 30 s: 70 steps left = 105 s
  writer.close()
  assert lines == ["step 10/100 | loss 1", "step 20/100 | loss 0.9 | ETA 1m20s",
                   "step 20/100 | eval_accuracy 0.5", "step 30/100 | loss 0.8 | ETA 1m45s"]
  rows = read_rows(str(tmp_path))
  assert [r.get("tokens") for r in rows] == [640, 1280, None, 1920]


_SCRIPT = """
import sys
from absl import app, logging
from bert_jax import metrics

def main(argv):
  if len(argv) > 2:
    logging.get_absl_handler().use_absl_log_file("run", argv[2])
  w = metrics.MetricWriter(argv[1], enabled=True, total_steps=4)
  w.write(2, {"loss": 0.5, "seq_per_sec": 100.0, "tokens_per_sec": 6400.0})
  w.close()

app.run(main)
"""


@pytest.mark.slow
def test_terminal_gets_the_clean_line_and_the_log_file_the_full_one(tmp_path):
  script = tmp_path / "s.py"
  script.write_text(_SCRIPT)
  r = subprocess.run([sys.executable, str(script), str(tmp_path / "a")], capture_output=True,
                     text=True, timeout=120, env=conftest.child_env(1))
  assert r.returncode == 0, r.stderr
  assert "step 2/4 | loss 0.5 | 100 seq/s" in r.stderr.splitlines()
  assert "metrics.py" not in r.stderr  # no absl prefix for the progress line
  logs = tmp_path / "logs"
  logs.mkdir()
  r = subprocess.run([sys.executable, str(script), str(tmp_path / "b"), str(logs)],
                     capture_output=True, text=True, timeout=120, env=conftest.child_env(1))
  assert r.returncode == 0, r.stderr
  assert "step 2/4 | loss 0.5 | 100 seq/s" in r.stderr.splitlines()
  log_text = "".join(p.read_text() for p in logs.iterdir() if p.is_file())
  line = next(l for l in log_text.splitlines() if "step 2 | loss 0.5" in l)
  assert line.startswith("I") and "metrics.py:" in line and "tokens_per_sec 6.4e+03" in line
  r = subprocess.run([sys.executable, str(script), str(tmp_path / "c"), "--alsologtostderr"],
                     capture_output=True, text=True, timeout=120, env=conftest.child_env(1))
  assert "step 2/4" not in r.stderr and "metrics.py:" in r.stderr  # absl's own lines
