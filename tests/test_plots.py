"""Training curves: the plotted data (and the figure's lines) equal metrics.jsonl; bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import plots
from bert_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(path, rows):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)


def _rows(seed, steps=(10, 20, 30)):
  rs = np.random.default_rng(seed)
  out = []
  for s in steps:
    out.append({"step": s, "loss": float(rs.uniform(0, 3)), "tokens": s * 256,
                "learning_rate": 1e-3, "mfu": None})
    if s % 20 == 0 or s == steps[-1]:
      out.append({"step": s, "eval_accuracy": float(rs.uniform())})
  return out


def test_plotted_values_equal_metrics_jsonl(tmp_path):
  a = _run(tmp_path / "x" / "seed1", _rows(0))
  b = _run(tmp_path / "y" / "seed1", [])
  with open(os.path.join(b, "metrics.jsonl"), "w") as f:  # a killed run's torn last line
    f.writelines(json.dumps(r) + "\n" for r in _rows(1, steps=(10, 20)))
    f.write('{"step": 30, "lo')
  out = str(tmp_path / "curves.png")
  data = plots.plot_runs([a, b], out, ["loss", "eval_accuracy"])
  assert os.path.getsize(out) > 1000 and open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert list(data) == ["loss", "eval_accuracy"]
  assert sorted(data["loss"]) == ["x/seed1", "y/seed1"]  # same basename: parents added
  for name, rows in (("x/seed1", _rows(0)), ("y/seed1", _rows(1, steps=(10, 20)))):
    for metric in ("loss", "eval_accuracy"):
      want = [(float(r["step"]), r[metric]) for r in rows if metric in r]
      assert list(zip(*data[metric][name])) == want
  # The figure draws exactly those numbers.
  fig = plots.draw(data)
  for ax, metric in zip(fig.axes, data):
    lines = {line.get_label(): line.get_xydata() for line in ax.get_lines()}
    assert sorted(lines) == sorted(data[metric])
    for name, xy in lines.items():
      np.testing.assert_array_equal(xy, np.asarray(data[metric][name]).T)
  tokens = plots.curves([a], ["loss"], x="tokens")
  assert tokens["loss"]["seed1"][0] == [2560.0, 5120.0, 7680.0]


def test_run_names_are_basenames_made_unique():
  assert plots.run_names(["/r/a", "/r/b"]) == ["a", "b"]
  assert plots.run_names(["/p/a/s1", "/q/a/s1", "/r/b"]) == ["p/a/s1", "q/a/s1", "b"]


def test_bad_input_names_the_culprit(tmp_path):
  good = _run(tmp_path / "good", _rows(0))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="empty has no metrics.jsonl"):
    plots.curves([good, str(tmp_path / "empty")])
  with pytest.raises(UserError, match="no run logged metric 'eval_f1'; logged: eval_accuracy"):
    plots.curves([good], ["loss", "eval_f1"])
  with pytest.raises(UserError, match="directory .*nowhere does not exist"):
    plots.plot_runs([good], str(tmp_path / "nowhere" / "x.png"))
  no_tokens = _run(tmp_path / "old", [{"step": 1, "loss": 1.0}])
  with pytest.raises(UserError, match="run old logs no 'tokens' column"):
    plots.curves([no_tokens], ["loss"], x="tokens")


@pytest.mark.slow
def test_launcher_writes_the_png_and_errors_are_one_line(tmp_path):
  run = _run(tmp_path / "run", _rows(0))
  out = tmp_path / "c.png"
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "plot.py"), run,
                      "--metrics=loss,eval_accuracy", f"--output={out}"],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert out.exists() and "2 metric(s) of 1 run(s)" in r.stdout
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "plot.py"), run,
                      "--metrics=nope", f"--output={out}"],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 1
  assert r.stderr.strip().splitlines() == [
      "error: no run logged metric 'nope'; logged: eval_accuracy, learning_rate, loss, tokens"]
