"""The one trainer: train state, the jitted train/eval steps and run setup, for every head.

Why it looks like this (nanodo / flax lm1b habits):
- `train_step(state, batch, rng) -> (state, metrics)` is pure and jitted once
  with explicit in/out shardings and the state donated; gradient accumulation
  is a `lax.scan` over micro-batches inside it, so one dispatch = one update.
- The task (`bert_jax/tasks/`) supplies the data and its frozen `Spec`; the head
  (`bert_jax/heads/`, built from the Spec) the model and loss/metric sums. The
  loss is formed from sums over the *whole* batch (masked tokens, weighted
  rows) in one place (`heads.base.combine_loss`), so K accumulated
  micro-batches update exactly like one big batch.
- Metrics come back as sums with denominators; the host reads step N's only
  after step N+1 is dispatched (`bert_jax/loop.py`), so logging never stalls.
- A run restarted on the same WORKDIR resumes from its newest checkpoint (state,
  rng and input-iterator state) and ends bit-identical to an uninterrupted run;
  SIGTERM saves at the current step (all hosts agreeing on it) and returns.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Optional

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import lora as lora_lib
from bert_jax import loop as loop_lib
from bert_jax import optim
from bert_jax import platform as platform_lib
from bert_jax import sharding as sharding_lib
from bert_jax import finalize
from bert_jax import heads as heads_lib
from bert_jax import tasks as tasks_lib
from bert_jax.data import packing as packing_lib
from bert_jax.data.contract import Batch, Data, Spec
from bert_jax.errors import UserError
from bert_jax.formats import initialize
from bert_jax.formats import model_dir
from bert_jax.formats.initialize import model_config  # noqa: F401  (train.model_config)
from bert_jax.heads.base import combine_loss
from bert_jax.model import BertConfig

NONFINITE_MODES = ("stop", "skip")
NonFiniteError = loop_lib.NonFiniteError


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates done
  params: Any
  opt_state: Any


# --------------------------------------------------------------------------- steps


def _micro_batches(batch: Batch, num: int, mesh: Optional[jax.sharding.Mesh]) -> Batch:
  """[B, ...] -> [num, B/num, ...]; micro-batch i takes rows i, i+num, ... so that every
  device holds a slice of every micro-batch (no data movement).

  A packed batch's read-back arrays ([G, E/G*C, ...]: per group, its examples' C sequences)
  split the same way over each group's examples; its rows were laid out for this split by
  `packing.interleave_micro_batches`, so micro-batch i reads back only its own rows.
  """
  spec = jax.sharding.PartitionSpec(None, sharding_lib.BATCH_AXES)

  def constrain(x):
    if mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))

  def split(x):
    return constrain(x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1))

  def split_groups(x_GxPx):
    groups, per = x_GxPx.shape[:2]
    c = per * groups // batch["example_weights"].shape[0]  # sequences per example
    x = x_GxPx.reshape((groups, per // (num * c), num, c) + x_GxPx.shape[2:])
    return constrain(jnp.moveaxis(x, 2, 0).reshape((num, groups, per // num) + x.shape[4:]))

  return {k: (split_groups(v) if k in packing_lib.UNPACK_KEYS
              else jax.tree_util.tree_map(split, v)) for k, v in batch.items()}


StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]


def auto_grad_accum_steps(rows_per_device: int, length: int, platform: str) -> int:
  """`config.grad_accum_steps=0`: 1 on GPU/TPU; on CPU the fewest micro-batches, dividing the
  per-device rows, of at most `platform.CPU_BATCH_TOKENS` tokens each (at least one row):
  activations stay in cache and the per-update work (AdamW, clipping) is paid once per
  accumulated batch (BENCHMARKS.md, "CPU")."""
  return platform_lib.fewest_micro_batches(rows_per_device, length, platform_lib.CPU_BATCH_TOKENS,
                                          platform)


def _grad_accum_steps(config, stream) -> int:
  """The train step's micro-batches: a packed fine-tuning stream's own (it laid the rows out
  for them: `finetune_pipeline.packed_micro_batches`), else `config.grad_accum_steps`."""
  if getattr(stream, "packing", None) is not None:
    return int(stream.micro_batches)
  return int(config.grad_accum_steps)


def make_train_step(head, model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    nonfinite: str = "stop", mesh: Optional[jax.sharding.Mesh] = None,
                    flops_per_row: Optional[Callable[[int], float]] = None,
                    partition: lora_lib.Partition = lora_lib.FULL) -> StepFn:
  """The pure `train_step(state, batch, rng)` of `head`; `rng` is the run's base key.

  `grad_accum_steps=0` picks the number per batch shape when the step is traced
  (`auto_grad_accum_steps`), so each length bucket gets its own. `mesh` (optional) pins
  micro-batches to the batch axes when accumulating. `partition` (LoRA) names the
  trainable params: gradients, clipping and the optimizer see only those.
  """
  if nonfinite not in NONFINITE_MODES:
    raise UserError(f"config.nonfinite={nonfinite!r} is not one of {NONFINITE_MODES}")

  shards = sharding_lib.num_batch_shards(mesh) if mesh is not None else 1

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(rng, state.step)
    dens = head.denominators(batch)  # over the whole batch, whatever the accumulation
    rows, length = batch["input_ids"].shape[:2]
    if "unpack_rows" in batch:  # packed rows: as the stream laid them out (auto: one)
      num_micro = max(grad_accum_steps, 1)
    else:
      num_micro = grad_accum_steps or auto_grad_accum_steps(rows // shards, length,
                                                           jax.default_backend())
    logging.info("train step for batches of %d x %d: %d micro-batch(es) of %d rows per device",
                 rows, length, num_micro, rows // shards // num_micro)

    trainable, frozen = partition.split(state.params)

    def grad_fn(params, micro, micro_rng):
      def loss_fn(p):
        sums = head.sums(model, partition.combine(p, frozen), micro, micro_rng)
        return combine_loss(sums, head.loss_terms, dens), sums
      (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      return grads, sums

    if num_micro == 1:
      grads, sums = grad_fn(trainable, batch, step_rng)
    else:
      micro = _micro_batches(batch, num_micro, mesh)
      first = jax.tree_util.tree_map(lambda x: x[0], micro)
      zeros = jax.tree_util.tree_map(
          jnp.zeros_like, jax.eval_shape(grad_fn, trainable, first, step_rng))

      def body(carry, xs):
        micro_batch, i = xs
        g, s = grad_fn(trainable, micro_batch, jax.random.fold_in(step_rng, i))
        return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

      (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(num_micro)))

    loss = combine_loss(sums, head.loss_terms, dens)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state.opt_state, trainable)
    new_params = partition.combine(optax.apply_updates(trainable, updates), frozen)
    if nonfinite == "skip":  # a non-finite step leaves params and optimizer state untouched
      keep = functools.partial(jax.tree_util.tree_map,
                               lambda new, old: jnp.where(finite, new, old))
      new_params, new_opt_state = keep(new_params, state.params), keep(new_opt_state,
                                                                        state.opt_state)
    # With 'stop' the host raises before such a state is saved or evaluated (loop.Loop), so
    # no select: it would keep the old state alive beside the new, and XLA would copy every
    # donated buffer (params, m and v) to update it in place.
    new_state = TrainState(step=state.step + 1, params=new_params, opt_state=new_opt_state)
    metrics = dict(sums, loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step),
                   nonfinite=1.0 - finite.astype(jnp.float32), **computed(batch, flops_per_row))
    return new_state, metrics

  return train_step


def computed(batch: Batch, flops_per_row: Optional[Callable[[int], float]] = None) -> dict:
  """What a step computes, for honest throughput: tokens of the rows run (rows x bucket
  length; several rows per example for multiple choice), the real (non-padding) ones among
  them, and the training FLOPs of those rows (`flops_per_row(length)`, static per shape)."""
  ids = batch["input_ids"]
  length = ids.shape[-1]
  if "packing_ids" in batch:
    real = jnp.sum(batch["packing_ids"] > 0)
  elif "attention_mask" in batch:
    real = jnp.sum(batch["attention_mask"])
  else:
    real = jnp.asarray(ids.size)
  out = dict(tokens_computed=jnp.asarray(float(ids.size)),
             tokens_real=real.astype(jnp.float32))
  if flops_per_row is not None:
    out["flops"] = jnp.asarray(float(ids.size // length) * flops_per_row(length))
  return out


def make_eval_step(head, model: nn.Module) -> Callable[[Any, Batch], dict]:
  """`eval_step(params, batch) -> {'sums', 'predictions'}`, deterministic (no dropout).

  `predictions` (per-row outputs for host-side metrics) is None for heads whose
  metrics are all sums.
  """

  def eval_step(params: Any, batch: Batch) -> dict:
    return dict(sums=head.sums(model, params, batch, None),
                predictions=head.predictions(model, params, batch))

  return eval_step


# --------------------------------------------------------------------------- setup

@dataclasses.dataclass
class _Setup:
  """Everything static about a run: model, optimizer, mesh and the state's shardings."""

  head: Any
  model: nn.Module  # what the train step applies (with LoRA: adapters, their dropout)
  eval_model: nn.Module  # what evaluation and init apply (no adapter dropout)
  bert_config: BertConfig
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  rules: tuple
  init_params: Callable[[jax.Array], Any]  # rng -> boxed params
  state_sharding: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
  lora: Optional[lora_lib.Settings] = None
  lora_modules: tuple[str, ...] = ()  # the adapted encoder modules
  partition: lora_lib.Partition = lora_lib.FULL  # trainable vs frozen params


