"""Per-platform speed settings in one place: XLA flags for GPUs, batch sizes for CPUs, and
the CPU's measured matmul peak (for MFU on CPU).

Why measure the CPU: MFU needs a peak FLOP/s and CPUs have no table entry (the
same model name runs at different clocks, core counts and vector widths).
`cpu_peak_flops()` times a jitted fp32 matmul for about a second, keeps the best
rate, and caches it in a small JSON file (`~/.cache/bert_jax/cpu_peak_flops.json`,
or under `$BERT_JAX_CACHE_DIR`) keyed by CPU model and core count, so each machine
pays once. It is an achieved matmul rate, not a data-sheet peak: MFU on CPU reads
"fraction of what XLA's matmul reaches here", and a busy machine measures low.
`config.peak_flops_per_device` overrides it.

Why a function: XLA reads `XLA_FLAGS` once, when jax initialises its backend, so
the flags must be in the environment before the first jax computation. Launchers
call `set_performance_flags()` first thing in `main`; it appends only flags the
user has not set (theirs always win), and only when a GPU may be used: on a
CPU-only or TPU install it changes nothing.

The flags (all parse in the XLA of jax 0.10.2; see jax's "GPU performance tips"):
- `xla_gpu_enable_latency_hiding_scheduler`: schedules collectives and compute
  to overlap (data-parallel gradient all-reduce behind the backward pass).
- `xla_gpu_enable_highest_priority_async_stream`: collectives on the highest
  priority stream, so the overlap above actually happens.
- `xla_gpu_enable_pipelined_all_gather` / `_reduce_scatter` / `_all_reduce`:
  FSDP's per-layer gathers and scatters move out of the critical path of
  scanned layers.
- `xla_gpu_enable_while_loop_double_buffering`: double-buffers the `nn.scan`
  layer loop (`model.scan_layers`), letting the pipelined collectives overlap.
On one GPU the collectives are absent and these flags change little; they are
for multi-GPU nodes and clusters. Not measured on hardware in this repo yet
(see BENCHMARKS.md, "GPU suite").
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform as py_platform
import tempfile
import time
from typing import Mapping, MutableMapping, Optional

# Tokens per device in one CPU forward (an inference batch) or forward/backward (a training
# micro-batch). Measured on 2 cores (BENCHMARKS.md, "CPU"): embedding batches of 256-1024
# tokens ran ~15% faster than batches of 2048, and BERT-base trained ~1.45x faster in
# micro-batches of 4 rows x 128 than in whole batches of 8-32 rows: one layer's activations
# stay in the cores' caches. Used by train.auto_grad_accum_steps and inference.Embedder.
CPU_BATCH_TOKENS = 512
# Real tokens per device in one micro-batch of packed fine-tuning on CPU (`config.grad_accum_steps`
# 0). Measured, not derived, on 2 cores with a MiniLM-sized model (6 x 384), QA at 32 windows of
# 96 tokens a step: 16.5 seq/s whole, 21.6 in 4 micro-batches (~560 real tokens each), 19.5 in 8
# over 30 steps; over whole 188-step runs later, 20.2-20.4 whole against 20.5-20.7 in 4, i.e. a
# 1-2% gain within the noise (BENCHMARKS.md, "Tagging and QA"). Each micro-batch packs its
# examples in rows of its own, so smaller ones also round up to more rows.
CPU_PACKED_BATCH_TOKENS = 1024
# Inference token budget per device on GPU/TPU (not tuned on hardware yet).
ACCELERATOR_BATCH_TOKENS = 2048


def fewest_micro_batches(items: int, tokens_per_item: float, budget: int, platform: str) -> int:
  """On CPU the fewest micro-batches, dividing `items`, of at most `budget` tokens each (at
  least one item each); 1 on GPU/TPU. The training rule behind `config.grad_accum_steps=0`
  (`train.auto_grad_accum_steps`, `finetune_pipeline.packed_micro_batches`)."""
  if platform != "cpu" or items <= 1:
    return 1
  most = max(1, int(budget // max(tokens_per_item, 1)))
  return next(k for k in range(1, items + 1) if items % k == 0 and items // k <= most)


def batch_tokens(platform: str) -> int:
  """The per-device token budget of one forward on `platform` ('cpu', 'gpu', 'tpu', ...)."""
  return CPU_BATCH_TOKENS if platform == "cpu" else ACCELERATOR_BATCH_TOKENS


GPU_FLAGS: dict[str, str] = {
    "xla_gpu_enable_latency_hiding_scheduler": "true",
    "xla_gpu_enable_highest_priority_async_stream": "true",
    "xla_gpu_enable_pipelined_all_gather": "true",
    "xla_gpu_enable_pipelined_reduce_scatter": "true",
    "xla_gpu_enable_pipelined_all_reduce": "true",
    "xla_gpu_enable_while_loop_double_buffering": "true",
}

_GPU_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_rocm7_plugin", "jax_rocm60_plugin")


def gpu_may_be_used(environ: Optional[Mapping[str, str]] = None) -> bool:
  """Whether jax could pick a GPU, decided without initialising jax's backends."""
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", environ.get("JAX_PLATFORM_NAME", "")).lower()
  if platforms and not any(p in platforms for p in ("cuda", "gpu", "rocm")):
    return False
  return any(importlib.util.find_spec(name) is not None for name in _GPU_PLUGINS)


