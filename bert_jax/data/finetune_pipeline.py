"""Fine-tuning input: encoded examples in memory, a (seed, step) training stream, exact eval.

Why it looks like this:
- Fine-tuning sets are small (GLUE's largest, QQP/MNLI, is ~400k rows), so
  examples are encoded once into padded int arrays held in memory; each host
  encodes the whole set (it is cheap) and reads its rows by index.
- The training stream follows `bert_jax.data.stream.GlobalOrder`: global batch
  `b` is a pure function of (seed, b), host `h` of `H` takes block `h` of it,
  and the only state is `b`. A run resumed on another number of hosts sees the
  same batches.
- Length buckets: a global batch is cut to the smallest bucket that holds its
  longest row (computed from the whole global batch, so every host agrees), so
  short-sentence tasks run at ~their real length with a handful of compiled
  shapes instead of always `max_seq_length`.
- Evaluation is one exact pass in length order (fewer padded tokens), full-size
  batches, rows past the end are padding with `example_weights` 0; identical
  for any number of hosts and devices.
- Packing (`config.pack`, `Packing`): the same examples per batch, but the
  encoder's rows hold several of them end to end (`bert_jax.data.packing`); the
  batch keeps every per-example field in the padded layout (labels, masks,
  example ids) and adds the packed encoder rows and the unpack arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np

from bert_jax.data import packing as packing_lib
from bert_jax.data.buckets import BUCKETS, bucket_length  # pylint: disable=unused-import
from bert_jax.data.stream import GlobalOrder
from bert_jax.errors import UserError

# Batches whose packing plans a run's row length and row counts (`TrainStream`): under a
# second of host time, once per run.
PLAN_SAMPLE_STEPS = 128


@dataclasses.dataclass
class Encoded:
  """N encoded examples: fields [N, L] (sequence) or [N, ...] (per row), and their lengths."""

  seq_fields: dict[str, np.ndarray]  # input_ids, token_type_ids, ... [N, (C,) max_seq_length]
  row_fields: dict[str, np.ndarray]  # labels, example ids, ... [N, ...]
  lengths: np.ndarray  # [N] (or [N, C]) real tokens per row

  def __len__(self) -> int:
    return int(self.lengths.shape[0])


def encode_texts(tokenizer, texts: Sequence[str], pairs: Optional[Sequence[str]],
                 max_seq_length: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """[CLS] a [SEP] (b [SEP]) padded to max_seq_length: (input_ids, token_type_ids), lengths."""
  out = tokenizer.encode_batch(list(texts), None if pairs is None else list(pairs),
                               max_length=max_seq_length, padding="max_length")
  lengths = out["attention_mask"].sum(axis=1).astype(np.int32)
  return ({"input_ids": out["input_ids"], "token_type_ids": out["token_type_ids"]}, lengths)


def _batch(data: Encoded, rows: np.ndarray, length: int, weights: np.ndarray) -> dict:
  # Sequence fields are [N, L], or [N, C, L] for examples of several rows (multiple choice).
  out = {k: v[rows][..., :length] for k, v in data.seq_fields.items()}
  out["attention_mask"] = (np.arange(length) < data.lengths[rows][..., None]).astype(np.int32)
  out.update({k: v[rows] for k, v in data.row_fields.items()})
  out["example_weights"] = weights.astype(np.float32)
  return out


@dataclasses.dataclass(frozen=True)
class Packing:
  """How batches are packed: `groups` = batch shards (one group of rows per device)."""

  groups: int
  row_length: int = packing_lib.PACK_LENGTH
  pad_id: int = 0


def _packed_lengths(data: Encoded, rows_all: np.ndarray, weights_all: np.ndarray) -> np.ndarray:
  """[S] tokens per sequence of a global batch (0 for padding examples: nothing packed)."""
  real = (weights_all > 0).reshape((-1,) + (1,) * (data.lengths.ndim - 1))
  return (data.lengths[rows_all] * real).reshape(-1)


def micro_batch_order(count: int, groups: int, micro_batches: int) -> np.ndarray:
  """The order in which a batch of `count` examples is packed for `micro_batches`
  accumulated micro-batches: block (g, i) = the examples of group g that micro-batch i
  takes (`train._micro_batches`: every `micro_batches`-th example of the group, from the
  i-th), so each micro-batch has rows of its own. The identity for one micro-batch."""
  per = count // groups
  return (np.arange(count).reshape(groups, per // micro_batches, micro_batches)
          .transpose(0, 2, 1).reshape(-1))


def packed_view_length(data: Encoded, max_seq_length: int) -> int:
  """The padded-view width of every packed batch of `data`: the bucket of its longest
  example, so only the row count varies between batches (fewer compiled shapes)."""
  return bucket_length(int(data.lengths.max(initial=1)), max_seq_length)


def _packed_batch(data: Encoded, rows_all: np.ndarray, weights_all: np.ndarray, length: int,
                  packing: Packing, process_index: int, process_count: int,
                  rows: int = 0, counts: Sequence[int] = packing_lib.ROW_COUNTS,
                  micro_batches: int = 1) -> dict:
  """This host's block of the global batch `rows_all`, packed (see `Packing`).

  `micro_batches` > 1 (gradient accumulation): each group's examples are packed as that
  many blocks of rows, laid out so that `train._micro_batches` hands every micro-batch its
  own examples' rows (`packing.interleave_micro_batches`); per-example fields keep the
  batch's order.
  """
  groups = packing.groups
  mine = slice(process_index * len(rows_all) // process_count,
               (process_index + 1) * len(rows_all) // process_count)
  order = micro_batch_order(len(rows_all), groups, micro_batches)
  lengths = _packed_lengths(data, rows_all[order], weights_all[order])
  count = lengths.size
  seq = {k: data.seq_fields[k][rows_all[order]].reshape(count, -1)
         for k in ("input_ids", "token_type_ids")}
  blocks = groups * micro_batches  # packed blocks: (group, micro-batch), group-major
  per_host = blocks // process_count
  packed = packing_lib.pack(
      seq, lengths.reshape(-1), groups=blocks, row_length=max(packing.row_length, length),
      unpack_length=length, pad_id=packing.pad_id,
      keep=(process_index * per_host, (process_index + 1) * per_host), rows=rows, counts=counts)
  packed = packing_lib.interleave_micro_batches(packed, micro_batches,
                                                sequences_per_example=count // len(rows_all))
  out = _batch(data, rows_all[mine], length, weights_all[mine])
  out.update(packed)  # the encoder's rows replace the padded input_ids / token_type_ids
  return out


class TrainStream:
  """Host-local training batches, a pure function of (seed, step); checkpointable."""

  def __init__(self, data: Encoded, *, global_batch_size: int, seed: int, max_seq_length: int,
               process_index: int = 0, process_count: int = 1,
               buckets: Sequence[int] = BUCKETS, packing: Optional[Packing] = None,
               num_steps: Optional[int] = None, micro_batches: int = 1):
    if len(data) == 0:
      raise UserError("the training set is empty")
    self.data = data
    self.packing = packing
    self.micro_batches = micro_batches  # accumulated per update (packed: rows of their own)
    if packing is not None:  # one view width per run: only the row count varies
      self.view_length = packed_view_length(data, max_seq_length)
    self.order = GlobalOrder(len(data), global_batch_size, seed)
    self.max_seq_length = max_seq_length
    self.process_index, self.process_count = process_index, process_count
    self.buckets = buckets
    self.step = 0
    self.row_counts = packing_lib.ROW_COUNTS
    if packing is not None:
      width, self.row_counts = self._plan(num_steps or -(-len(data) // global_batch_size))
      self.packing = dataclasses.replace(packing, row_length=width)

  def _plan(self, num_steps: int) -> tuple[int, tuple[int, ...]]:
    """The run's row length and compiled row counts (`packing.plan_packing`) from the rows
    its first `PLAN_SAMPLE_STEPS` batches need at each candidate length (the view width up
    to `Packing.row_length`, on the bucket grid): a function of (seed, data, devices), so
    a resumed run and every host plan alike."""
    top = max(self.packing.row_length, self.view_length)
    widths = [self.view_length] + [b for b in BUCKETS if self.view_length < b <= top]
    size = self.order.global_batch_size
    order = micro_batch_order(size, self.packing.groups, self.micro_batches)
    batches = [_packed_lengths(self.data, self.order.host_rows(s)[0][order], np.ones(size))
               for s in range(min(num_steps, PLAN_SAMPLE_STEPS))]
    blocks = self.packing.groups * self.micro_batches
    needed = {w: [packing_lib.rows_needed(lengths, groups=blocks, row_length=w)
                  for lengths in batches] for w in widths}
    return packing_lib.plan_packing(needed, num_steps)

  def __iter__(self):
    return self

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """Global batch `step`, this host's rows."""
    everyone, _ = self.order.host_rows(step)  # the global batch, for the shared bucket
    length = bucket_length(int(self.data.lengths[everyone].max()), self.max_seq_length,
                           self.buckets)
    if self.packing is not None:
      return _packed_batch(self.data, everyone, np.ones(len(everyone)), self.view_length,
                           self.packing, self.process_index, self.process_count,
                           counts=self.row_counts, micro_batches=self.micro_batches)
    rows, _ = self.order.host_rows(step, self.process_index, self.process_count)
    return _batch(self.data, rows, length, np.ones(len(rows)))

  def __next__(self) -> dict[str, np.ndarray]:
    out = self.batch_at(self.step)
    self.step += 1
    return out

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    if "step" not in state:
      raise UserError(f"input-iterator state {state} is not a fine-tuning stream's state")
    self.step = int(state["step"])


