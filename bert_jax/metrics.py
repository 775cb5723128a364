"""Metric sums, model FLOPs / MFU and the writers (metrics.jsonl, TensorBoard, console).

Why sums with denominators: a train step returns e.g. `mlm_loss_sum` and
`mlm_weight`; averaging over steps or hosts then stays exact however many
masked tokens each batch has. Only process 0 writes anything.

Two forms of a logged row: the log line (`format_line`, every key) for absl's
log file, and the console line a person reads (`console_line`:
`step 1200/9000 | loss 0.412 | eval_accuracy 0.913 | 812 seq/s | ETA 6m10s`),
printed on stderr without absl's `I1201 16:23:34.761338 ... metrics.py:116]`
prefix. Under a launcher (absl's handler active) the console line replaces the
prefixed one on a terminal; a log file (`--log_dir`) still gets the full line,
and `--alsologtostderr` / `--logtostderr` users get absl's lines as they asked.
Library use without absl's handler (notebooks, tests) logs as before.
"""

from __future__ import annotations

import json
import logging as py_logging
import math
import os
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from absl import flags
from absl import logging
import jax
import numpy as np

from bert_jax.model import BertConfig
from bert_jax.progress import format_duration

# Dense bf16 peak FLOP/s per device, by `jax.devices()[0].device_kind` prefix.
PEAK_FLOPS = {
    "TPU v2": 45e12,
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "NVIDIA A10G": 125e12,
    "NVIDIA V100": 125e12,
}


def peak_flops_per_device(device_kind: str, override: Optional[float] = None) -> Optional[float]:
  """From the config when given, else the table; on CPU the measured matmul peak
  (`platform.cpu_peak_flops`, cached per machine) shared by the process's CPU devices;
  None when unknown."""
  if override:
    return float(override)
  for prefix in sorted(PEAK_FLOPS, key=len, reverse=True):
    if device_kind.startswith(prefix):
      return PEAK_FLOPS[prefix]
  if device_kind == "cpu":
    from bert_jax import platform as platform_lib  # pylint: disable=g-import-not-at-top
    return platform_lib.cpu_peak_flops() / max(1, len(jax.local_devices(backend="cpu")))
  return None


