"""MLM+NSP pretraining: train state, the jitted train/eval steps and the loop.

Why it looks like this (nanodo / flax lm1b habits):
- `train_step(state, batch, rng) -> (state, metrics)` is pure and jitted once
  with explicit in/out shardings and the state donated; gradient accumulation
  is a `lax.scan` over micro-batches inside it, so one dispatch = one update.
- Losses are computed from sums over the *whole* batch (masked tokens, rows):
  accumulating K micro-batches gives the same update as one big batch.
- Metrics come back as sums with denominators; the host reads step N's only
  after step N+1 is dispatched, so logging never stalls the device.
- A run restarted on the same WORKDIR resumes from its newest checkpoint (state,
  rng and input-iterator state) and ends bit-identical to an uninterrupted run;
  SIGTERM saves at the current step (all hosts agreeing on it) and returns.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from typing import Any, Callable, Iterator, Optional

from absl import logging
import flax
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import metrics as metrics_lib
from bert_jax import optim
from bert_jax import sharding as sharding_lib
from bert_jax.errors import UserError
from bert_jax.model import BertConfig, BertForPreTraining, to_layout

Batch = dict[str, jax.Array]
NONFINITE_MODES = ("stop", "skip")


class NonFiniteError(UserError):
  """The loss or the gradients became NaN/inf and config.nonfinite == 'stop'."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates done
  params: Any
  opt_state: Any


@dataclasses.dataclass
class Data:
  """What the loop needs from the input side (tests pass synthetic ones)."""

  meta: dict  # the prepared data's meta.json
  train: Iterator[dict[str, np.ndarray]]  # with get_state()/set_state()
  make_eval: Optional[Callable[[], Iterator[dict[str, np.ndarray]]]] = None
  tokenizer_dir: Optional[str] = None


# --------------------------------------------------------------------------- steps


def _pretraining_sums(model: nn.Module, params: Any, batch: Batch, rng: Optional[jax.Array],
                      ) -> dict[str, jax.Array]:
  """Loss/accuracy sums and their denominators over one (micro-)batch."""
  deterministic = rng is None
  out = model.apply(
      {"params": params}, batch["input_ids"], batch.get("token_type_ids"),
      batch.get("attention_mask"), batch.get("position_ids"), batch.get("packing_ids"),
      batch["masked_positions"], deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng})
  logits_BxPxV = out["mlm_logits"]
  ids_BxP = batch["masked_ids"]
  w_BxP = batch["masked_weights"].astype(jnp.float32)
  xent_BxP = optax.softmax_cross_entropy_with_integer_labels(logits_BxPxV, ids_BxP)
  sums = dict(mlm_loss_sum=jnp.sum(xent_BxP * w_BxP), mlm_weight=jnp.sum(w_BxP),
              mlm_correct=jnp.sum((jnp.argmax(logits_BxPxV, -1) == ids_BxP) * w_BxP))
  if "nsp_logits" in out and "next_sentence_labels" in batch:
    labels_B = batch["next_sentence_labels"]
    nsp_xent_B = optax.softmax_cross_entropy_with_integer_labels(out["nsp_logits"], labels_B)
    sums.update(nsp_loss_sum=jnp.sum(nsp_xent_B),
                nsp_count=jnp.asarray(labels_B.shape[0], jnp.float32),
                nsp_correct=jnp.sum(jnp.argmax(out["nsp_logits"], -1) == labels_B
                                    ).astype(jnp.float32))
  return sums


def _loss(sums: dict[str, jax.Array], mlm_den: jax.Array, nsp_den: jax.Array) -> jax.Array:
  """Mean MLM loss over the batch's masked tokens + mean NSP loss over its rows."""
  loss = sums["mlm_loss_sum"] / mlm_den
  if "nsp_loss_sum" in sums:
    loss = loss + sums["nsp_loss_sum"] / nsp_den
  return loss