def eval_batches(data: Encoded, *, global_batch_size: int, max_seq_length: int,
                 process_index: int = 0, process_count: int = 1,
                 buckets: Sequence[int] = BUCKETS,
                 packing: Optional[Packing] = None) -> Iterator[dict[str, np.ndarray]]:
  """One exact pass (padded: in length order; packed: in input order, one shape); every host
  yields the same number of equal-size batches.

  Rows carry `example_index` (their position in `data`), so gathered predictions
  can be put back in input order.
  """
  if global_batch_size % process_count:
    raise UserError(f"eval batch size {global_batch_size} must be divisible by the "
                    f"{process_count} processes")
  per_host = global_batch_size // process_count
  n = len(data)
  if packing is None:  # padded: length order, fewer padded tokens
    order = np.argsort(data.lengths.reshape(len(data), -1).max(-1), kind="stable")
  else:  # packed: input order, so every batch has about the same tokens (one row count)
    order = np.arange(n)
    view = packed_view_length(data, max_seq_length)
    rows = 0
    for start in range(0, n, global_batch_size):
      batch = order[start:start + global_batch_size]
      weights = np.zeros(global_batch_size, np.float32)
      weights[:len(batch)] = 1
      batch = np.concatenate([batch, np.zeros(global_batch_size - len(batch), np.int64)])
      rows = max(rows, packing_lib.rows_needed(
          _packed_lengths(data, batch, weights), groups=packing.groups,
          row_length=max(packing.row_length, view)))
  for start in range(0, n, global_batch_size):
    rows_all = order[start:start + global_batch_size]
    length = (view if packing is not None else
              bucket_length(int(data.lengths[rows_all].max()), max_seq_length, buckets))
    real = np.zeros(global_batch_size, bool)
    real[:len(rows_all)] = True
    padded = np.concatenate([rows_all, np.zeros(global_batch_size - len(rows_all), np.int64)])
    mine = slice(process_index * per_host, (process_index + 1) * per_host)
    if packing is not None:
      out = _packed_batch(data, padded, real.astype(np.float32), length, packing, process_index,
                          process_count, rows=rows)
    else:
      out = _batch(data, padded[mine], length, real[mine])
    out["example_index"] = np.where(real[mine], padded[mine], -1).astype(np.int32)
    yield out