def resolve_schedule(config: ml_collections.ConfigDict, num_train_examples: Optional[int]
                     ) -> ml_collections.ConfigDict:
  """A copy of `config` with num_train_steps / warmup_steps resolved from epochs / ratio."""
  c = ml_collections.ConfigDict(config.to_dict())
  epochs = c.get("num_epochs")
  if c.num_train_steps is not None and c.num_train_steps < -1:
    raise UserError(f"config.num_train_steps={c.num_train_steps}: give a positive number of "
                    "steps (or -1: from config.num_epochs)")
  if (not c.num_train_steps or c.num_train_steps < 0) and epochs is not None and epochs < 0:
    raise UserError(f"config.num_epochs={epochs} must be > 0")
  if (not c.num_train_steps or c.num_train_steps < 0) and epochs:
    if not num_train_examples:
      raise UserError("config.num_epochs needs a training set of known size; set "
                      "config.num_train_steps instead")
    c.num_train_steps = optim.run_steps(c, num_train_examples)
  if not c.num_train_steps or c.num_train_steps < 0:
    raise UserError("set config.num_train_steps (or config.num_epochs)")
  ratio = c.get("warmup_ratio")
  if (c.warmup_steps is None or c.warmup_steps < 0) and ratio is not None:
    c.warmup_steps = int(round(ratio * c.num_train_steps))
  if c.warmup_steps is None or c.warmup_steps < 0:
    raise UserError("set config.warmup_steps (or config.warmup_ratio)")
  for key in ("eval_every_steps", "checkpoint_every_steps"):
    if c.get(key) == -1:  # once per epoch
      if not num_train_examples:
        raise UserError(f"config.{key}=-1 (once per epoch) needs a training set of known size")
      c[key] = max(1, math.ceil(num_train_examples / c.batch_size))
  return c


