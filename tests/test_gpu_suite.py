"""bench/gpu_suite.py --smoke: the GPU suite's own logic, on CPU with tiny sizes; and the
GPU tests' code (tests/test_gpu.py) run on CPU, where `cudnn` falls back to XLA."""

import os
import subprocess
import sys

import numpy as np
import pytest

import conftest
import test_gpu

SUITE = os.path.join(conftest.ROOT, "bench", "gpu_suite.py")
GPU_TESTS = ("test_cudnn_attention_equals_xla[padding]", "test_cudnn_attention_equals_xla[packed]",
             "test_bf16_train_step_tracks_fp32", "test_bf16_embeddings_match_transformers")


def _gpu_suite():
  sys.path.insert(0, os.path.dirname(SUITE))
  import gpu_suite  # pylint: disable=g-import-not-at-top
  return gpu_suite


@pytest.mark.slow
def test_gpu_suite_smoke_prints_every_row_and_skips_the_gpu_tests_by_name():
  proc = subprocess.run([sys.executable, SUITE, "--smoke"], env=conftest.child_env(),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
  for name in GPU_TESTS:  # the suite ran pytest, which collected each and skipped it on CPU
    assert name in rows and "SKIP" in rows[name] and "needs a GPU" in rows[name], proc.stdout
  assert "pytest -m gpu tests/test_gpu.py: 0 PASS, 4 SKIP" in proc.stdout
  for case in ("BERT-base seq 128", "BERT-large seq 128", "BERT-large seq 512 packed"):
    line = next(line for name, line in rows.items() if name.startswith(f"pretrain {case} "))
    assert line.count("seq/s") == 2 and "x " in line, line
  embed = next(line for name, line in rows.items() if name.startswith("embed "))
  assert embed.count("tok/s") == 2 and "min cosine 1.0000" in embed, embed
  assert "measured bf16 matmul peak" in proc.stdout
  assert "FAIL" not in proc.stdout


def test_a_failing_gpu_test_stops_the_suite_and_is_named(monkeypatch, capsys):
  gpu_suite = _gpu_suite()
  calls = []

  def fake_worker(name, smoke, *args, **kwargs):
    calls.append(name)
    if name == "peak":
      return dict(device="fake", platform="gpu", bf16_peak=1e15, datasheet_peak=989e12)
    raise AssertionError(f"the suite went on to {name} after a failed test")

  def fake_tests(smoke):
    calls.append("tests")
    return [dict(name=GPU_TESTS[0], status="PASS", detail="max |d out| 1.0e-03"),
            dict(name=GPU_TESTS[1], status="FAIL", detail="max |d out| 3.0e-01; AssertionError")]

  monkeypatch.setattr(gpu_suite, "_run_worker", fake_worker)
  monkeypatch.setattr(gpu_suite, "run_gpu_tests", fake_tests)
  assert gpu_suite.main([]) == 1
  out, err = capsys.readouterr()
  assert calls == ["peak", "tests"]
  assert GPU_TESTS[1] in err and "3.0e-01" in err
  assert "FAIL" in out


@pytest.mark.slow
def test_run_gpu_tests_reads_each_test_of_the_pytest_child():
  rows = _gpu_suite().run_gpu_tests(smoke=True)
  assert [r["name"] for r in rows] == list(GPU_TESTS)
  assert {r["status"] for r in rows} == {"SKIP"}
  assert all("needs a GPU: jax.default_backend() is 'cpu'" in r["detail"] for r in rows), rows


# The GPU tests' own code on CPU at tiny sizes: `cudnn` falls back to XLA here, so the two
# kernels agree exactly and no fused call is compiled; bf16 runs on the CPU.


@pytest.mark.parametrize("packed", [False, True])
def test_gpu_attention_check_runs_on_cpu(packed):
  gap = test_gpu.attention_gap(packed, shape=(2, 128, 2, 64))
  assert gap["err_out"] == 0.0 and gap["err_grad"] == 0.0
  assert gap["grad_scale"] > 0.1 and not gap["fused"]


@pytest.mark.slow
def test_gpu_bf16_check_runs_on_cpu():
  sizes = dict(preset="tiny", steps=4, batch=4, seq=32, preds=5, vocab=512)
  fp32 = test_gpu.train_losses("float32", **sizes)
  bf16 = test_gpu.train_losses("bfloat16", **sizes)
  assert len(fp32) == len(bf16) == 4
  assert np.isfinite(bf16).all() and fp32 != bf16  # bf16 really ran in bf16
  np.testing.assert_allclose(bf16, fp32, rtol=0.02)
  assert abs(fp32[0] - np.log(512) - np.log(2)) < 0.3  # a fresh model: log V (MLM) + log 2 (NSP)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,floor", [("auto", 0.9999), ("bfloat16", 0.999)])
def test_gpu_embedding_check_runs_on_cpu(tmp_path, dtype, floor):
  # 'auto' is float32 on CPU; bf16 measured 0.99999 here (the GPU test asks for > 0.99).
  cos = test_gpu.embedding_cosines(str(tmp_path), texts=48, hidden=128, layers=2, dtype=dtype)
  assert len(cos) == 48 and cos.min() > floor
