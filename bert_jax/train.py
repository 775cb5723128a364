"""The one trainer: train state, the jitted train/eval steps and run setup, for every task.

Why it looks like this (nanodo / flax lm1b habits):
- `train_step(state, batch, rng) -> (state, metrics)` is pure and jitted once
  with explicit in/out shardings and the state donated; gradient accumulation
  is a `lax.scan` over micro-batches inside it, so one dispatch = one update.
- The task (`bert_jax/tasks/`) supplies the model, loss/metric sums and data;
  the loss is formed from sums over the *whole* batch (masked tokens, weighted
  rows) in one place (`tasks.base.combine_loss`), so K accumulated
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
import numpy as np
import optax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import loop as loop_lib
from bert_jax import optim
from bert_jax import platform as platform_lib
from bert_jax import sharding as sharding_lib
from bert_jax import tasks as tasks_lib
from bert_jax.errors import UserError
from bert_jax.model import DTYPES, BertConfig, resolve_dtype, to_layout
from bert_jax.tasks.base import Batch, Data, combine_loss

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
  device holds a slice of every micro-batch (no data movement)."""

  def split(x):
    x = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
    if mesh is None:
      return x
    spec = jax.sharding.PartitionSpec(None, sharding_lib.BATCH_AXES)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))

  return jax.tree_util.tree_map(split, batch)


StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]


