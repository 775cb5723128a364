"""XLA performance flags: merged with the user's, only where a GPU may be used, known to XLA."""

import subprocess
import sys

import pytest

from bert_jax import platform

import conftest


def test_user_flags_win_and_others_are_appended():
  current = "--xla_gpu_enable_latency_hiding_scheduler=false --xla_dump_to=/tmp/d"
  merged = platform.merged_xla_flags(current, platform.GPU_FLAGS)
  assert merged.startswith(current)
  assert merged.count("xla_gpu_enable_latency_hiding_scheduler") == 1
  for name in set(platform.GPU_FLAGS) - {"xla_gpu_enable_latency_hiding_scheduler"}:
    assert f"--{name}=true" in merged.split()
  assert platform.merged_xla_flags(merged, platform.GPU_FLAGS) == merged


def test_no_flags_without_a_gpu():
  environ = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert not platform.gpu_may_be_used(environ)
  assert platform.set_performance_flags(environ) == []
  assert environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
  assert not platform.gpu_may_be_used({"JAX_PLATFORMS": "tpu"})


def test_forced_flags_are_added_once():
  environ = {}
  added = platform.set_performance_flags(environ, force=True)
  assert sorted(a.split("=")[0].lstrip("-") for a in added) == sorted(platform.GPU_FLAGS)
  assert platform.set_performance_flags(environ, force=True) == []


@pytest.mark.slow
def test_every_flag_is_known_to_this_xla():
  # XLA aborts on an unknown name in XLA_FLAGS, on any backend: parse them on CPU.
  flags = platform.merged_xla_flags("", platform.GPU_FLAGS)
  env = conftest.child_env()
  env["XLA_FLAGS"] += " " + flags
  result = subprocess.run([sys.executable, "-c", "import jax; print(jax.numpy.ones(3).sum())"],
                          env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "3.0"
