"""The order of a training stream: a pure function of (seed, global position).

Why: a run must see the same global batches whatever the number of hosts, and a
job preempted on one slice shape must continue its stream on another. So the
order is defined globally: epoch `e` is a permutation of all records seeded by
(seed, e); the stream is those permutations end to end; global batch `b` is
stream positions `[b*B, (b+1)*B)` (a batch may straddle two epochs). Host `h` of
`H` reads rows `[h*B/H, (h+1)*B/H)` of each global batch, which is the order in
which `sharding.make_global_batch` concatenates the hosts' rows. The only state
is the stream position (or the number of global batches consumed), so a
checkpoint written with `H` processes restores with any other count.

Up to `max_stored` records (4M: 32 MB, ~0.3 s per epoch) the permutation is
numpy's uniform shuffle seeded by (seed, epoch), kept for two epochs. Above, a
stored permutation would cost 0.8 GB per host and ~9 s per epoch at 100M
records, so it is computed instead: a keyed Feistel network over a domain of
`m x n >= num_records` (m ~ sqrt(num_records)) with cycle walking is a
bijection of [0, num_records) that maps each position on its own, in ~60 us per
batch of 256 and no memory.
"""

from __future__ import annotations

import math

import numpy as np

from bert_jax.data import masking
from bert_jax.errors import UserError

_ROUNDS = 6
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0x94D049BB133111EB)
_mix = masking.mix64


class GlobalOrder:
  """Which records (and from which epoch) make up each global batch."""

  def __init__(self, num_records: int, global_batch_size: int, seed: int,
               shuffle: bool = True, *, max_stored: int = 1 << 22):
    if num_records <= 0:
      raise UserError("the training data has no records")
    if global_batch_size < 1:
      raise UserError(f"config.batch_size={global_batch_size} must be >= 1")
    self.num_records = int(num_records)
    self.global_batch_size = int(global_batch_size)
    self.seed = int(seed)
    self.shuffle = shuffle
    self._stored = self.num_records <= max_stored
    self._cache: dict[int, np.ndarray] = {}  # epoch -> stored permutation (the last two)
    # The Feistel domain: (left in [0, m), right in [0, n)), m * n >= num_records.
    self._m = max(1, math.isqrt(self.num_records - 1) + 1)
    self._n = -(-self.num_records // self._m)
    self._keys: dict[int, np.ndarray] = {}  # epoch -> round keys

  def _round_keys(self, epoch: int) -> np.ndarray:
    keys = self._keys.get(epoch)
    if keys is None:
      with np.errstate(over="ignore"):
        base = _mix(np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(7))
        base = _mix(base ^ (np.uint64(epoch) * _M2))
        keys = _mix(base + np.arange(1, _ROUNDS + 1, dtype=np.uint64) * _GOLDEN)
      if len(self._keys) > 8:
        self._keys.clear()
      self._keys[epoch] = keys
    return keys

  def _feistel(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """One pass of the keyed bijection of [0, m*n) (uint64 in, uint64 out)."""
    a, b = np.uint64(self._m), np.uint64(self._n)
    left, right = x // b, x % b  # left in Z_a, right in Z_b
    with np.errstate(over="ignore"):
      for key in keys:
        # (L, R) in Z_a x Z_b -> (R, (L + F(R)) mod a) in Z_b x Z_a: a bijection.
        f = _mix(right * _GOLDEN ^ key) % a
        left, right = right, (left + f) % a
        a, b = b, a
    return left * b + right  # an even number of rounds: back to Z_m x Z_n

  def _permute(self, offsets: np.ndarray, epoch: int) -> np.ndarray:
    """Record index at each offset of `epoch`."""
    if self._stored:
      perm = self._cache.get(epoch)
      if perm is None:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_records)
        if len(self._cache) >= 2:
          self._cache.pop(min(self._cache))
        self._cache[epoch] = perm
      return perm[offsets]
    # Cycle walking: apply the bijection of [0, m*n) until the result is a record.
    keys = self._round_keys(epoch)
    y = self._feistel(offsets.astype(np.uint64), keys)
    outside = np.flatnonzero(y >= self.num_records)
    while len(outside):
      y[outside] = self._feistel(y[outside], keys)
      outside = outside[y[outside] >= self.num_records]
    return y.astype(np.int64)

  def records(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(record indices, epochs) at any stream positions (int64 arrays, same shape)."""
    pos = np.asarray(positions, np.int64)
    epochs = pos // self.num_records
    offsets = pos - epochs * self.num_records
    if not self.shuffle:
      return offsets, epochs
    records = np.empty_like(pos)
    first, last = (int(epochs.min()), int(epochs.max())) if pos.size else (0, -1)
    for epoch in range(first, last + 1):
      sel = epochs == epoch if first != last else slice(None)
      records[sel] = self._permute(offsets[sel], epoch)
    return records, epochs

  def permutation(self, epoch: int) -> np.ndarray:
    """Record indices of `epoch` in stream order (int64 [num_records])."""
    if not self.shuffle or self._stored:
      return self.positions(epoch * self.num_records, (epoch + 1) * self.num_records)[0]
    start = epoch * self.num_records
    chunk = 1 << 20
    return np.concatenate([
        self.records(np.arange(s, min(s + chunk, start + self.num_records)))[0]
        for s in range(start, start + self.num_records, chunk)])

  def positions(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(record indices, epochs) of stream positions [start, stop)."""
    return self.records(np.arange(start, stop, dtype=np.int64))

  def host_rows(self, batch_index: int, process_index: int = 0,
                process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(record indices, epochs) of this host's rows of global batch `batch_index`."""
    if self.global_batch_size % process_count:
      raise UserError(f"batch size {self.global_batch_size} must be divisible by the "
                      f"{process_count} processes")
    per_host = self.global_batch_size // process_count
    start = batch_index * self.global_batch_size + process_index * per_host
    return self.positions(start, start + per_host)