def auto_grad_accum_steps(rows_per_device: int, length: int, platform: str) -> int:
  """`config.grad_accum_steps=0`: 1 on GPU/TPU; on CPU the fewest micro-batches, dividing the
  per-device rows, of at most `platform.CPU_BATCH_TOKENS` tokens each (at least one row):
  activations stay in cache and the per-update work (AdamW, clipping) is paid once per
  accumulated batch (BENCHMARKS.md, "CPU")."""
  if platform != "cpu" or rows_per_device <= 1:
    return 1
  most_rows = max(1, platform_lib.CPU_BATCH_TOKENS // max(length, 1))
  return next(k for k in range(1, rows_per_device + 1)
              if rows_per_device % k == 0 and rows_per_device // k <= most_rows)


def make_train_step(task, model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    nonfinite: str = "stop", mesh: Optional[jax.sharding.Mesh] = None) -> StepFn:
  """The pure `train_step(state, batch, rng)` of `task`; `rng` is the run's base key.

  `grad_accum_steps=0` picks the number per batch shape when the step is traced
  (`auto_grad_accum_steps`), so each length bucket gets its own. `mesh` (optional) pins
  micro-batches to the batch axes when accumulating.
  """
  if nonfinite not in NONFINITE_MODES:
    raise UserError(f"config.nonfinite={nonfinite!r} is not one of {NONFINITE_MODES}")

  shards = sharding_lib.num_batch_shards(mesh) if mesh is not None else 1

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(rng, state.step)
    dens = task.denominators(batch)  # over the whole batch, whatever the accumulation
    rows, length = batch["input_ids"].shape[:2]
    num_micro = grad_accum_steps or auto_grad_accum_steps(rows // shards, length,
                                                         jax.default_backend())
    logging.info("train step for batches of %d x %d: %d micro-batch(es) of %d rows per device",
                 rows, length, num_micro, rows // shards // num_micro)

    def grad_fn(params, micro, micro_rng):
      def loss_fn(p):
        sums = task.sums(model, p, micro, micro_rng)
        return combine_loss(sums, task.loss_terms, dens), sums
      (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      return grads, sums

    if num_micro == 1:
      grads, sums = grad_fn(state.params, batch, step_rng)
    else:
      micro = _micro_batches(batch, num_micro, mesh)
      first = jax.tree_util.tree_map(lambda x: x[0], micro)
      zeros = jax.tree_util.tree_map(
          jnp.zeros_like, jax.eval_shape(grad_fn, state.params, first, step_rng))

      def body(carry, xs):
        micro_batch, i = xs
        g, s = grad_fn(state.params, micro_batch, jax.random.fold_in(step_rng, i))
        return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

      (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(num_micro)))

    loss = combine_loss(sums, task.loss_terms, dens)
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


def make_eval_step(task, model: nn.Module) -> Callable[[Any, Batch], dict]:
  """`eval_step(params, batch) -> {'sums', 'predictions'}`, deterministic (no dropout).

  `predictions` (per-row outputs for host-side metrics) is None for tasks whose
  metrics are all sums.
  """

  def eval_step(params: Any, batch: Batch) -> dict:
    return dict(sums=task.sums(model, params, batch, None),
                predictions=task.predictions(model, params, batch))

  return eval_step


# --------------------------------------------------------------------------- setup

_SIZE_KEYS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
_RUN_KEYS = ("max_position_embeddings", "hidden_dropout_rate", "attention_dropout_rate",
             "attention_impl", "scan_layers", "remat_policy")


def model_config(config: ml_collections.ConfigDict, vocab_size: int,
                 base: Optional[BertConfig] = None) -> BertConfig:
  """BertConfig from config.model (preset + overrides), config.dtype and the data's vocab.

  With `base` (the init checkpoint's own config) the architecture is the
  checkpoint's and only run settings (dropout, attention kernel, scan, remat,
  dtype) come from config.model.
  """
  m = config.model
  if config.dtype not in DTYPES:
    raise UserError(f"config.dtype={config.dtype!r} is not one of {', '.join(DTYPES)}")
  dtype = resolve_dtype(config.dtype)
  if base is not None:
    overrides = {k: m[k] for k in _RUN_KEYS if k in m and m[k] is not None
                 and k != "max_position_embeddings"}
    cfg = base.replace(dtype=dtype, **overrides)
  else:
    if not m.get("preset"):
      raise UserError("config.model.preset is empty and there is no config.init_checkpoint to "
                      "take the model's size from")
    overrides = {k: m[k] for k in _SIZE_KEYS if m.get(k) is not None}
    overrides.update({k: m[k] for k in _RUN_KEYS if k in m and m[k] is not None})
    cfg = BertConfig.preset(m.preset, vocab_size=int(vocab_size), dtype=dtype,
                            **overrides)
  if config.max_seq_length > cfg.max_position_embeddings:
    raise UserError(f"config.max_seq_length={config.max_seq_length} exceeds the model's "
                    f"max_position_embeddings={cfg.max_position_embeddings}")
  return cfg


def _loaded_model_config(config: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
  """The architecture of config.init_checkpoint when config.model.preset is empty."""
  if config.model.get("preset") or not config.init_checkpoint:
    return model_config(config, vocab_size)
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  return model_config(config, vocab_size, base=convert.read_model_config(config.init_checkpoint))


def load_init_params(path: str, bert_config: BertConfig, abstract_params: Any,
                     fresh_params: Callable[[], Any], head_info: Optional[dict] = None) -> Any:
  """Params of any model path in this config's layout, shapes checked by name.

  Every encoder tensor must be in the checkpoint. The pooler and the task's head
  are loaded when the checkpoint has them with the same shapes (and, when both
  name their labels, the same labels); otherwise they keep `fresh_params()`'s
  random init, and the log says so.
  """
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top

  pretrained = convert.from_pretrained(path, with_tokenizer=False)  # weights only
  loaded = to_layout(pretrained.params, bert_config)
  flat_want = flax.traverse_util.flatten_dict(abstract_params, sep="/")
  flat_have = flax.traverse_util.flatten_dict(loaded, sep="/")
  want_labels = (head_info or {}).get("labels")
  have_labels = (pretrained.task or {}).get("labels")
  labels_differ = bool(want_labels and have_labels and list(want_labels) != list(have_labels))
  out, fresh = {}, []
  for name, want in flat_want.items():
    encoder = name.startswith("bert/") and not name.startswith("bert/pooler/")
    have = flat_have.get(name)
    if have is None or (not encoder and (tuple(have.shape) != tuple(want.shape)
                                         or (labels_differ and not name.startswith("bert/")))):
      if encoder:
        raise UserError(f"init_checkpoint {path} has no tensor {name} (heads: "
                        f"{list(pretrained.heads)})")
      fresh.append(name)
      continue
    if tuple(have.shape) != tuple(want.shape):
      raise UserError(f"init_checkpoint {path}: tensor {name} has shape {tuple(have.shape)}, "
                      f"the config needs {tuple(want.shape)}")
    out[name] = jax.device_put(np.asarray(have, dtype=want.dtype), want.sharding)
  if fresh:
    init = flax.traverse_util.flatten_dict(fresh_params(), sep="/")
    for name in fresh:
      out[name] = init[name]
    heads = sorted({n.split("/")[0] if not n.startswith("bert/") else "pooler" for n in fresh})
    logging.info("init_checkpoint %s: loaded the encoder; fresh %s", path, ", ".join(heads))
  return flax.traverse_util.unflatten_dict(out, sep="/")


@dataclasses.dataclass
class _Setup:
  """Everything static about a run: model, optimizer, mesh and the state's shardings."""

  task: Any
  model: nn.Module
  bert_config: BertConfig
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  rules: tuple
  init_params: Callable[[jax.Array], Any]  # rng -> boxed params
  state_sharding: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings


def resolve_schedule(config: ml_collections.ConfigDict, num_train_examples: Optional[int]
                     ) -> ml_collections.ConfigDict:
  """A copy of `config` with num_train_steps / warmup_steps resolved from epochs / ratio."""
  c = ml_collections.ConfigDict(config.to_dict())
  epochs = c.get("num_epochs")
  if (not c.num_train_steps or c.num_train_steps < 0) and epochs:
    if not num_train_examples:
      raise UserError("config.num_epochs needs a training set of known size; set "
                      "config.num_train_steps instead")
    c.num_train_steps = max(1, math.ceil(epochs * num_train_examples / c.batch_size))
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


def _setup(config: ml_collections.ConfigDict, task, meta: dict) -> _Setup:
  bert_config = _loaded_model_config(config, meta["vocab_size"])
  if bert_config.vocab_size < int(meta["vocab_size"]):
    raise UserError(f"the tokenizer has {meta['vocab_size']} tokens but the model only "
                    f"{bert_config.vocab_size} embeddings")
  model = task.build_model(bert_config)
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
  inputs = task.init_inputs(config)

  def init_params(rng):
    return task.init(model, rng, inputs)["params"]

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
  return _Setup(task, model, bert_config, tx, schedule, mesh, rules, init_params, state_sh,
                abs_state)


def fresh_params(setup: _Setup, rng: jax.Array) -> Any:
  """Randomly initialised params, each shard born on its device (never whole on one host)."""
  return jax.jit(lambda r: nn.unbox(setup.init_params(r)),
                 out_shardings=setup.state_sharding.params)(rng)


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
  if config.init_checkpoint:
    params = load_init_params(config.init_checkpoint, s.bert_config, s.abstract_state.params,
                              fresh, s.task.model_info())
    logging.info("initialised from %s", config.init_checkpoint)
  else:
    params = fresh()
  opt_state = jax.jit(s.tx.init, out_shardings=s.state_sharding.opt_state)(params)
  state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), rep), params=params,
                     opt_state=opt_state)
  return state, jax.device_put(rng, rep), None


def _finish(config: ml_collections.ConfigDict, workdir: str) -> None:
  """After a complete fine-tuning run: WORKDIR/best_hf and test-file predictions (process 0)."""
  best = os.path.join(workdir, loop_lib.BEST_DIR)
  if jax.process_index() != 0 or not os.path.isdir(best):
    return
  if config.get("export_hf"):
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    convert.convert(best, os.path.join(workdir, "best_hf"), "hf", overwrite=True)
    logging.info("exported %s as a Hugging Face dir: %s", best, os.path.join(workdir, "best_hf"))
  if config.get("test_file"):
    from bert_jax import predict  # pylint: disable=g-import-not-at-top
    out = os.path.join(workdir, "test_predictions.tsv")
    predict.predict_file(best, config.test_file, out)
    logging.info("predictions of %s -> %s", config.test_file, out)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: Optional[Data] = None,
                       step_hook: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
  """Trains `config.task` (default: pretraining) or resumes it in `workdir`.

  Returns the last logged metrics, with `step` and `preempted` (True when
  SIGTERM stopped the run).
  """
  task = tasks_lib.get_task(config)
  own_data = data is None
  if own_data:
    data = task.make_data(config)
  task.bind(data.meta)
  config = resolve_schedule(config, data.meta.get("num_train_examples"))
  setup = _setup(config, task, data.meta)
  logging.info("JAX %s: %d processes, %d devices (%s); task %s, %s", jax.__version__,
               jax.process_count(), jax.device_count(), jax.devices()[0].device_kind, task.name,
               ", ".join(f"{k}={getattr(setup.bert_config, k)}" for k in _SIZE_KEYS))
  preemption = loop_lib.Preemption(config.preemption_check_every_steps)
  preemption.install()  # from here on SIGTERM saves instead of killing
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    if checkpointer.latest_step() is not None:
      ckpt_lib.check_resume_compatible(workdir, setup.bert_config, task.heads)
    state, rng, restored = _initial_state(config, setup, checkpointer, data)
    ckpt_lib.write_model_files(workdir, setup.bert_config, task.heads, data.tokenizer_dir,
                               task.model_info())
    mesh, rules = setup.mesh, setup.rules
    # The global mesh turns the model's logical activation constraints on.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      batch_sh = sharding_lib.batch_sharding(mesh)
      rep = sharding_lib.replicated(mesh)
      p_train_step = jax.jit(
          make_train_step(task, setup.model, setup.tx, setup.schedule,
                          grad_accum_steps=config.grad_accum_steps,
                          nonfinite=config.nonfinite, mesh=mesh),
          in_shardings=(setup.state_sharding, batch_sh, rep),
          out_shardings=(setup.state_sharding, rep), donate_argnums=(0,))
      p_eval_step = jax.jit(make_eval_step(task, setup.model),
                            in_shardings=(setup.state_sharding.params, batch_sh),
                            out_shardings=rep)
      with loop_lib.Loop(config, task, setup.bert_config, workdir, checkpointer, mesh,
                         restored, data.tokenizer_dir) as loop:
        result = loop.run(state, rng, data, p_train_step, p_eval_step, preemption, step_hook)
    if not result["preempted"]:
      _finish(config, workdir)
    return result
  finally:
    preemption.uninstall()
    checkpointer.close()
    if own_data and hasattr(data.train, "close"):
      data.train.close()  # its prefetch thread