def _micro_batches(batch: Batch, num: int, mesh: Optional[jax.sharding.Mesh]) -> Batch:
  """[B, ...] -> [num, B/num, ...]; micro-batch i takes rows i, i+num, ... so that every
  device holds a slice of every micro-batch (no data movement)."""

  def split(x):
    x = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
    if mesh is None:
      return x
    spec = jax.sharding.PartitionSpec(None, sharding_lib.BATCH_AXES)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))

  return jax.tree_util.tree_map(split, batch)


StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    *, grad_accum_steps: int = 1, nonfinite: str = "stop",
                    mesh: Optional[jax.sharding.Mesh] = None) -> StepFn:
  """The pure `train_step(state, batch, rng)`; `rng` is the run's base key (folded with step).

  `mesh` (optional) pins micro-batches to the batch axes when accumulating.
  """
  if nonfinite not in NONFINITE_MODES:
    raise UserError(f"config.nonfinite={nonfinite!r} is not one of {NONFINITE_MODES}")

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(rng, state.step)
    mlm_den = jnp.maximum(jnp.sum(batch["masked_weights"].astype(jnp.float32)), 1.0)
    nsp_den = jnp.asarray(batch["input_ids"].shape[0], jnp.float32)

    def grad_fn(params, micro, micro_rng):
      def loss_fn(p):
        sums = _pretraining_sums(model, p, micro, micro_rng)
        return _loss(sums, mlm_den, nsp_den), sums
      (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      return grads, sums

    if grad_accum_steps == 1:
      grads, sums = grad_fn(state.params, batch, step_rng)
    else:
      micro = _micro_batches(batch, grad_accum_steps, mesh)
      first = jax.tree_util.tree_map(lambda x: x[0], micro)
      zeros = jax.tree_util.tree_map(
          jnp.zeros_like, jax.eval_shape(grad_fn, state.params, first, step_rng))

      def body(carry, xs):
        micro_batch, i = xs
        g, s = grad_fn(state.params, micro_batch, jax.random.fold_in(step_rng, i))
        return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

      (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum_steps)))

    loss = _loss(sums, mlm_den, nsp_den)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    # A non-finite step leaves params and optimizer state untouched ('skip'; with 'stop' the
    # host raises before anything of it is saved).
    keep = functools.partial(jax.tree_util.tree_map, lambda new, old: jnp.where(finite, new, old))
    new_state = TrainState(step=state.step + 1, params=keep(new_params, state.params),
                           opt_state=keep(new_opt_state, state.opt_state))
    metrics = dict(sums, loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step),
                   nonfinite=1.0 - finite.astype(jnp.float32))
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module) -> Callable[[Any, Batch], dict]:
  """`eval_step(params, batch) -> sums`, deterministic (no dropout)."""

  def eval_step(params: Any, batch: Batch) -> dict:
    return _pretraining_sums(model, params, batch, None)

  return eval_step


# --------------------------------------------------------------------------- setup


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
  """BertConfig from config.model (preset + overrides), config.dtype and the data's vocab."""
  m = config.model
  overrides = {k: m[k] for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size")
               if m.get(k) is not None}
  for k in ("max_position_embeddings", "hidden_dropout_rate", "attention_dropout_rate",
            "attention_impl", "scan_layers", "remat_policy"):
    if k in m:
      overrides[k] = m[k]
  if config.dtype not in ("float32", "bfloat16", "float16"):
    raise UserError(f"config.dtype={config.dtype!r} is not one of float32, bfloat16, float16")
  cfg = BertConfig.preset(m.preset, vocab_size=int(vocab_size), dtype=config.dtype, **overrides)
  if config.max_seq_length > cfg.max_position_embeddings:
    raise UserError(f"config.max_seq_length={config.max_seq_length} exceeds "
                    f"config.model.max_position_embeddings={cfg.max_position_embeddings}")
  return cfg


