"""The order of a training stream: a pure function of (seed, global position).

Why: a run must see the same global batches whatever the number of hosts, and a
job preempted on one slice shape must continue its stream on another. So the
order is defined globally: epoch `e` is a permutation of all records seeded by
(seed, e); the stream is those permutations end to end; global batch `b` is
stream positions `[b*B, (b+1)*B)` (a batch may straddle two epochs). Host `h` of
`H` reads rows `[h*B/H, (h+1)*B/H)` of each global batch, which is the order in
which `sharding.make_global_batch` concatenates the hosts' rows. The only state
is the number of global batches consumed, so a checkpoint written with `H`
processes restores with any other count.
"""

from __future__ import annotations

import numpy as np

from bert_jax.errors import UserError


class GlobalOrder:
  """Which records (and from which epoch) make up each global batch."""

  def __init__(self, num_records: int, global_batch_size: int, seed: int,
               shuffle: bool = True):
    if num_records <= 0:
      raise UserError("the training data has no records")
    self.num_records = int(num_records)
    self.global_batch_size = int(global_batch_size)
    self.seed = int(seed)
    self.shuffle = shuffle
    self._cache: dict[int, np.ndarray] = {}  # epoch -> permutation (the last two epochs)

  def permutation(self, epoch: int) -> np.ndarray:
    """Record indices of `epoch` in stream order (int64 [num_records])."""
    perm = self._cache.get(epoch)
    if perm is None:
      if self.shuffle:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_records)
      else:
        perm = np.arange(self.num_records, dtype=np.int64)
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      self._cache[epoch] = perm
    return perm

  def positions(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(record indices, epochs) of stream positions [start, stop)."""
    pos = np.arange(start, stop, dtype=np.int64)
    epochs = pos // self.num_records
    offsets = pos - epochs * self.num_records
    records = np.empty_like(pos)
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      records[sel] = self.permutation(int(epoch))[offsets[sel]]
    return records, epochs

  def host_rows(self, batch_index: int, process_index: int = 0,
                process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(record indices, epochs) of this host's rows of global batch `batch_index`."""
    if self.global_batch_size % process_count:
      raise UserError(f"batch size {self.global_batch_size} must be divisible by the "
                      f"{process_count} processes")
    per_host = self.global_batch_size // process_count
    start = batch_index * self.global_batch_size + process_index * per_host
    return self.positions(start, start + per_host)
