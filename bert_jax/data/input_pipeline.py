"""Reads prepared pretraining shards: per-host split, shuffle, repeat, mask, batch.

Why it looks like this:
- A plain index permutation over ArrayRecord files instead of a generic data
  loader: the whole state is (epoch, batch index), so a restored iterator yields
  exactly what an uninterrupted one would, and nothing has to be pickled.
- Each host owns one contiguous, disjoint range of the global record index (the
  shards in `meta.json` order, like `tfds.even_splits`), shuffles it with a
  permutation seeded by (seed, epoch, process_index) and reads
  `global_batch_size // process_count` rows per batch.
- The host's records are held in memory when they fit `cache_mb` (else read
  one by one from disk); a batch is decoded with one `frombuffer` and masked
  by `bert_jax.data.masking` over the whole batch; masks depend on (seed, epoch,
  global record index) only. A background thread keeps a couple of batches
  ready so the accelerator does not wait.
- With `drop_remainder=False` (evaluation) every host yields the same number of
  full-size batches; rows past the end are padding with `example_weights` 0.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import queue
import threading
import weakref
from typing import Optional

from array_record.python.array_record_module import ArrayRecordReader
import numpy as np

from bert_jax.data import masking
from bert_jax.data import pretraining_data
from bert_jax import tokenization
from bert_jax.errors import UserError


# Prefetch threads are stopped before the interpreter exits: a daemon thread
# killed inside the ArrayRecord reader aborts the process.
_LIVE_ITERATORS: "weakref.WeakSet[PretrainingIterator]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
  for iterator in list(_LIVE_ITERATORS):
    iterator.close()


def read_meta(data_dir: str) -> dict:
  """Reads `meta.json` of a prepared dataset (or merges per-host parts)."""
  path = os.path.join(data_dir, "meta.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  parts = sorted(glob.glob(os.path.join(data_dir, "meta.part-*-of-*.json")))
  if not parts:
    if not os.path.isdir(data_dir):
      raise FileNotFoundError(f"prepared data directory not found: {data_dir}")
    raise UserError(f"{data_dir} has no meta.json: not a prepared dataset, or preparation "
                    "did not finish (run launch/prepare_data.py)")
  expected = int(parts[0].rsplit("-of-", 1)[1].split(".")[0])
  if len(parts) != expected:
    raise UserError(f"{data_dir} has {len(parts)} of {expected} meta.part files: some hosts "
                    "have not finished preparing their part")
  metas = []
  for part in parts:
    with open(part) as f:
      metas.append(json.load(f))
  meta = dict(metas[0])
  meta["splits"] = {}
  for m in metas:
    for name, split in m["splits"].items():
      merged = meta["splits"].setdefault(name, dict(num_examples=0, num_tokens=0, shards=[]))
      merged["num_examples"] += split["num_examples"]
      merged["num_tokens"] += split["num_tokens"]
      merged["shards"] += split["shards"]
  for split in meta["splits"].values():
    split["padding_fraction"] = 1.0 - split["num_tokens"] / max(
        1, split["num_examples"] * meta["max_seq_length"])
  meta["summary"] = {k: sum(m["summary"].get(k, 0) for m in metas) for k in metas[0]["summary"]}
  return meta


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of the records a host reads: even, contiguous, disjoint."""
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


class _ShardedSource:
  """Records of several ArrayRecord shards by global index, for one host's range.

  Random single-record reads cost tens of microseconds each, so when the host's
  part of the data fits in `cache_bytes` each shard's part is read once with a
  fast sequential range read and kept in memory (about 300 bytes per sequence
  of 128: 10M sequences are ~3 GB); larger parts are read record by record.
  """

  def __init__(self, data_dir: str, shards: list[dict], host_start: int, host_end: int,
               cache_bytes: int):
    self._paths = [os.path.join(data_dir, s["file"]) for s in shards]
    for path in self._paths:
      if not os.path.exists(path):
        raise FileNotFoundError(f"shard listed in meta.json is missing: {path}")
    counts = np.array([s["num_examples"] for s in shards], np.int64)
    self._starts = np.concatenate([[0], np.cumsum(counts)])
    self._lo = np.clip(host_start - self._starts[:-1], 0, counts)
    self._hi = np.clip(host_end - self._starts[:-1], 0, counts)
    host_bytes = sum(os.path.getsize(p) * (hi - lo) / max(1, n)
                     for p, lo, hi, n in zip(self._paths, self._lo, self._hi, counts))
    self.cached = host_bytes <= cache_bytes
    self._readers = [None] * len(shards)
    self._cache = [None] * len(shards)

  def _records(self, shard: int) -> list[bytes]:
    if self._cache[shard] is None:
      reader = ArrayRecordReader(self._paths[shard])
      self._cache[shard] = reader.read(int(self._lo[shard]), int(self._hi[shard]))
      reader.close()
    return self._cache[shard]

  def _reader(self, shard: int):
    if self._readers[shard] is None:
      self._readers[shard] = ArrayRecordReader(self._paths[shard],
                                               "readahead_buffer_size:0,max_parallelism:0")
    return self._readers[shard]

  def read(self, indices: np.ndarray) -> list[bytes]:
    """The records at global `indices` (all inside this host's range), in order."""
    shard_N = np.searchsorted(self._starts, indices, side="right") - 1
    position_N = indices - self._starts[shard_N]
    out = [b""] * len(indices)
    for shard in np.unique(shard_N).tolist():
      where = np.flatnonzero(shard_N == shard)
      if self.cached:
        records = self._records(shard)
        lo = int(self._lo[shard])
        for k, p in zip(where.tolist(), position_N[where].tolist()):
          out[k] = records[p - lo]
      else:
        records = self._reader(shard).read(position_N[where].tolist())
        for k, record in zip(where.tolist(), records):
          out[k] = record
    return out