def make_data(config: ml_collections.ConfigDict) -> Data:
  """The prepared data's iterators (bert_jax.data.input_pipeline) for this process."""
  from bert_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top

  if not config.train_data:
    raise UserError("config.train_data is empty: give a directory written by "
                    "launch/prepare_data.py (--config.train_data=DIR)")
  meta = input_pipeline.read_meta(config.train_data)
  if int(meta["max_seq_length"]) != int(config.max_seq_length):
    raise UserError(f"config.max_seq_length={config.max_seq_length} but {config.train_data} was "
                    f"prepared with max_seq_length={meta['max_seq_length']}")
  common = dict(max_predictions_per_seq=config.max_predictions_per_seq,
                mask_rate=config.mask_rate, whole_word_mask=config.whole_word_mask)
  train = input_pipeline.make_pretraining_iterator(
      config.train_data, config.train_split, global_batch_size=config.batch_size,
      seed=config.seed, **common)
  eval_dir = config.eval_data or config.train_data
  eval_meta = meta if eval_dir == config.train_data else input_pipeline.read_meta(eval_dir)
  make_eval = None
  if config.eval_every_steps and config.eval_split in eval_meta.get("splits", {}):
    make_eval = functools.partial(
        input_pipeline.make_pretraining_iterator, eval_dir, config.eval_split,
        global_batch_size=config.eval_batch_size or config.batch_size, seed=config.seed,
        shuffle=False, **common)
  elif config.eval_every_steps:
    logging.warning("no split %r in %s: no evaluation", config.eval_split, eval_dir)
  tok = os.path.join(config.train_data, meta.get("tokenizer", "tokenizer"))
  return Data(meta=meta, train=train, make_eval=make_eval,
              tokenizer_dir=tok if os.path.isdir(tok) else None)


def load_init_params(path: str, bert_config: BertConfig, abstract_params: Any) -> Any:
  """Unrolled params of any model path, in this config's layout, shapes checked by name."""
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top

  pretrained = convert.from_pretrained(path, with_tokenizer=False)  # weights only
  loaded = to_layout(pretrained.params, bert_config)
  flat_want = flax.traverse_util.flatten_dict(abstract_params, sep="/")
  flat_have = flax.traverse_util.flatten_dict(loaded, sep="/")
  out = {}
  for name, want in flat_want.items():
    if name not in flat_have:
      raise UserError(f"init_checkpoint {path} has no tensor {name} (heads: "
                      f"{list(pretrained.heads)})")
    have = flat_have[name]
    if tuple(have.shape) != tuple(want.shape):
      raise UserError(f"init_checkpoint {path}: tensor {name} has shape {tuple(have.shape)}, "
                      f"the config needs {tuple(want.shape)}")
    out[name] = jax.device_put(np.asarray(have, dtype=want.dtype), want.sharding)
  return flax.traverse_util.unflatten_dict(out, sep="/")


class _Preemption:
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


# --------------------------------------------------------------------------- loop


@dataclasses.dataclass
class _Setup:
  """Everything static about a run: model, optimizer, mesh and the state's shardings."""

  model: nn.Module
  bert_config: BertConfig
  with_nsp: bool
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  rules: tuple
  init_params: Callable[[jax.Array], Any]  # rng -> boxed params
  state_sharding: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings


