"""Padding-free batches: several examples per row, each head reading its own example back.

Why it looks like this:
- Fine-tuning sentences are short (GLUE's are 10-30 tokens) and a padded batch
  computes its longest row for every example. A packed batch puts examples end
  to end in rows of `row_length` tokens (best-fit decreasing, `pack_rows`), each
  with its own `[CLS] ... [SEP]`, positions restarting at 0 and a packing id
  (1, 2, ... per row, 0 = padding) that keeps attention block-diagonal: the
  encoder computes each example exactly as alone, up to float rounding.
- The heads do not change: after the encoder, the model gathers each
  example's tokens back into the padded layout `[S, Lb]` the heads already read
  (`unpack_rows`, `unpack_positions`; `BertModel`), so labels, masks and
  per-example outputs keep their padded shapes and meaning. Only the encoder,
  which is nearly all the compute, runs packed.
- Groups: the examples of a global batch are cut into `groups` equal blocks, one
  per batch shard (device), and each block is packed into its own rows. Every
  group has the same number of rows (the most any group needs, rounded up to a
  few compiled sizes, `ROW_COUNTS`), so each device holds its own examples' rows
  and the gather back to examples never crosses devices. A training run narrows
  those sizes (and its row length) to the ones worth a compile (`plan_packing`, from a
  sample of its batches): a short run compiles one shape, a long one each common row
  count. The packing is a pure
  function of the examples in the batch (so of (seed, step) in training) and the
  group count: any number of hosts over the same devices packs identically.
- A multiple-choice example is several sequences (`[C]` lengths); each is its own
  segment and the unpack arrays are `[G, (E/G)*C]`, example-major.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Rows per group a packed batch may have: every count up to 8, then steps of at most 1/8, so
# at most ~1/8 of the rows are empty and a run compiles a handful of shapes (a batch of
# short sentences needs about the same number of rows every step).
ROW_COUNTS = tuple(range(1, 9)) + tuple(
    n * step for step in (1, 2, 4, 8, 16, 32, 64) for n in range(9, 17) if n * step > 8)
# Default tokens per packed row.
PACK_LENGTH = 128


def pack_rows(lengths: Sequence[int], capacity: int) -> list[np.ndarray]:
  """Indices per packed row (each row's lengths sum to <= `capacity`), best-fit decreasing.

  Every item goes into the open row it fills most tightly, longest first; an item
  that fits no open row opens a new one. Items longer than `capacity` must be left
  out by the caller. Deterministic (ties keep input order).
  """
  lengths = np.asarray(lengths, np.int64)
  rows: list[list[int]] = []
  open_rows: list[list[int]] = [[] for _ in range(capacity + 1)]  # free tokens -> row numbers
  for i in np.argsort(-lengths, kind="stable"):
    n = int(lengths[i])
    free = next((f for f in range(n, capacity + 1) if open_rows[f]), None)
    if free is None:
      free, r = capacity, len(rows)
      rows.append([])
    else:
      r = open_rows[free].pop()
    rows[r].append(int(i))
    open_rows[free - n].append(r)
  return [np.asarray(r, np.int64) for r in rows]


# What compiling one more train-step shape costs, in steps of the typical row count: a
# MiniLM-sized step compiles in ~7 s and runs in ~0.45 s on 2 CPU cores (BENCHMARKS.md).
COMPILE_STEPS = 25


def row_count(n: int, counts: Sequence[int] = ROW_COUNTS) -> int:
  """The smallest of `counts` >= n (`ROW_COUNTS`' beyond the table's last)."""
  return next((c for c in counts if c >= n), None) or next(
      (c for c in ROW_COUNTS if c >= n), n)


def _cheapest_counts(needed: np.ndarray, total_steps: int, row_length: int,
                     shape_cost: float) -> tuple[float, tuple[int, ...]]:
  """(tokens computed + `shape_cost` per shape, the row counts) of the cheapest plan.

  Each distinct count needed (on the `ROW_COUNTS` grid) either gets its own compiled
  shape or runs at the next larger one chosen; the cheapest split of the sorted counts
  into runs of neighbours (each run compiled at its largest) is exact by dynamic
  programming. The sample's counts are scaled to `total_steps`.
  """
  values, counts = np.unique(needed, return_counts=True)
  weights = counts * (max(total_steps, needed.size) / needed.size)
  best = [0.0] + [np.inf] * len(values)  # best[j]: values[:j] planned
  cut = [0] * (len(values) + 1)
  for j in range(1, len(values) + 1):
    for i in range(j):  # values[i:j] run at values[j-1]
      cost = best[i] + shape_cost + float(np.sum(weights[i:j])) * values[j - 1] * row_length
      if cost < best[j]:
        best[j], cut[j] = cost, i
  chosen, j = [], len(values)
  while j:
    chosen.append(int(values[j - 1]))
    j = cut[j]
  return best[-1], tuple(sorted(chosen))


def plan_packing(needed_by_length: dict[int, Sequence[int]], total_steps: int,
                 compile_steps: float = COMPILE_STEPS) -> tuple[int, tuple[int, ...]]:
  """(row length, row counts) a run compiles, the cheapest over candidate row lengths.

  `needed_by_length[W]`: the rows each batch of a (non-empty) sample of the run's batches
  needs at row length W. The cost is the tokens computed over the run plus, per compiled
  shape, `compile_steps` x the typical step's tokens. A short run (a benchmark's epoch)
  then compiles one shape, a long one (GLUE's thousands of steps) each common count; a
  longer row packs tighter but rounds up by more tokens (BERT-like short sentences, ~560
  tokens a batch: 5-6 rows of 128 against 7 rows of 96). Ties go to the shorter row.
  """
  needed = {w: np.asarray(v, np.int64) for w, v in sorted(needed_by_length.items())}
  typical = min(float(np.mean(v * w)) for w, v in needed.items())
  plans = [(_cheapest_counts(v, total_steps, w, compile_steps * typical), w)
           for w, v in needed.items()]
  (_, counts), width = min(plans, key=lambda p: p[0][0])
  return width, counts


def _plans(lengths_S: np.ndarray, groups: int, row_length: int) -> list[list[np.ndarray]]:
  per = len(lengths_S) // groups
  plans = []
  for g in range(groups):
    block = lengths_S[g * per:(g + 1) * per]
    real = np.flatnonzero(block > 0)
    plans.append([real[r] for r in pack_rows(block[real], row_length)])
  return plans


def rows_needed(lengths_S: np.ndarray, *, groups: int, row_length: int,
                counts: Sequence[int] = ROW_COUNTS) -> int:
  """The rows per group `pack` gives these sequences (before any `rows` floor)."""
  plans = _plans(np.asarray(lengths_S, np.int64), groups, row_length)
  return row_count(max(1, max(len(p) for p in plans)), counts)


def pack(seq_fields: dict[str, np.ndarray], lengths_S: np.ndarray, *, groups: int,
         row_length: int, unpack_length: int, pad_id: int = 0,
         keep: tuple[int, int] | None = None, rows: int = 0,
         counts: Sequence[int] = ROW_COUNTS) -> dict[str, np.ndarray]:
  """Packed encoder inputs for S sequences in `groups` equal blocks (block g: sequences
  g*S/G ... (g+1)*S/G - 1), of groups `keep` = [first, end) (default all: a host keeps its
  own groups; the row count is still the most any group of the batch needs).

  Args:
    seq_fields: `input_ids`, `token_type_ids` [S, >= max length] of the sequences.
    lengths_S: real tokens of each sequence; 0 = a padding example (no tokens packed;
      its unpacked view is whatever the row holds and must weigh 0).
    groups: G, the number of blocks (batch shards); S must be divisible by G.
    row_length: tokens per packed row (>= the longest sequence).
    unpack_length: Lb, the width of the padded view the heads read.
    pad_id: the id of padding tokens.

  Returns:
    `input_ids`, `token_type_ids`, `position_ids`, `packing_ids` [G*R, row_length] int32;
    `unpack_rows` [G, S/G] (row of each sequence within its group) and
    `unpack_positions` [G, S/G, Lb] (its token positions in that row, clipped to the row);
    with `keep`, only those groups' rows and entries. `rows`: at least this many rows per
    group (one shape for a whole evaluation pass). `counts`: the row counts allowed (a run's
    `plan_packing`; `ROW_COUNTS` beyond its last).
  """
  lengths_S = np.asarray(lengths_S, np.int64)
  count = len(lengths_S)
  if count % groups:
    raise ValueError(f"{count} sequences do not split into {groups} groups")
  if lengths_S.max(initial=0) > row_length:
    raise ValueError(f"a sequence of {lengths_S.max()} tokens exceeds row_length={row_length}")
  per = count // groups
  plans = _plans(lengths_S, groups, row_length)
  rows = max(rows, row_count(max(1, max(len(p) for p in plans)), counts))
  first, end = keep or (0, groups)
  plans = plans[first:end]
  shape = (len(plans) * rows, row_length)
  ids = np.full(shape, pad_id, np.int32)
  types, positions, packing = (np.zeros(shape, np.int32) for _ in range(3))
  unpack_rows = np.zeros((len(plans), per), np.int32)
  starts = np.zeros((len(plans), per), np.int64)
  src_ids, src_types = seq_fields["input_ids"], seq_fields["token_type_ids"]
  for g, plan in enumerate(plans):
    for r, members in enumerate(plan):
      at, row = 0, g * rows + r
      for k, local in enumerate(members):
        i = (first + g) * per + int(local)
        n = int(lengths_S[i])
        ids[row, at:at + n] = src_ids[i, :n]
        types[row, at:at + n] = src_types[i, :n]
        positions[row, at:at + n] = np.arange(n)
        packing[row, at:at + n] = k + 1
        unpack_rows[g, local], starts[g, local] = r, at
        at += n
  unpack_positions = np.minimum(starts[..., None] + np.arange(unpack_length),
                                row_length - 1).astype(np.int32)
  return {"input_ids": ids, "token_type_ids": types, "position_ids": positions,
          "packing_ids": packing, "unpack_rows": unpack_rows,
          "unpack_positions": unpack_positions}


# The per-group read-back arrays of a packed batch: [G, S/G, ...], not [rows, ...].
UNPACK_KEYS = ("unpack_rows", "unpack_positions")


def interleave_micro_batches(packed: dict[str, np.ndarray], micro_batches: int, *,
                             sequences_per_example: int = 1) -> dict[str, np.ndarray]:
  """`pack`'s output for G*K blocks (block g*K + i: micro-batch i of group g) -> the layout
  of one batch of G groups whose every K-th row, and every K-th example of each group, from
  the i-th, is micro-batch i (how the train step splits a batch to accumulate it). Rows
  [G*K*R, L] -> [G*R*K, L] (group g's rows r*K + i); read-back arrays [G*K, E/K*C, ...] ->
  [G, E*C, ...] (example j*K + i of group g is example j of block g*K + i), C =
  `sequences_per_example`. The identity for K = 1."""
  if micro_batches == 1:
    return packed
  k, c = micro_batches, sequences_per_example
  out = {}
  for name, x in packed.items():
    if name in UNPACK_KEYS:  # [G*K, (E/K)*C, ...]
      blocks, per = x.shape[:2]
      x = x.reshape((blocks // k, k, per // c, c) + x.shape[2:]).swapaxes(1, 2)
      out[name] = x.reshape((blocks // k, per * k) + x.shape[4:])
    else:  # rows [G*K*R, L]
      blocks = packed["unpack_rows"].shape[0]
      rows = x.shape[0] // blocks
      x = x.reshape((blocks // k, k, rows) + x.shape[1:]).swapaxes(1, 2)
      out[name] = x.reshape((-1,) + x.shape[3:])
  return out