def merged_xla_flags(current: str, flags: Mapping[str, str]) -> str:
  """`current` XLA_FLAGS plus each of `flags` the user has not set already."""
  set_by_user = {token.lstrip("-").split("=", 1)[0] for token in current.split()}
  extra = [f"--{name}={value}" for name, value in flags.items() if name not in set_by_user]
  return " ".join([current.strip()] + extra).strip()


def set_performance_flags(environ: Optional[MutableMapping[str, str]] = None, *,
                          force: bool = False) -> list[str]:
  """Append GPU_FLAGS to XLA_FLAGS (before jax initialises); returns the flags added.

  Does nothing unless a GPU may be used (or `force`). A call after jax has
  initialised its backends would be silently ignored by XLA, so it raises.
  """
  environ = os.environ if environ is None else environ
  if not (force or gpu_may_be_used(environ)):
    return []
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if environ is os.environ and xla_bridge.backends_are_initialized():
    raise RuntimeError("set_performance_flags() must run before the first jax computation "
                       "(XLA reads XLA_FLAGS once)")
  before = environ.get("XLA_FLAGS", "")
  after = merged_xla_flags(before, GPU_FLAGS)
  environ["XLA_FLAGS"] = after
  return after[len(before.strip()):].split()


# --------------------------------------------------------------------------- CPU memory

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Environment settings by which a user chose malloc's behaviour already (theirs win).
_MALLOC_ENV = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
               "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")
KEEP_MEMORY_ENV = "BERT_JAX_KEEP_CPU_MEMORY"  # "0" (or false/no/off): leave malloc as it is


def accelerator_may_be_used(environ: Optional[Mapping[str, str]] = None) -> bool:
  """Whether jax could pick a GPU or a TPU, decided without initialising its backends."""
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", environ.get("JAX_PLATFORM_NAME", "")).lower()
  if platforms and "tpu" in platforms:
    return True
  if gpu_may_be_used(environ):
    return True
  return not platforms and importlib.util.find_spec("libtpu") is not None


def keep_cpu_memory(environ: Optional[Mapping[str, str]] = None) -> bool:
  """On a CPU run, makes glibc keep freed memory for reuse; True when it did.

  Why: XLA CPU allocates the temporaries of each execution as one block (282 MB for
  the fine-tuning bench's train step). That is above the 32 MB up to which glibc
  recycles freed blocks, so every step maps a fresh block and unmaps it at the end,
  and the kernel zero-fills each page at its first touch: 70,000 page faults a step,
  about a tenth of that step's time (BENCHMARKS.md, "Where a fine-tuning step
  goes"). Three mallopt(3) settings keep the block: no mapped blocks (big ones come
  from the heap), one arena (a thread's own arena is a mapped heap of at most 64 MB,
  too small for such a block, so without this it maps one anyway), and no trimming of
  the heap's free top. The cost is that the process keeps its peak memory until it
  exits, which is what a training or inference run holds anyway.

  Does nothing when a GPU or TPU may be used (their buffers are not malloc's), when
  the user set malloc's own variables, GLIBC_TUNABLES or LD_PRELOAD (another
  allocator), when $BERT_JAX_KEEP_CPU_MEMORY is "0" (or false/no/off), or off glibc. Call it before
  jax starts its threads: launchers do (errors.run_main).
  """
  environ = os.environ if environ is None else environ
  off = environ.get(KEEP_MEMORY_ENV, "1").strip().lower() in ("0", "false", "no", "off")
  if off or any(k in environ for k in _MALLOC_ENV):
    return False
  if accelerator_may_be_used(environ) or py_platform.libc_ver()[0] != "glibc":
    return False
  import ctypes  # pylint: disable=g-import-not-at-top
  try:
    libc = ctypes.CDLL(None)
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  done = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
          mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)]
  return all(done)


# --------------------------------------------------------------------------- CPU devices

CPU_DEVICES_ENV = "JAX_NUM_CPU_DEVICES"  # jax's own setting; a user's value wins