def _setup(config: ml_collections.ConfigDict, meta: dict) -> _Setup:
  with_nsp = meta.get("mode", "nsp") == "nsp"
  bert_config = model_config(config, meta["vocab_size"])
  model = BertForPreTraining(bert_config, with_nsp=with_nsp)
  mesh = sharding_lib.make_mesh(config.mesh_shape)
  rules = sharding_lib.normalize_rules(config.logical_axis_rules)
  if config.grad_accum_steps < 1:
    raise UserError(f"config.grad_accum_steps={config.grad_accum_steps} must be >= 1")
  sharding_lib.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  if config.eval_every_steps and config.eval_batch_size:
    sharding_lib.check_batch_size(config.eval_batch_size, mesh, name="config.eval_batch_size")
  tx, schedule = optim.make_optimizer(config)
  rep = sharding_lib.replicated(mesh)
  seq, preds = config.max_seq_length, config.max_predictions_per_seq

  def init_params(rng):
    ids = jnp.zeros((1, seq), jnp.int32)
    return model.init({"params": rng}, ids, ids, ids,
                      masked_positions_BxP=jnp.zeros((1, preds), jnp.int32))["params"]

  # Abstract state and its shardings: nothing is materialised yet.
  boxed = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  param_sh = sharding_lib.logical_to_sharding(boxed, mesh, rules)
  abs_params = ckpt_lib.abstract_like(nn.unbox(boxed), param_sh)
  abs_opt = jax.eval_shape(tx.init, abs_params)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_opt, param_sh,
                                 transform_non_params=lambda _: rep)
  state_sh = TrainState(step=rep, params=param_sh, opt_state=opt_sh)
  abs_state = ckpt_lib.abstract_like(
      TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_params, opt_state=abs_opt),
      state_sh)
  return _Setup(model, bert_config, with_nsp, tx, schedule, mesh, rules, init_params, state_sh,
                abs_state)


def _initial_state(config, setup: _Setup, checkpointer: ckpt_lib.Checkpointer,
                   data: Data) -> tuple[TrainState, jax.Array, Optional[int]]:
  """(state, base rng, restored step): the newest checkpoint, else init_checkpoint, else init.

  Runs outside the mesh context: out_shardings place every shard of the new state.
  """
  s = setup
  rep = sharding_lib.replicated(s.mesh)
  latest = checkpointer.latest_step()
  if latest is not None:
    abs_train = dict(step=s.abstract_state.step, opt_state=s.abstract_state.opt_state,
                     rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep))
    checkpointer.check_param_shapes(latest, s.abstract_state.params)
    params, train_item, data_state = checkpointer.restore(latest, s.abstract_state.params,
                                                          abs_train)
    data.train.set_state(data_state)
    logging.info("resumed from %s at step %d", checkpointer.directory, latest)
    state = TrainState(step=train_item["step"], params=params,
                       opt_state=train_item["opt_state"])
    return state, train_item["rng"], latest
  init_rng, rng = jax.random.split(jax.random.PRNGKey(config.seed))
  if config.init_checkpoint:
    params = load_init_params(config.init_checkpoint, s.bert_config, s.abstract_state.params)
    logging.info("initialised from %s", config.init_checkpoint)
  else:
    params = jax.jit(lambda r: nn.unbox(s.init_params(r)),
                     out_shardings=s.state_sharding.params)(init_rng)
  opt_state = jax.jit(s.tx.init, out_shardings=s.state_sharding.opt_state)(params)
  state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), rep), params=params,
                     opt_state=opt_state)
  return state, jax.device_put(rng, rep), None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: Optional[Data] = None,
                       step_hook: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
  """Pretrains (or resumes) in `workdir`; returns the last logged metrics.

  The result has `step` and `preempted` (True when SIGTERM stopped the run).
  """
  own_data = data is None
  if own_data:
    data = make_data(config)
  setup = _setup(config, data.meta)
  heads = ("mlm", "nsp") if setup.with_nsp else ("mlm",)
  preemption = _Preemption(config.preemption_check_every_steps)
  preemption.install()  # from here on SIGTERM saves instead of killing
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = None
  try:
    if checkpointer.latest_step() is not None:
      ckpt_lib.check_resume_compatible(workdir, setup.bert_config, heads)
    state, rng, restored = _initial_state(config, setup, checkpointer, data)
    writer = metrics_lib.MetricWriter(workdir, resume_step=restored)
    ckpt_lib.write_model_files(workdir, setup.bert_config, heads, data.tokenizer_dir)
    mesh, rules = setup.mesh, setup.rules
    # The global mesh turns the model's logical activation constraints on.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      batch_sh = sharding_lib.batch_sharding(mesh)
      p_train_step = jax.jit(
          make_train_step(setup.model, setup.tx, setup.schedule,
                          grad_accum_steps=config.grad_accum_steps,
                          nonfinite=config.nonfinite, mesh=mesh),
          in_shardings=(setup.state_sharding, batch_sh, sharding_lib.replicated(mesh)),
          out_shardings=(setup.state_sharding, sharding_lib.replicated(mesh)),
          donate_argnums=(0,))
      p_eval_step = jax.jit(make_eval_step(setup.model),
                            in_shardings=(setup.state_sharding.params, batch_sh),
                            out_shardings=sharding_lib.replicated(mesh))
      loop = _Loop(config, setup.bert_config, setup.with_nsp, writer, checkpointer, mesh)
      loop.last_good_saved = restored
      return loop.run(state, rng, data, p_train_step, p_eval_step, preemption, step_hook)
  finally:
    preemption.uninstall()
    checkpointer.close()
    if writer is not None:
      writer.close()
    if own_data and hasattr(data.train, "close"):
      data.train.close()  # its prefetch thread