def packing_of(config, pad_id: int = 0) -> Optional[Packing]:
  """The run's `Packing` (None with `config.pack=False`): one group per batch shard."""
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  if not config.pack:
    return None
  shape = dict(zip(sharding.MESH_AXES,
                   sharding.resolve_mesh_shape(config.mesh_shape, jax.device_count())))
  groups = int(np.prod([shape[a] for a in sharding.BATCH_AXES]))
  if groups % jax.process_count():
    raise UserError(f"config.pack: the {groups} batch shards do not split over the "
                    f"{jax.process_count()} processes; set config.pack=False")
  # Packed blocks per group (TrainStream): the micro-batches must split each group's examples.
  sharding.check_batch_split(config.batch_size, groups, max(int(config.grad_accum_steps), 1))
  if config.pack_length < 2:
    raise UserError(f"config.pack_length={config.pack_length} must be >= 2")
  # Rows no wider than max_seq_length: a model's position table holds that (and the kernels
  # were chosen for it); a batch whose longest example needs more gets wider rows.
  return Packing(groups=groups, row_length=min(int(config.pack_length), int(config.max_seq_length)),
                 pad_id=pad_id)


def packed_micro_batches(grad_accum_steps: int, examples_per_group: int, mean_tokens: float,
                         platform: str) -> int:
  """Micro-batches a packed batch is accumulated in: `grad_accum_steps` when given; for 0
  (auto) 1 on GPU/TPU, and on CPU the fewest that divide a group's examples into micro-batches
  of at most `platform.CPU_PACKED_BATCH_TOKENS` real tokens (at least one example each).

  Why on CPU: a step's activations for a few thousand tokens fall out of the cores' caches
  (BERT-base pretraining: ~1.45x in micro-batches of 512 tokens). For QA windows (32 x 96
  tokens a step, MiniLM-sized) 4 micro-batches measured 1.3x over 30 steps but only 1-2%
  over whole runs; GLUE-length batches (32 x ~16 tokens) stay whole (BENCHMARKS.md,
  "Tagging and QA").
  """
  from bert_jax import platform as platform_lib  # pylint: disable=g-import-not-at-top
  if grad_accum_steps < 0:  # the stream is built before the trainer checks the config
    raise UserError(f"config.grad_accum_steps={grad_accum_steps} must be >= 1 (or 0: per "
                    "platform)")
  if grad_accum_steps:
    return int(grad_accum_steps)
  return platform_lib.fewest_micro_batches(examples_per_group, mean_tokens,
                                          platform_lib.CPU_PACKED_BATCH_TOKENS, platform)


