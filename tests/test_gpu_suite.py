"""bench/gpu_suite.py --smoke: the GPU suite's own logic, on CPU with tiny sizes."""

import os
import subprocess
import sys

import pytest

import conftest

SUITE = os.path.join(conftest.ROOT, "bench", "gpu_suite.py")


@pytest.mark.slow
def test_gpu_suite_smoke_prints_every_row_and_passes_its_checks():
  proc = subprocess.run([sys.executable, SUITE, "--smoke"], env=conftest.child_env(),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
  for check in ("cuDNN attention = XLA, padding", "cuDNN attention = XLA, packed rows",
                "bf16 train step tracks fp32", "embeddings match transformers"):
    assert check in rows and "PASS" in rows[check], proc.stdout
  for case in ("BERT-base seq 128", "BERT-large seq 128", "BERT-large seq 512 packed"):
    line = next(line for name, line in rows.items() if name.startswith(f"pretrain {case} "))
    assert line.count("seq/s") == 2 and "x " in line, line
  assert any(name.startswith("embed ") and "tok/s" in line for name, line in rows.items())
  assert "measured bf16 matmul peak" in proc.stdout
  assert "FAIL" not in proc.stdout


def test_a_failing_check_stops_the_suite_and_is_named(monkeypatch, capsys):
  sys.path.insert(0, os.path.dirname(SUITE))
  import gpu_suite  # pylint: disable=g-import-not-at-top
  calls = []

  def fake_worker(name, smoke, *args, **kwargs):
    calls.append(name)
    if name == "peak":
      return dict(device="fake", platform="gpu", bf16_peak=1e15, datasheet_peak=989e12)
    if name == "checks":
      return dict(rows=[dict(name="cuDNN attention = XLA, padding", ok=True, detail="ok"),
                        dict(name="cuDNN attention = XLA, packed rows", ok=False,
                             detail="max |d out| 3.0e-01")])
    raise AssertionError(f"the suite went on to {name} after a failed check")

  monkeypatch.setattr(gpu_suite, "_run_worker", fake_worker)
  assert gpu_suite.main([]) == 1
  out, err = capsys.readouterr()
  assert calls == ["peak", "checks"]
  assert "cuDNN attention = XLA, packed rows" in err and "3.0e-01" in err
  assert "FAIL" in out