def _setup(config: ml_collections.ConfigDict, head, spec: Spec) -> _Setup:
  bert_config = initialize.run_model_config(config, spec.vocab_size, head=head)
  if bert_config.vocab_size < spec.vocab_size:
    raise UserError(f"the tokenizer has {spec.vocab_size} tokens but the model only "
                    f"{bert_config.vocab_size} embeddings")
  model = eval_model = head.build_model(bert_config)
  inputs = head.init_inputs(config)
  lora = lora_lib.settings(config) if "lora" in config else None
  lora_modules, partition = (), lora_lib.FULL
  if lora is not None:  # adapters on the matched encoder kernels; only they and the head train
    plain = jax.eval_shape(lambda r: nn.unbox(head.init(model, r, inputs)["params"]),
                           jax.random.PRNGKey(0))
    lora_modules, partition = lora_lib.target_modules(plain, lora), lora_lib.LORA
    eval_model = lora_lib.wrap(model, lora, lora_modules, train=False)
    model = lora_lib.wrap(model, lora, lora_modules, train=True)
  mesh = sharding_lib.make_mesh(config.mesh_shape)
  rules = sharding_lib.normalize_rules(config.logical_axis_rules)
  if config.grad_accum_steps < 0:
    raise UserError(f"config.grad_accum_steps={config.grad_accum_steps} must be >= 1 "
                    "(or 0: per platform)")
  sharding_lib.check_batch_size(config.batch_size, mesh, max(config.grad_accum_steps, 1))
  if config.eval_every_steps and config.eval_batch_size:
    sharding_lib.check_batch_size(config.eval_batch_size, mesh, name="config.eval_batch_size")
  tx, schedule = optim.make_optimizer(config)
  rep = sharding_lib.replicated(mesh)

  def init_params(rng):
    return head.init(eval_model, rng, inputs)["params"]

  # Abstract state and its shardings: nothing is materialised yet.
  boxed = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  param_sh = sharding_lib.logical_to_sharding(boxed, mesh, rules)
  abs_params = ckpt_lib.abstract_like(nn.unbox(boxed), param_sh)
  # The optimizer state covers the trainable params only (with LoRA: adapters and head).
  abs_opt = jax.eval_shape(tx.init, partition.split(abs_params)[0])
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_opt, partition.split(param_sh)[0],
                                 transform_non_params=lambda _: rep)
  state_sh = TrainState(step=rep, params=param_sh, opt_state=opt_sh)
  abs_state = ckpt_lib.abstract_like(
      TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_params, opt_state=abs_opt),
      state_sh)
  return _Setup(head, model, eval_model, bert_config, tx, schedule, mesh, rules, init_params,
                state_sh, abs_state, lora, lora_modules, partition)


