"""The one inference runner: plan -> pad or pack -> devices -> fetch one behind -> input order.

Why one runner: every inference tool (fill-mask, embeddings, each head's
predict, similarity, retrieval) runs a jitted forward over rows of token ids, and
the costs are the same everywhere. XLA compiles one program per input shape, and
on CPU a compile (~1-2 s for a 6-layer model) costs as much as running several
thousand tokens, so:
- Rows are sorted by length and grouped into the shared length buckets
  (`data/buckets.py`); a bucket too small to be worth its own compile
  (`compile_cost_tokens` of padding) is merged into the next one. Each bucket is
  cut into equal batches of about `tokens_per_batch` tokens, so it compiles once
  and wastes at most a few empty rows (`plan_batches`).
- With `pack=True`, short rows (the most of a typical corpus) share rows of
  `pack_length` tokens instead (`pack_rows`, best-fit decreasing), when they fill
  at least one batch: a search query or two are not worth a wide row. On 10k
  lines of English this cut the tokens computed by a sixth and the compiled
  shapes from 8 to 2 (BENCHMARKS.md, "CPU").
- A padded row is a packed row with one segment: every batch carries
  `packing_ids` (1..K per segment, 0 = padding), `position_ids` restarting at 0
  in each segment and `starts` [B, K], so one forward serves both and the model
  uses block-diagonal attention. The outputs of a row packed with others equal
  those of the row alone up to float rounding.
- Batch i is fetched only after batch i+1 is dispatched, so the host assembles
  and reads back while the device computes. Each batch's rows are sharded over
  the process's devices (data parallel, parameters replicated; on CPU the
  inference launchers make one device per core, which keeps every core busy where
  one device's intra-op threads do not); row counts are rounded up to a multiple
  of the device count.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from bert_jax import platform as platform_lib
from bert_jax.data import buckets as buckets_lib
from bert_jax.data.packing import pack_rows

# Padding (in tokens) worth paying to avoid compiling one more shape.
COMPILE_COST_TOKENS = 8192
# Row length of packed short rows.
PACK_LENGTH = 128
OUTPUT_KEYS = ("tokens", "segments")

Forward = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]


def plan_batches(lengths: Sequence[int], max_length: int, tokens_per_batch: int,
                 batch_size: Optional[int] = None,
                 compile_cost_tokens: int = COMPILE_COST_TOKENS) -> list[tuple[np.ndarray, int]]:
  """(row indices, padded length) per batch; one shape per bucket, little padding.

  Rows are sorted by length and grouped into the smallest bucket that fits them.
  A bucket whose rows would cost less padding in the next bucket than
  `compile_cost_tokens` is merged into it. Each bucket is then cut into equal
  batches of at most `tokens_per_batch` tokens, so every batch of a bucket has
  the same shape: the last one is padded with at most (number of batches - 1)
  empty rows.

  Args:
    lengths: token count of each row (at most `max_length`).
    max_length: the longest allowed row.
    tokens_per_batch: token budget of a batch (rows = budget // bucket length).
    batch_size: fixed largest rows per batch, overriding the token budget.
    compile_cost_tokens: padding worth paying to avoid one more compiled shape.
  """
  lengths = np.asarray(lengths)
  buckets = buckets_lib.buckets_up_to(max_length)
  order = np.argsort(lengths, kind="stable")
  sorted_lengths = lengths[order]
  groups: list[tuple[np.ndarray, int]] = []
  carry = np.zeros(0, np.int64)
  begin = 0
  for k, bucket in enumerate(buckets):
    end = int(np.searchsorted(sorted_lengths, bucket, side="right"))
    members = np.concatenate([carry, order[begin:end]])
    begin = end
    if k + 1 < len(buckets) and len(members):
      extra_padding = len(members) * (buckets[k + 1] - bucket)
      if extra_padding < compile_cost_tokens:
        carry = members
        continue
    carry = np.zeros(0, np.int64)
    if len(members):
      groups.append((members, bucket))
  batches = []
  for members, bucket in groups:
    rows_max = batch_size or max(1, tokens_per_batch // bucket)
    count = -(-len(members) // rows_max)
    rows = -(-len(members) // count)
    batches += [(members[i:i + rows], bucket) for i in range(0, len(members), rows)]
  return batches


@dataclasses.dataclass(frozen=True)
class _Batch:
  members: list[np.ndarray]  # per batch row, the inputs it holds, in order
  rows: int  # batch rows (>= len(members): the rest is padding)
  length: int
  segments: int  # K: most inputs a row may hold


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def plan(lengths: np.ndarray, *, max_length: int, tokens_per_batch: int,
         batch_size: Optional[int] = None, pack: bool = False, pack_length: int = PACK_LENGTH,
         compile_cost_tokens: int = COMPILE_COST_TOKENS, row_multiple: int = 1) -> list[_Batch]:
  """The batches `run` dispatches: packed rows first (if worth it), then length buckets."""
  pack_length = min(pack_length, max_length)
  packed = (lengths <= pack_length) if pack and pack_length >= 2 else np.zeros(len(lengths), bool)
  if lengths[packed].sum() < tokens_per_batch:  # a few rows (a search query): buckets are as
    packed[:] = False                           # small and need no wide rows
  batches = []
  if packed.any():
    members = np.flatnonzero(packed)
    packs = [members[r] for r in pack_rows(lengths[members], pack_length)]
    rows_max = batch_size or max(1, tokens_per_batch // pack_length)
    count = -(-len(packs) // rows_max)
    rows = _round_up(-(-len(packs) // count), row_multiple)
    most = max(1, pack_length // 2)  # each input has at least [CLS] and [SEP]; a fixed shape
    batches += [_Batch(packs[i:i + rows], rows, pack_length, most)
                for i in range(0, len(packs), rows)]
  rest = np.flatnonzero(~packed)
  if len(rest):
    planned = [(rest[r], length) for r, length in plan_batches(
        lengths[rest], max_length, tokens_per_batch, batch_size, compile_cost_tokens)]
    rows_per_bucket: dict[int, int] = {}
    for members, length in planned:
      rows_per_bucket[length] = max(rows_per_bucket.get(length, 0), len(members))
    batches += [_Batch([m[None] for m in members], _round_up(rows_per_bucket[length], row_multiple),
                       length, 1) for members, length in planned]
  return batches


def _assemble(batch: _Batch, ids_rows, type_rows, lengths: np.ndarray,
              pad_id: int) -> dict[str, np.ndarray]:
  shape = (batch.rows, batch.length)
  ids_BxL = np.full(shape, pad_id, np.int32)
  types_BxL, positions_BxL, packing_BxL = (np.zeros(shape, np.int32) for _ in range(3))
  starts_BxK = np.zeros((batch.rows, batch.segments), np.int32)
  for b, members in enumerate(batch.members):
    at = 0
    for k, i in enumerate(members):
      n = int(lengths[i])
      ids_BxL[b, at:at + n] = ids_rows[i]
      types_BxL[b, at:at + n] = type_rows[i]
      positions_BxL[b, at:at + n] = np.arange(n)
      packing_BxL[b, at:at + n] = k + 1
      starts_BxK[b, k] = at
      at += n
  return {"input_ids": ids_BxL, "token_type_ids": types_BxL, "position_ids": positions_BxL,
          "packing_ids": packing_BxL, "starts": starts_BxK}


def shardings(devices: Optional[Sequence[jax.Device]]):
  """(parameter placement, batch placement) for `devices`: None = the default device."""
  if not devices:
    return None, None
  if len(devices) == 1:
    return devices[0], devices[0]
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))


def place_params(params, devices: Optional[Sequence[jax.Device]] = None):
  """`params` replicated on `devices` (a no-op for parameters already placed there)."""
  where, _ = shardings(devices)
  return params if where is None else jax.device_put(params, where)


def _collect(batch: _Batch, out: dict[str, Any], lengths: np.ndarray, results: list) -> int:
  out = {k: np.asarray(v) for k, v in jax.device_get(out).items() if k in OUTPUT_KEYS}
  done = 0
  for b, members in enumerate(batch.members):
    at = 0
    for k, i in enumerate(members):
      n = int(lengths[i])
      result = {}
      if "tokens" in out:
        result["tokens"] = out["tokens"][b, at:at + n]
      if "segments" in out:
        result["segments"] = out["segments"][b, k]
      results[i] = result
      at += n
    done += len(members)
  return done


def run(forward: Forward, params, ids_rows: Sequence[Sequence[int]],
        type_rows: Sequence[Sequence[int]], *, max_length: int, pad_id: int, pack: bool = False,
        tokens_per_batch: Optional[int] = None, batch_size: Optional[int] = None,
        devices: Optional[Sequence[jax.Device]] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        compile_cost_tokens: int = COMPILE_COST_TOKENS,
        pack_length: int = PACK_LENGTH) -> list[dict[str, np.ndarray]]:
  """Runs `forward` over every input row; per input, in input order, its outputs (numpy).

  Args:
    forward: jitted `forward(params, batch) -> {"tokens": [B, L, ...], "segments": [B, K, ...]}`
      (either key optional); `batch` holds `input_ids`, `token_type_ids`, `position_ids`
      (restarting at 0 in each segment), `packing_ids` (1..K = segment, 0 = padding), all
      [B, L] int32, and `starts` [B, K] (first token of each segment; K = 1 unless packed).
    params: the forward's parameters (placed on `devices` here).
    ids_rows, type_rows: one 1-D int sequence per input, `[CLS] ... [SEP]`, <= max_length long.
    max_length: the longest row a batch may have.
    pad_id: the id padding tokens get.
    pack: pack rows of up to `pack_length` tokens several per row (when they fill a batch).
    tokens_per_batch: token budget of a batch; None (or 0) = `platform.batch_tokens` of
      the devices' platform per device.
    batch_size: fixed largest rows per batch, overriding the token budget.
    devices: shard each batch's rows over these (data parallel); None = this process's
      devices of the default backend (on CPU, inference launchers make one per core:
      `platform.cpu_device_per_core`).
    progress: called with (inputs done, inputs in all) as batches finish.
    compile_cost_tokens: padding worth paying to avoid one more compiled shape.
    pack_length: row length of packed rows (capped at `max_length`).

  Returns:
    Per input `{"tokens": out["tokens"][b, start:start + n], "segments": out["segments"][b, k]}`
    for the keys the forward returned, where (b, k) is the input's row and segment, `start`
    its first token and n its length.
  """
  lengths = np.asarray([len(r) for r in ids_rows], np.int64)
  if len(type_rows) != len(ids_rows):
    raise ValueError(f"{len(ids_rows)} id rows but {len(type_rows)} type rows")
  if lengths.size and lengths.max() > max_length:
    raise ValueError(f"a row of {lengths.max()} tokens is longer than max_length={max_length}")
  if batch_size is not None and batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be >= 1")
  devices = list(devices) if devices else jax.local_devices()
  if not tokens_per_batch:
    tokens_per_batch = platform_lib.batch_tokens(devices[0].platform) * len(devices)
  batches = plan(lengths, max_length=max_length, tokens_per_batch=tokens_per_batch,
                 batch_size=batch_size, pack=pack, pack_length=pack_length,
                 compile_cost_tokens=compile_cost_tokens,
                 row_multiple=len(devices) if devices else 1)
  params = place_params(params, devices)
  _, batch_sharding = shardings(devices)
  results: list[Optional[dict[str, np.ndarray]]] = [None] * len(lengths)
  done, pending = 0, None  # (batch, device result): batch i is fetched after i+1 is dispatched
  for batch in batches:
    arrays = _assemble(batch, ids_rows, type_rows, lengths, pad_id)
    if batch_sharding is not None:
      arrays = jax.device_put(arrays, batch_sharding)
    dispatched = (batch, forward(params, arrays))
    if pending is not None:
      done += _collect(*pending, lengths, results)
      if progress:
        progress(done, len(lengths))
    pending = dispatched
  if pending is not None:
    done += _collect(*pending, lengths, results)
    if progress:
      progress(done, len(lengths))
  return results
