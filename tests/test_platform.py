"""XLA performance flags: merged with the user's, only where a GPU may be used, known to XLA;
CPU runs keep freed memory; inference tools get a CPU device per core; the CPU's matmul peak."""

import json
import os
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


# An XLA step whose temporaries (a 64 MB product) are above glibc's 32 MB reuse limit:
# minor page faults per execution, once warm, with and without keep_cpu_memory(). The
# pause after each call: the runtime frees an execution's buffers on its own thread just
# after the result is ready, and on a loaded machine that can come after the next call has
# allocated, which then takes a fresh block (the heap grows by a block or two and settles,
# as in a training loop); pausing keeps the test about reuse, not about that race.
_FAULTS = r"""
import resource, sys, time
from bert_jax import platform
applied = platform.keep_cpu_memory() if sys.argv[1] == "keep" else False
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.tanh(x @ x.T) @ x)
x = jnp.ones((4000, 256))
faults = 0
for i in range(6):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  time.sleep(0.1)
  if i >= 3:  # three warm-up calls
    faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults / 3)
"""


@pytest.mark.slow
def test_a_cpu_run_reuses_its_freed_temporaries_instead_of_faulting_them_in_again():
  env = conftest.child_env()
  for name in platform._MALLOC_ENV + (platform.KEEP_MEMORY_ENV,):
    env.pop(name, None)
  out = {}
  for mode in ("keep", "default"):
    result = subprocess.run([sys.executable, "-c", _FAULTS, mode], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    applied, faults = result.stdout.split()
    out[mode] = (applied, float(faults))
  pages = 4000 * 4000 * 4 / 4096  # the product alone
  assert out["default"][0] == "False" and out["default"][1] > 0.5 * pages
  assert out["keep"][0] == "True" and out["keep"][1] < 0.05 * pages


def test_malloc_is_left_alone_where_it_is_not_ours_to_change():
  assert platform.accelerator_may_be_used({"JAX_PLATFORMS": "tpu"})
  assert not platform.accelerator_may_be_used({"JAX_PLATFORMS": "cpu"})
  for environ in ({"JAX_PLATFORMS": "tpu"},
                  {"JAX_PLATFORMS": "cpu", "MALLOC_ARENA_MAX": "4"},
                  {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                  {"JAX_PLATFORMS": "cpu", "LD_PRELOAD": "libjemalloc.so.2"},
                  {"JAX_PLATFORMS": "cpu", platform.KEEP_MEMORY_ENV: "0"},
                  {"JAX_PLATFORMS": "cpu", platform.KEEP_MEMORY_ENV: " False"}):
    assert not platform.keep_cpu_memory(environ), environ


_DEVICES = """
from bert_jax import platform
set_to = platform.cpu_device_per_core()
import jax
import jax.numpy as jnp
jnp.ones(2).block_until_ready()
print(set_to, len(jax.local_devices()), jax.default_backend())
"""


def test_inference_tools_get_one_cpu_device_per_core_unless_the_user_chose():
  cores = len(os.sched_getaffinity(0))
  env = conftest.child_env()
  env.pop(platform.CPU_DEVICES_ENV, None)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if "device_count" not in f)
  cases = [({}, f"{cores} {cores}" if cores > 1 else "0 1"),
           ({platform.CPU_DEVICES_ENV: "3"}, "0 3"),
           ({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, "0 4")]
  for extra, expect in cases:
    result = subprocess.run([sys.executable, "-c", _DEVICES], env=dict(env, **extra),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == expect.split() + ["cpu"], (extra, result.stdout)


def test_a_malformed_cpu_device_count_exits_with_one_line_naming_it():
  for ok in ({}, {platform.CPU_DEVICES_ENV: "3"}, {platform.CPU_DEVICES_ENV: " -1 "}):
    platform.check_cpu_devices_env(ok)  # what jax's int() accepts passes
  for bad in ("abc", "2.5", ""):
    with pytest.raises(SystemExit) as exc:
      platform.check_cpu_devices_env({platform.CPU_DEVICES_ENV: bad})
    assert str(exc.value).startswith(f"error: JAX_NUM_CPU_DEVICES={bad!r} is not a whole number")


def test_cpu_devices_cannot_change_once_jax_has_started(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  jax.numpy.ones(1).block_until_ready()  # this process's backend is up
  monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
  with pytest.raises(RuntimeError, match="before the first jax computation"):
    platform.cpu_device_per_core({"JAX_PLATFORMS": "cpu"})
  # Left alone where an accelerator may be used.
  assert platform.cpu_device_per_core({"JAX_PLATFORMS": "tpu"}) == 0


def test_cpu_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
  monkeypatch.setattr(platform, "cpu_busy", lambda: False)
  first = platform.cpu_peak_flops(str(tmp_path))
  assert first > 0
  cached = json.loads((tmp_path / platform.PEAK_CACHE_FILE).read_text())
  assert cached == {platform.cpu_key(): first}

  def no_measuring(*args, **kwargs):
    raise AssertionError("measured again although the cache has this CPU")

  monkeypatch.setattr(platform, "measure_matmul_flops", no_measuring)
  assert platform.cpu_peak_flops(str(tmp_path)) == first
  # Another machine's entry is kept; a torn file is measured again and rewritten.
  monkeypatch.setattr(platform, "measure_matmul_flops", lambda: 123.0)
  monkeypatch.setattr(platform, "cpu_key", lambda: "Other CPU x64")
  assert platform.cpu_peak_flops(str(tmp_path)) == 123.0
  assert sorted(json.loads((tmp_path / platform.PEAK_CACHE_FILE).read_text()).values()) == sorted(
      [first, 123.0])
  (tmp_path / platform.PEAK_CACHE_FILE).write_text('{"torn')
  assert platform.cpu_peak_flops(str(tmp_path)) == 123.0


def test_mfu_peak_on_cpu_is_measured_and_the_config_overrides(tmp_path, monkeypatch):
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(platform, "measure_matmul_flops", lambda: 8e10)
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import metrics  # pylint: disable=g-import-not-at-top
  devices = len(jax.local_devices(backend="cpu"))
  assert metrics.peak_flops_per_device("cpu") == 8e10 / devices
  assert metrics.peak_flops_per_device("cpu", override=5e9) == 5e9
  assert metrics.peak_flops_per_device("TPU v4") == 275e12


def test_a_peak_measured_on_a_busy_cpu_is_not_cached(tmp_path, monkeypatch):
  monkeypatch.setattr(platform, "cpu_busy", lambda: True)
  monkeypatch.setattr(platform, "measure_matmul_flops", lambda: 7e10)
  assert platform.cpu_peak_flops(str(tmp_path)) == 7e10
  assert not (tmp_path / platform.PEAK_CACHE_FILE).exists()
  monkeypatch.setattr(platform, "cpu_busy", lambda: False)  # measured again, idle: cached
  monkeypatch.setattr(platform, "measure_matmul_flops", lambda: 2.5e11)
  assert platform.cpu_peak_flops(str(tmp_path)) == 2.5e11
  monkeypatch.setattr(platform, "measure_matmul_flops", lambda: 1.0)
  assert platform.cpu_peak_flops(str(tmp_path)) == 2.5e11