def fresh_params(setup: _Setup, rng: jax.Array) -> Any:
  """Randomly initialised params, each shard born on its device (never whole on one host)."""
  return jax.jit(lambda r: nn.unbox(setup.init_params(r)),
                 out_shardings=setup.state_sharding.params)(rng)


def fresh_leaves(setup: _Setup, rng: jax.Array, names: list[str]) -> dict[str, jax.Array]:
  """The leaves `names` ('bert/pooler/kernel', ...) of `fresh_params(setup, rng)`.

  Why: a fine-tuning run from a checkpoint needs only its head fresh. Jitting just those
  outputs lets XLA drop the rest of the init (the embedding tables, every layer), so the
  compile costs a fraction of a second, not the seconds of the whole model's; the values
  are the same as the whole init's (each leaf's key depends on its path only).
  """
  sharding = flax.traverse_util.flatten_dict(setup.state_sharding.params, sep="/")

  def init(r):
    flat = flax.traverse_util.flatten_dict(nn.unbox(setup.init_params(r)), sep="/")
    return {name: flat[name] for name in names}

  return jax.jit(init, out_shardings={name: sharding[name] for name in names})(rng)


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
  fresh = lambda: fresh_params(s, init_rng)  # pylint: disable=g-long-lambda
  if config.init_checkpoint and s.lora is not None:  # the checkpoint's model, fresh adapters
    init = fresh()
    flat_init = flax.traverse_util.flatten_dict(lora_lib.without_adapters(init), sep="/")
    params = lora_lib.with_adapters(initialize.load_init_params(
        config.init_checkpoint, s.bert_config, lora_lib.without_adapters(s.abstract_state.params),
        lambda names: {name: flat_init[name] for name in names}, s.head.spec.to_record()), init)
    logging.info("initialised from %s; LoRA rank %d on %d modules", config.init_checkpoint,
                 s.lora.rank, len(s.lora_modules))
  elif config.init_checkpoint:
    params = initialize.load_init_params(
        config.init_checkpoint, s.bert_config, s.abstract_state.params,
        lambda names: fresh_leaves(s, init_rng, names), s.head.spec.to_record())
    logging.info("initialised from %s", config.init_checkpoint)
  else:
    params = fresh()
  opt_state = jax.jit(lambda p: s.tx.init(s.partition.split(p)[0]),
                      out_shardings=s.state_sharding.opt_state)(params)
  state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), rep), params=params,
                     opt_state=opt_state)
  return state, jax.device_put(rng, rep), None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: Optional[tuple[Data, Spec]] = None,
                       step_hook: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
  """Trains `config.task` (default: pretraining) or resumes it in `workdir`.

  `data` (tests, benchmarks) replaces the task's own `(Data, Spec)`. Returns the
  last logged metrics, with `step` and `preempted` (True when SIGTERM stopped
  the run).
  """
  workdir = _check_workdir(workdir)
  own_data = data is None
  data, spec = tasks_lib.make_data(config) if own_data else data
  head = heads_lib.for_spec(spec)
  config = resolve_schedule(config, spec.num_train_examples)
  setup = _setup(config, head, spec)
  logging.info("JAX %s: %d processes, %d devices (%s); task %s, head %s, %s", jax.__version__,
               jax.process_count(), jax.device_count(), jax.devices()[0].device_kind, spec.task,
               spec.head, ", ".join(f"{k}={getattr(setup.bert_config, k)}"
                                    for k in initialize.SIZE_KEYS))
  preemption = loop_lib.Preemption(config.preemption_check_every_steps)
  preemption.install()  # from here on SIGTERM saves instead of killing
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    if checkpointer.latest_step() is not None:
      model_dir.check_resume_compatible(workdir, setup.bert_config, head.recorded_heads, spec)
      lora_lib.check_resume(workdir, setup.lora)
    state, rng, restored = _initial_state(config, setup, checkpointer, data)
    model_dir.write_model_files(workdir, setup.bert_config, head.recorded_heads,
                                data.tokenizer_dir, spec.to_record())
    if setup.lora is not None and jax.process_index() == 0:
      lora_lib.write_settings(workdir, setup.lora, setup.lora_modules,
                              {"base_model": config.init_checkpoint})
    mesh, rules = setup.mesh, setup.rules
    # The global mesh turns the model's logical activation constraints on.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      batch_sh = sharding_lib.batch_sharding(mesh)
      rep = sharding_lib.replicated(mesh)
      p_train_step = jax.jit(
          make_train_step(head, setup.model, setup.tx, setup.schedule,
                          grad_accum_steps=_grad_accum_steps(config, data.train),
                          nonfinite=config.nonfinite, mesh=mesh,
                          flops_per_row=functools.partial(
                              head.flops_per_sequence, setup.bert_config, config=config,
                              lora_modules=setup.lora_modules),
                          partition=setup.partition),
          in_shardings=(setup.state_sharding, batch_sh, rep),
          out_shardings=(setup.state_sharding, rep), donate_argnums=(0,))
      p_eval_step = jax.jit(make_eval_step(head, setup.eval_model),
                            in_shardings=(setup.state_sharding.params, batch_sh),
                            out_shardings=rep)
      with loop_lib.Loop(config, head, setup.bert_config, workdir, checkpointer, mesh,
                         restored, data.tokenizer_dir) as loop:
        result = loop.run(state, rng, data, p_train_step, p_eval_step, preemption, step_hook)
    if not result["preempted"]:
      finalize.after_training(config, workdir, head, setup.lora, setup.lora_modules)
    return result
  finally:
    preemption.uninstall()
    checkpointer.close()
    if own_data and hasattr(data.train, "close"):
      data.train.close()  # its prefetch thread


def _check_workdir(workdir: str) -> str:
  """WORKDIR as an absolute path, refused up front when it is a file or cannot be made."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as exc:
    raise UserError(f"--workdir={workdir}: cannot create it ({exc.strerror})") from None
  if not os.access(workdir, os.W_OK):
    raise UserError(f"--workdir={workdir} is not writable")
  return workdir
