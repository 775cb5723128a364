"""The host side of training: dispatch, delayed metric reads, evaluation, checkpoints.

Why it is separate from `train.py`: the jitted steps are pure and task-agnostic;
this is the stateful part (clocks, files, signals). Metrics of step N are read
after step N+1 is dispatched; evaluation and checkpoints happen on step
boundaries. Evaluation runs one exact pass over each of the run's evaluation
sets: sums are added up, per-row predictions (when the head has them) are
gathered on the host with their weights and scored there. When the head names
a main metric, the best model so far is exported to WORKDIR/best (a model dir
every tool reads) and its score kept in WORKDIR/best/best.json, so a resumed
run keeps comparing against it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax import sharding as sharding_lib
from bert_jax.errors import UserError
from bert_jax.formats import model_dir
from bert_jax.heads.base import combine_loss

BEST_DIR = "best"
BEST_FILE = "best.json"


class NonFiniteError(UserError):
  """The loss or the gradients became NaN/inf and config.nonfinite == 'stop'."""


class Preemption:
  """SIGTERM sets a flag; all hosts agree on it at the same steps."""

  def __init__(self, check_every: int):
    self.flag = False
    self.check_every = max(int(check_every), 1)
    self._previous = None

  def install(self) -> None:
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption saves
      self._previous = None

  def uninstall(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    logging.warning("SIGTERM: will save a checkpoint and stop")
    self.flag = True

  def requested(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.flag
    if step % self.check_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.flag, np.int32))
    return bool(np.max(flags))


def finite_iter(iterator, max_batches: int):
  """At most `max_batches` batches of `iterator` (all when `max_batches` <= 0)."""
  for i, batch in enumerate(iterator):
    if 0 < max_batches <= i:
      return
    yield batch


def summarize(head, sums: dict[str, float], steps: int = 0,
              last: Optional[dict[str, float]] = None) -> dict[str, Any]:
  """A logged row from summed step metrics: the loss, the head's metrics, optimizer state."""
  row: dict[str, Any] = {}
  if any(num in sums for num, _ in head.loss_terms):
    row["loss"] = float(combine_loss(sums, head.loss_terms))
  row.update(head.summarize(sums))
  if "grad_norm" in sums and steps:
    row["grad_norm"] = sums["grad_norm"] / steps
  if last and "learning_rate" in last:  # the rate of the logged step, not a window average
    row["learning_rate"] = last["learning_rate"]
  if sums.get("nonfinite"):
    row["nonfinite_steps"] = int(sums["nonfinite"])
  return row