class PretrainingIterator:
  """Host-local numpy batches of a prepared dataset; checkpointable.

  `get_state()` is a small JSON-serialisable dict; after `set_state(state)` the
  iterator yields exactly the batches that followed when the state was taken.
  """

  def __init__(self, data_dir: str, split: str, *, global_batch_size: int, seed: int,
               max_predictions_per_seq: int, mask_rate: float = 0.15,
               whole_word_mask: bool = False, shuffle: bool = True,
               num_epochs: Optional[int] = None, process_index: int = 0, process_count: int = 1,
               drop_remainder: bool = True, prefetch: int = 2, cache_mb: int = 4096):
    self.meta = meta = read_meta(data_dir)
    if split not in meta["splits"]:
      raise UserError(f"{data_dir} has no split {split!r}; it has {sorted(meta['splits'])}")
    if global_batch_size % process_count:
      raise UserError(f"global batch size {global_batch_size} is not divisible by "
                      f"{process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    self.batch_size = global_batch_size // process_count
    self.mode = meta["mode"]
    self.max_seq_length = meta["max_seq_length"]
    self._special = meta["special_ids"]
    self._dtype = np.dtype(meta.get("id_dtype", "uint16"))
    shards = meta["splits"][split]["shards"]
    total = sum(s["num_examples"] for s in shards)
    self._start, end = host_range(total, process_index, process_count)
    self._num_local = end - self._start
    self._source = _ShardedSource(data_dir, shards, self._start, end, cache_mb << 20)
    smallest, largest = total // process_count, -(-total // process_count)
    self.batches_per_epoch = (smallest // self.batch_size if drop_remainder
                              else -(-largest // self.batch_size))
    if self.batches_per_epoch == 0:
      raise UserError(f"split {split!r} of {data_dir} has {total} examples: too few for "
                      f"{process_count} host(s) with batches of {self.batch_size}")
    self._seed, self._shuffle, self._num_epochs = seed, shuffle, num_epochs
    self._process_index = process_index
    self._drop_remainder = drop_remainder
    word_start = None
    if whole_word_mask:
      tokenizer = tokenization.load_tokenizer(os.path.join(data_dir, meta["tokenizer"]))
      word_start = np.asarray(tokenizer.word_start_mask(np.arange(meta["vocab_size"])), bool)
    self._masker = masking.Masker(
        vocab_size=meta["vocab_size"], mask_id=self._special["mask"],
        special_ids=self._special.values(), max_predictions=max_predictions_per_seq,
        rate=mask_rate, word_start_table=word_start, whole_word=whole_word_mask, seed=seed)
    self._perm_epoch, self._perm = None, None
    self._prefetch = prefetch
    self._epoch, self._batch = 0, 0
    self._thread, self._queue, self._stop = None, None, None

  # -- state

  def get_state(self) -> dict:
    return dict(epoch=self._epoch, batch_index=self._batch)

  def set_state(self, state: dict) -> None:
    self._stop_thread()
    self._epoch, self._batch = int(state["epoch"]), int(state["batch_index"])

  # -- iteration

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    epoch, batch = self._epoch, self._batch
    if batch >= self.batches_per_epoch:
      epoch, batch = epoch + 1, 0
    if self._num_epochs is not None and epoch >= self._num_epochs:
      raise StopIteration
    if self._prefetch > 0:
      if self._thread is None:
        self._start_thread(epoch, batch)
      item = self._queue.get()
      if isinstance(item, BaseException):
        self._stop_thread()
        raise item
      (epoch, batch), out = item
    else:
      out = self.batch_at(epoch, batch)
    self._epoch, self._batch = epoch, batch + 1
    return out

  def _start_thread(self, epoch: int, batch: int) -> None:
    self._queue, self._stop = queue.Queue(self._prefetch), threading.Event()
    stop, out_queue = self._stop, self._queue
    per_epoch, num_epochs = self.batches_per_epoch, self._num_epochs
    # A weak reference: an iterator dropped without close() is collected and
    # its __del__ stops the thread.
    iterator_ref = weakref.ref(self)

    def work():
      nonlocal epoch, batch
      try:
        while num_epochs is None or epoch < num_epochs:
          iterator = iterator_ref()
          if iterator is None:
            return
          item = ((epoch, batch), iterator.batch_at(epoch, batch))
          del iterator
          batch += 1
          if batch >= per_epoch:
            epoch, batch = epoch + 1, 0
          while not stop.is_set():
            try:
              out_queue.put(item, timeout=0.1)
              break
            except queue.Full:
              pass
          if stop.is_set():
            return
      except BaseException as e:  # pylint: disable=broad-except
        out_queue.put(e)

    self._thread = threading.Thread(target=work, daemon=True, name="pretraining-prefetch")
    self._thread.start()
    _LIVE_ITERATORS.add(self)

  def _stop_thread(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None

  def close(self) -> None:
    """Stops the prefetch thread; iterating again restarts it."""
    self._stop_thread()

  def __del__(self):
    try:
      self._stop_thread()
    except Exception:  # pylint: disable=broad-except
      pass

  # -- the pure part: a batch is a function of (epoch, batch index)

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._perm_epoch != epoch:
      if self._shuffle:
        rng = np.random.default_rng([self._seed, epoch, self._process_index])
        self._perm = rng.permutation(self._num_local).astype(np.int64)
      else:
        self._perm = np.arange(self._num_local, dtype=np.int64)
      self._perm_epoch = epoch
    return self._perm

  def batch_at(self, epoch: int, batch: int) -> dict[str, np.ndarray]:
    """The batch number `batch` of epoch `epoch` (no iterator state involved)."""
    perm = self._permutation(epoch)
    local = perm[batch * self.batch_size:(batch + 1) * self.batch_size]
    num_real = len(local)
    if num_real < self.batch_size:  # Only with drop_remainder=False: pad with row 0.
      local = np.concatenate([local, np.zeros(self.batch_size - num_real, np.int64)])
    indices = self._start + local
    if self._num_local:
      records = self._source.read(indices)
    else:
      records = [np.zeros(1, self._dtype).tobytes()] * self.batch_size
    out = pretraining_data.decode_records(
        records, dtype=self._dtype, max_seq_length=self.max_seq_length, mode=self.mode,
        pad_id=self._special["pad"], cls_id=self._special["cls"], sep_id=self._special["sep"])
    out.update(self._masker(out["input_ids"], indices, epoch))
    if not self._drop_remainder:
      weights = (np.arange(self.batch_size) < num_real).astype(np.float32)
      out["masked_weights"] = out["masked_weights"] * weights[:, None]
      out["example_weights"] = weights
    return out


def make_pretraining_iterator(data_dir: str, split: str, *, global_batch_size: int, seed: int,
                              max_predictions_per_seq: int, mask_rate: float = 0.15,
                              whole_word_mask: bool = False, shuffle: bool = True,
                              num_epochs: Optional[int] = None,
                              process_index: Optional[int] = None,
                              process_count: Optional[int] = None,
                              drop_remainder: bool = True, prefetch: int = 2,
                              cache_mb: int = 4096) -> PretrainingIterator:
  """The host-local iterator over a prepared dataset (see `PretrainingIterator`).

  Args:
    data_dir: output directory of `launch/prepare_data.py`.
    split: 'train' or 'eval'.
    global_batch_size: rows per step over all hosts; each host yields
      `global_batch_size // process_count` rows.
    seed: shuffling and masking seed.
    max_predictions_per_seq: P, the prediction slots per row.
    mask_rate: fraction of tokens selected for prediction (0.15 .. 0.4).
    whole_word_mask: select whole words.
    shuffle: shuffle the records every epoch.
    num_epochs: stop after this many epochs; None repeats forever.
    process_index: this host; default `jax.process_index()`.
    process_count: number of hosts; default `jax.process_count()`.
    drop_remainder: drop the last partial batch of an epoch; if False it is
      padded and every batch has `example_weights`.
    prefetch: batches prepared ahead in a background thread (0: none).
    cache_mb: keep this host's records in memory when they fit in this many
      MB (fast); otherwise read each record from disk.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return PretrainingIterator(
      data_dir, split, global_batch_size=global_batch_size, seed=seed,
      max_predictions_per_seq=max_predictions_per_seq, mask_rate=mask_rate,
      whole_word_mask=whole_word_mask, shuffle=shuffle, num_epochs=num_epochs,
      process_index=process_index, process_count=process_count,
      drop_remainder=drop_remainder, prefetch=prefetch, cache_mb=cache_mb)