def check_cpu_devices_env(environ: Optional[Mapping[str, str]] = None) -> None:
  """Exits with one `error:` line when $JAX_NUM_CPU_DEVICES is set but not an integer.

  Why an exit from an import: jax parses the variable while it is first imported, and a
  launcher imports jax with its modules, before `errors.run_main` can turn an error into
  one line, so a typo was jax's ValueError traceback. `bert_jax/__init__.py` calls this
  before any of the package's modules (and so jax) load; the process could not go on
  anyway, since jax would not import. The test is jax's own: int() of the value.
  """
  environ = os.environ if environ is None else environ
  value = environ.get(CPU_DEVICES_ENV)
  if value is None:
    return
  try:
    int(value)
  except ValueError:
    raise SystemExit(f"error: {CPU_DEVICES_ENV}={value!r} is not a whole number (jax's count of "
                     f"CPU devices); set one such as 2, or unset it") from None


def cpu_device_per_core(environ: Optional[Mapping[str, str]] = None) -> int:
  """For inference tools: one jax CPU device per core; returns the count set (0: left alone).

  Why: XLA CPU runs one program's ops across the cores with its intra-op threads, and
  the matmuls of an inference batch (a few rows of 128 tokens x 384) are too small for
  that to keep every core busy. With one device per core, the runner shards each batch's
  rows over them (`inference.runner`: data parallel, parameters replicated) and every
  core runs its own rows: on the 2-core machine a MiniLM-sized forward went from 169-180
  to 128-130 microseconds a token, and `launch/embed.py` on 10k lines from 48-50 s to
  about 40 s (BENCHMARKS.md, "Embedding"). Training keeps one device: there the same
  split ran the fine-tuning bench at 77 against 97 seq/s (a packed group and its
  gradient per device, and an all-reduce each step).

  Does nothing where a GPU or TPU may be used (a TPU VM host has hundreds of cores and
  no use for their devices), and leaves a user's `JAX_NUM_CPU_DEVICES` or
  `--xla_force_host_platform_device_count` alone. Must run before jax initialises its
  backends (launchers: `errors.run_main`).
  """
  environ = os.environ if environ is None else environ
  if CPU_DEVICES_ENV in environ or "xla_force_host_platform_device_count" in environ.get(
      "XLA_FLAGS", ""):
    return 0
  if accelerator_may_be_used(environ):
    return 0
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  if cores < 2:
    return 0
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise RuntimeError("cpu_device_per_core() must run before the first jax computation")
  jax.config.update("jax_num_cpu_devices", cores)
  return cores


# --------------------------------------------------------------------------- CPU peak

PEAK_CACHE_FILE = "cpu_peak_flops.json"


def cache_dir(environ: Optional[Mapping[str, str]] = None) -> str:
  """`$BERT_JAX_CACHE_DIR`, else `~/.cache/bert_jax`."""
  environ = os.environ if environ is None else environ
  return environ.get("BERT_JAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "bert_jax")


def cpu_key() -> str:
  """`<CPU model> x<cores>`: what the cached peak is valid for."""
  model = ""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.lower().startswith("model name")), "")
  except OSError:
    pass
  model = model or py_platform.processor() or py_platform.machine() or "unknown cpu"
  return f"{model} x{os.cpu_count() or 1}"


def measure_matmul_flops(size: int = 1024, seconds: float = 1.0) -> float:
  """The best fp32 FLOP/s of a jitted [size, size] matmul over about `seconds` on the CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  device = jax.devices("cpu")[0]
  # One device, outside any mesh the caller has set (a run measures inside jax.set_mesh).
  one = jax.sharding.Mesh(np.asarray([device]), ("x",))
  with jax.set_mesh(one):
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    b = jax.device_put(jnp.full((size, size), 0.5, jnp.float32), device)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile
    return _best_rate(matmul, a, b, size, seconds)


def _best_rate(matmul, a, b, size: int, seconds: float) -> float:
  best = float("inf")
  end = time.perf_counter() + seconds
  while time.perf_counter() < end or best == float("inf"):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def _read_cache(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    return data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    return {}


def cpu_busy() -> bool:
  """Whether other work holds the CPU (1-minute load above 3/4 of its cores): a peak
  measured then is low, and would make every later run's MFU too high."""
  try:
    return os.getloadavg()[0] > 0.75 * (os.cpu_count() or 1)
  except OSError:
    return False


def cpu_peak_flops(directory: Optional[str] = None) -> float:
  """The whole CPU's measured matmul FLOP/s, from the cache file or measured once and cached.

  A peak measured while the CPU is busy (`cpu_busy`) is used but not cached, so the next
  run measures again (a cached peak of a loaded machine once logged MFU 1.25). A cache that
  cannot be written (read-only home) only costs measuring again.
  """
  directory = directory or cache_dir()
  path = os.path.join(directory, PEAK_CACHE_FILE)
  key = cpu_key()
  cached = _read_cache(path)
  if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
    return float(cached[key])
  busy = cpu_busy()
  flops = measure_matmul_flops()
  if busy:
    return flops
  cached[key] = flops
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cpu_peak.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(cached, f, indent=1)
    os.replace(tmp, path)
  except OSError:
    pass
  return flops