class _Loop:
  """The host side of training: dispatch, delayed metric reads, eval, checkpoints."""

  def __init__(self, config, bert_config, with_nsp, writer, checkpointer, mesh):
    self.config = config
    self.writer = writer
    self.checkpointer = checkpointer
    self.mesh = mesh
    self.total = int(config.num_train_steps)
    self.acc = metrics_lib.Accumulator()
    self.flops_per_seq = metrics_lib.pretraining_flops_per_sequence(
        bert_config, config.max_seq_length, config.max_predictions_per_seq, with_nsp)
    peak = metrics_lib.peak_flops_per_device(jax.devices()[0].device_kind,
                                             config.peak_flops_per_device)
    self.peak_total = peak * jax.device_count() if peak else None
    if peak is None and writer.enabled:
      logging.info("peak FLOP/s of %r unknown: mfu is logged as null (set "
                   "config.peak_flops_per_device)", jax.devices()[0].device_kind)
    self.window_start = None  # wall time when the current log window started
    self.window_steps = 0
    self.last_good_saved = None
    self.last_row: dict[str, Any] = {}

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
    self.acc.add({k: v for k, v in m.items() if k != "loss"})
    if step % self.config.log_every_steps == 0 or step == self.total:
      row = self.acc.summary()
      if self.window_steps:
        seq_per_sec = self.window_steps * self.config.batch_size / max(now - self.window_start,
                                                                       1e-9)
        row.update(seq_per_sec=seq_per_sec,
                   tokens_per_sec=seq_per_sec * self.config.max_seq_length,
                   mfu=(seq_per_sec * self.flops_per_seq / self.peak_total
                        if self.peak_total else None))
      self.writer.write(step, row)
      self.last_row = {"step": step, **row}
      self.acc = metrics_lib.Accumulator()
      self.window_start, self.window_steps = now, 0

  def _evaluate(self, step, params, data, p_eval_step) -> None:
    if data.make_eval is None:
      return
    acc = metrics_lib.Accumulator()
    it = data.make_eval()
    for _ in range(self.config.num_eval_batches):
      batch = sharding_lib.make_global_batch(next(it), self.mesh)
      acc.add(jax.device_get(p_eval_step(params, batch)))
    if hasattr(it, "close"):
      it.close()  # stop its prefetch thread
    row = acc.summary(prefix="eval_")
    self.writer.write(step, row)
    self.last_row.update(row)
    self.window_start = None  # do not count eval time as training time

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
      eval_due = cfg.eval_every_steps and (step % cfg.eval_every_steps == 0 or step == self.total)
      if checkpoint_due or eval_due:
        self._consume(*pending)  # a non-finite step is never saved nor evaluated
        pending = None
      if eval_due:
        self._evaluate(step, state.params, data, p_eval_step)
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
    return {**self.last_row, "step": step, "preempted": preempted}