def pretraining_flops_per_sequence(config: BertConfig, seq_len: int, num_predictions: int,
                                   with_nsp: bool = True, lora_rank: int = 0,
                                   lora_modules: Sequence[str] = ()) -> float:
  """Training FLOPs of one sequence (model FLOPs: matmuls only, forward + backward).

  What the model needs, not what a kernel happens to compute:
  - the feed-forward has three [embed, mlp] matmuls with `feed_forward='glu'`, two without;
  - a local layer (`layer_windows`) attends to the 2 * (W // 2) + 1 keys of its window, a
    global one to all `seq_len` (the XLA kernel computes the masked rest too);
  - backward is 2x forward for every matmul, except that LoRA (`lora_rank` > 0) computes no
    weight gradients for the frozen encoder kernels (1x instead of 2x) and adds its
    adapters (`lora_modules`: [in -> rank -> out] per adapted module, trained: 3x);
  - with MLM predictions (`num_predictions` > 0) the last layer's attention output and
    feed-forward serve only the predicted positions and [CLS] (for NSP): they are counted
    there alone (`model.BertLayer`'s `keep_BxP`), not at every position (a scanned stack
    computes them all; the count is what the model needs).
  """
  e, m, n = config.hidden_size, config.intermediate_size, config.num_layers
  ffn = 3 if config.feed_forward == "glu" else 2
  kernels = n * 2 * seq_len * (4 * e * e + ffn * e * m)  # q, k, v, out + the FFN matmuls
  if num_predictions:
    read = min(seq_len, num_predictions + int(with_nsp))
    kernels -= 2 * (seq_len - read) * (e * e + ffn * e * m)
  keys = [min(seq_len, 2 * (w // 2) + 1) if w else seq_len for w in config.layer_windows]
  scores = sum(2 * 2 * seq_len * k * e for k in keys)  # q.k^T and probs.v
  head = 2 * num_predictions * (e * e + e * config.vocab_size)  # MLM transform + decoder
  if with_nsp:
    head += 2 * (e * e + 2 * e)  # pooler + NSP
  if not lora_rank:
    return 3.0 * (kernels + scores + head)
  adapters = sum(2 * seq_len * lora_rank * sum(_module_dims(config, p)) for p in lora_modules)
  return 2.0 * kernels + 3.0 * (scores + head + adapters)


def _module_dims(config: BertConfig, path: str) -> tuple[int, int]:
  """(in, out) features of an encoder module's kernel; x num_layers for a scanned stack."""
  e, m = config.hidden_size, config.intermediate_size
  name = path.rsplit("/", 1)[-1]
  dims = {"intermediate": (e, m), "gate": (e, m)}.get(name, (e, e))
  if name == "output" and "/attention/" not in path + "/":
    dims = (m, e)  # the feed-forward's output (the attention's is [embed, embed])
  copies = config.num_layers if "/layer_" not in path else 1
  return dims[0] * copies, dims[1] * copies


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported without dragging in torch.

  tensorboardX imports torch whenever it is installed (seconds of startup and memory in a
  JAX trainer); scalars never need it, so the import is hidden from it unless torch is
  loaded already.
  """
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Writes one row per call to metrics.jsonl, TensorBoard and the log (process 0 only)."""

  def __init__(self, workdir: str, enabled: Optional[bool] = None,
               resume_step: Optional[int] = None, total_steps: Optional[int] = None,
               tokens_per_step: Optional[int] = None):
    """`resume_step`: the step training restarts from; rows after it are dropped first (a
    run killed after its last checkpoint logs those steps again). `total_steps`: the run's
    last step, for the console's `step N/TOTAL` and ETA. `tokens_per_step`: when given, train
    rows get `tokens` (computed tokens so far: step x batch x length), the x axis of plots."""
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total_steps = total_steps
    self.tokens_per_step = tokens_per_step
    self._eta = _EtaClock()
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _drop_rows_after(path, resume_step or 0)
    # Append: a resumed run continues the same file.
    self._jsonl = open(path, "a", encoding="utf-8")
    try:
      self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
      logging.warning("tensorboardX is not installed: no TensorBoard events")

  def write(self, step: int, row: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: _to_python(v) for k, v in row.items()}
    train_row = not any(k.startswith("eval_") for k in clean)
    if self.tokens_per_step and train_row:
      clean["tokens"] = int(step) * int(self.tokens_per_step)
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        if isinstance(v, (int, float)) and v is not None and math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))
      self._tb.flush()
    eta = self._eta.update(int(step), self.total_steps) if train_row else None
    emit(format_line(step, clean), console_line(step, clean, self.total_steps, eta))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _drop_rows_after(path: str, step: int) -> None:
  """Keeps the rows of metrics.jsonl up to `step` (temp file + rename)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):  # a torn last line of a killed run
      continue
  if len(kept) != len(lines):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def _to_python(v: Any) -> Any:
  if v is None:
    return None
  if isinstance(v, (np.generic, np.ndarray)):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf
  return v


class _EtaClock:
  """Seconds left from the average pace since the first logged train row of this process (the
  first window carries compilation; evaluation pauses count, as they will again)."""

  def __init__(self, clock=time.monotonic):
    self.clock = clock
    self.first: Optional[tuple[int, float]] = None

  def update(self, step: int, total: Optional[int]) -> Optional[float]:
    now = self.clock()
    if self.first is None:
      self.first = (step, now)
      return None
    first_step, first_time = self.first
    if not total or step <= first_step:
      return None
    return (total - step) * (now - first_time) / (step - first_step)


# Keys the console line leaves to the log file and metrics.jsonl.
_CONSOLE_HIDDEN = frozenset({"tokens_per_sec", "real_tokens_per_sec", "padding_fraction",
                             "grad_norm", "tokens", "seq_per_sec", "mfu"})


def console_line(step: int, row: Mapping[str, Any], total_steps: Optional[int] = None,
                 eta_seconds: Optional[float] = None) -> str:
  """`step 1200/9000 | loss 0.412 | eval_accuracy 0.913 | 812 seq/s | mfu 41% | ETA 6m10s`."""
  short = {"mlm_accuracy": "mlm_acc", "nsp_accuracy": "nsp_acc", "learning_rate": "lr",
           "eval_mlm_accuracy": "eval_mlm_acc", "eval_nsp_accuracy": "eval_nsp_acc"}
  parts = [f"step {step}/{total_steps}" if total_steps else f"step {step}"]
  for k, v in row.items():
    if k in _CONSOLE_HIDDEN or v is None:
      continue
    name = short.get(k, k)
    parts.append(f"{name} {v:.3g}" if isinstance(v, float) else f"{name} {v}")
  if isinstance(row.get("seq_per_sec"), (int, float)):
    parts.append(f"{row['seq_per_sec']:.0f} seq/s")
  if isinstance(row.get("mfu"), (int, float)):
    parts.append(f"mfu {100 * row['mfu']:.1f}%")
  if eta_seconds is not None:
    parts.append(f"ETA {format_duration(eta_seconds)}")
  return " | ".join(parts)


def _absl_handler_active() -> bool:
  handler = logging.get_absl_handler()
  return handler in py_logging.getLogger().handlers and flags.FLAGS.is_parsed()


def emit(log_line: str, console: str) -> None:
  """The log line for absl's log file, the console line for the person at the terminal."""
  if not _absl_handler_active() or logging.get_verbosity() < logging.INFO:
    logging.info("%s", log_line)
    return
  stream = logging.get_absl_handler().python_handler.stream
  to_file = stream is not sys.stderr and not flags.FLAGS["logtostderr"].value
  if to_file:
    logging.info("%s", log_line)  # absl's file (and stderr when --alsologtostderr)
  elif flags.FLAGS["logtostderr"].value or flags.FLAGS["alsologtostderr"].value:
    logging.info("%s", log_line)
    return
  if not flags.FLAGS["alsologtostderr"].value:
    print(console, file=sys.stderr, flush=True)


def format_line(step: int, row: Mapping[str, Any]) -> str:
  """`step 100 | loss 7.12 | mlm_acc 0.051 | ...`: the console form of a row."""
  short = {"mlm_accuracy": "mlm_acc", "nsp_accuracy": "nsp_acc", "learning_rate": "lr",
           "eval_mlm_accuracy": "eval_mlm_acc", "eval_nsp_accuracy": "eval_nsp_acc"}
  parts = [f"step {step}"]
  for k, v in row.items():
    name = short.get(k, k)
    if isinstance(v, float):
      parts.append(f"{name} {v:.3g}" if k != "seq_per_sec" else f"{name} {v:.1f}")
    elif v is not None:
      parts.append(f"{name} {v}")
  return " | ".join(parts)


class Accumulator:
  """Sums per-step metric dicts (numpy scalars); `loop.summarize` turns them into a row."""

  def __init__(self):
    self.sums: dict[str, Any] = {}
    self.last: dict[str, Any] = {}
    self.steps = 0

  def add(self, metrics: Mapping[str, Any]) -> None:
    """Adds one step's sums (scalars, or arrays such as a confusion matrix) in float64."""
    self.steps += 1
    for k, v in metrics.items():
      v = np.asarray(v, np.float64)
      v = float(v) if v.ndim == 0 else v
      self.sums[k] = self.sums.get(k, 0.0) + v
      self.last[k] = v