def make_streams(config, train: Encoded, evals: dict[str, Encoded], *, pad_id: int = 0,
                 packable: bool = True):
  """(training stream, {eval infix: factory of one exact pass}) of this process for `config`.

  `packable=False`: the task's rows are whole documents (packing does not apply).
  """
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  packing = packing_of(config, pad_id) if packable else None
  length = int(config.max_seq_length)
  eval_batch = config.eval_batch_size or config.batch_size
  eval_sets = {infix: functools.partial(eval_batches, data, global_batch_size=eval_batch,
                                        max_seq_length=length, packing=packing, **where)
               for infix, data in evals.items()}
  from bert_jax import optim  # pylint: disable=g-import-not-at-top
  steps = optim.run_steps(config, len(train))  # the run's length, for the packing plan
  # Packed rows: the stream lays out the micro-batches (each its own rows) and the train step
  # accumulates as many (`train.make_train_step` reads `stream.micro_batches`).
  micro = max(int(config.grad_accum_steps), 1)
  if packing is not None:
    micro = packed_micro_batches(int(config.grad_accum_steps), config.batch_size // packing.groups,
                                 float(np.mean(train.lengths.reshape(len(train), -1).sum(axis=1))),
                                 jax.default_backend())
  stream = TrainStream(train, global_batch_size=config.batch_size, seed=config.seed,
                       max_seq_length=length, packing=packing, num_steps=steps,
                       micro_batches=micro, **where)
  return stream, eval_sets