def read_best(workdir: str) -> Optional[dict]:
  path = os.path.join(workdir, BEST_DIR, BEST_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


class Loop:
  """Runs the steps of one training run (a context manager: closes its writer)."""

  def __init__(self, config, head, bert_config, workdir: str, checkpointer, mesh,
               restored: Optional[int], tokenizer_dir: Optional[str]):
    self.config = config
    self.head = head
    self.bert_config = bert_config
    self.workdir = workdir
    self.writer = metrics_lib.MetricWriter(
        workdir, resume_step=restored, total_steps=int(config.num_train_steps),
        tokens_per_step=int(config.batch_size) * int(config.max_seq_length))
    self.checkpointer = checkpointer
    self.mesh = mesh
    self.tokenizer_dir = tokenizer_dir
    self.total = int(config.num_train_steps)
    self.acc = metrics_lib.Accumulator()
    peak = metrics_lib.peak_flops_per_device(jax.devices()[0].device_kind,
                                             config.peak_flops_per_device)
    self.peak_total = peak * jax.device_count() if peak else None
    if peak is None and self.writer.enabled:
      logging.info("peak FLOP/s of %r unknown: mfu is logged as null (set "
                   "config.peak_flops_per_device)", jax.devices()[0].device_kind)
    self.window_start = None  # wall time when the current log window started
    self.window_steps = 0
    self.window = metrics_lib.Accumulator()  # what the window's timed steps computed
    self.last_good_saved = restored
    self.last_row: dict[str, Any] = {}
    best = read_best(workdir)
    self.best = best if best is not None and best.get("step", 0) <= (restored or 0) else None

  def __enter__(self) -> "Loop":
    return self

  def __exit__(self, *exc) -> None:
    self.writer.close()

  def _consume(self, step: int, metrics: Any) -> None:
    """Reads step `step`'s metrics (blocks until that step is done) and logs on boundaries."""
    m = jax.device_get(metrics)
    if m["nonfinite"] and self.config.nonfinite == "stop":
      kept = self.checkpointer.latest_step()
      last_good = ("no checkpoint was saved yet" if kept is None
                   else f"the last good checkpoint is step {kept}")
      raise NonFiniteError(
          f"non-finite loss or gradient at step {step} (loss={float(m['loss'])}, grad_norm="
          f"{float(m['grad_norm'])}); stopped, {last_good} "
          "(config.nonfinite='skip' drops such updates instead)")
    now = time.time()
    if self.window_start is None:  # the first step after (re)start carries compile time
      self.window_start = now
    else:
      self.window_steps += 1
      self.window.add({k: m[k] for k in ("tokens_computed", "tokens_real", "flops") if k in m})
    self.acc.add({k: v for k, v in m.items() if k != "loss"})
    if step % self.config.log_every_steps == 0 or step == self.total:
      row = summarize(self.head, self.acc.sums, self.acc.steps, self.acc.last)
      if self.window_steps:
        seconds = max(now - self.window_start, 1e-9)
        done = self.window.sums
        computed, real = done.get("tokens_computed", 0.0), done.get("tokens_real", 0.0)
        row.update(seq_per_sec=self.window_steps * self.config.batch_size / seconds,
                   tokens_per_sec=computed / seconds, real_tokens_per_sec=real / seconds,
                   padding_fraction=1.0 - real / computed if computed else None,
                   mfu=(done["flops"] / seconds / self.peak_total
                        if self.peak_total and "flops" in done else None))
      self.writer.write(step, row)
      self.last_row = {"step": step, **row}
      self.acc = metrics_lib.Accumulator()
      self.window_start, self.window_steps = now, 0
      self.window = metrics_lib.Accumulator()

  def evaluate(self, params, data, p_eval_step) -> dict[str, Any]:
    """One exact pass over every evaluation set: {'eval_<infix>_<metric>': value}."""
    row: dict[str, Any] = {}
    for infix, make in data.eval_sets.items():
      acc = metrics_lib.Accumulator()
      gathered: dict[str, list[np.ndarray]] = {}
      iterator = make()
      try:
        for local in finite_iter(iterator, int(self.config.num_eval_batches or 0)):
          out = jax.device_get(p_eval_step(params, sharding_lib.make_global_batch(local,
                                                                                  self.mesh)))
          acc.add(out["sums"])
          for k, v in (out["predictions"] or {}).items():
            gathered.setdefault(k, []).append(np.asarray(v))
      finally:
        if hasattr(iterator, "close"):
          iterator.close()  # stop its prefetch thread
      metrics = summarize(self.head, acc.sums)
      if gathered:
        metrics.update(self.head.score({k: np.concatenate(v) for k, v in gathered.items()},
                                       data.eval_items))
      prefix = f"eval_{infix}_" if infix else "eval_"
      row.update({prefix + k: v for k, v in metrics.items()})
    return row

  def _maybe_export_best(self, step: int, params, row: dict[str, Any]) -> None:
    key = self.head.main_metric
    if not key or f"eval_{key}" not in row:
      return
    value = float(row[f"eval_{key}"])
    if not np.isfinite(value) or (self.best is not None and value <= self.best["value"]):
      return
    self.best = {"step": step, "metric": f"eval_{key}", "value": value}
    model_dir.export_model(os.path.join(self.workdir, BEST_DIR), params, self.bert_config,
                           self.head.recorded_heads, self.tokenizer_dir,
                           self.head.spec.to_record(),
                           extra_files={BEST_FILE: json.dumps(self.best) + "\n"})
    logging.info("step %d: best %s so far (%.4f), exported to %s", step, f"eval_{key}", value,
                 os.path.join(self.workdir, BEST_DIR))

  def _save(self, step, state, rng, data_state) -> None:
    self.checkpointer.save(step, state.params,
                           dict(step=state.step, opt_state=state.opt_state, rng=rng), data_state)
    self.last_good_saved = step

  def run(self, state, rng, data, p_train_step, p_eval_step, preemption, step_hook):
    cfg = self.config
    step = int(jax.device_get(state.step))
    pending = None  # (step, metrics) not read yet
    preempted = False
    while step < self.total:
      if preemption.requested(step):
        preempted = True
        break
      local = next(data.train)
      batch = sharding_lib.make_global_batch(local, self.mesh)
      state, metrics = p_train_step(state, batch, rng)
      step += 1
      if pending is not None:
        self._consume(*pending)
      pending = (step, metrics)
      checkpoint_due = step % cfg.checkpoint_every_steps == 0 or step == self.total
      eval_due = bool(cfg.eval_every_steps and data.eval_sets) and (
          step % cfg.eval_every_steps == 0 or step == self.total)
      if checkpoint_due or eval_due:
        self._consume(*pending)  # a non-finite step is never saved nor evaluated
        pending = None
      if eval_due:
        row = self.evaluate(state.params, data, p_eval_step)
        self.writer.write(step, row)
        self.last_row.update(row)
        self._maybe_export_best(step, state.params, row)
        self.window_start, self.window_steps = None, 0  # eval time is not training time
        self.window = metrics_lib.Accumulator()
      if checkpoint_due:
        self._save(step, state, rng, data.train.get_state())
      if step_hook is not None:
        step_hook(step)
    if pending is not None:
      self._consume(*pending)
    if preempted and self.last_good_saved != step:
      self._save(step, state, rng, data.train.get_state())
    self.checkpointer.wait()
    if preempted:
      logging.warning("preempted: checkpoint saved at step %d; run again with the same workdir "
                      "to resume", step)
    result = {**self.last_row, "step": step, "preempted": preempted}
    if self.best is not None:
      result["best"] = self.best
    return result
