"""Reads prepared pretraining shards: one global order, host rows, mask, batch.

Why it looks like this:
- A plain index order over ArrayRecord files instead of a generic data loader:
  the whole state is one stream position, so a restored iterator yields
  exactly what an uninterrupted one would, and nothing has to be pickled.
- The order is global (`bert_jax.data.stream.GlobalOrder`): epoch `e` is a
  permutation of all records seeded by (seed, e), global batch `b` is stream
  positions `[b*B, (b+1)*B)`, and host `h` of `H` reads rows
  `[h*B/H, (h+1)*B/H)` of it by random access. The global batches (and the
  saved state) are the same for any number of hosts, so a run resumed on
  another slice shape continues the same stream.
- Every host may be asked for any record: the split is held in memory when it
  fits `cache_mb` (else read record by record from disk); a batch is decoded
  with one `frombuffer` and masked by `bert_jax.data.masking` over the whole
  batch; masks depend on (seed, epoch, record index) only. A background thread
  keeps a couple of batches ready so the accelerator does not wait.
- Training batches are always full and may straddle two epochs. With
  `drop_remainder=False` (evaluation) batches stop at each epoch's end: one
  exact pass, the last global batch padded with `example_weights` 0 rows.
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
from bert_jax.data import prepare_pretraining
from bert_jax.data import stream
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


class _ShardedSource:
  """Records of several ArrayRecord shards by global index (any record of the split).

  Random single-record reads cost tens of microseconds each, so when the whole
  split fits in `cache_bytes` each shard is read once with a fast sequential
  range read and kept in memory (about 300 bytes per sequence of 128: 10M
  sequences are ~3 GB); larger splits are read record by record, with one range
  read where a shard's requested records are consecutive (unshuffled reading).
  """

  def __init__(self, data_dir: str, shards: list[dict], cache_bytes: int):
    self._paths = [os.path.join(data_dir, s["file"]) for s in shards]
    for path in self._paths:
      if not os.path.exists(path):
        raise FileNotFoundError(f"shard listed in meta.json is missing: {path}")
    self._counts = np.array([s["num_examples"] for s in shards], np.int64)
    self._starts = np.concatenate([[0], np.cumsum(self._counts)])
    self.cached = sum(os.path.getsize(p) for p in self._paths) <= cache_bytes
    self._readers = [None] * len(shards)
    self._cache = [None] * len(shards)

  def _records(self, shard: int) -> list[bytes]:
    if self._cache[shard] is None:
      reader = ArrayRecordReader(self._paths[shard])
      self._cache[shard] = reader.read(0, int(self._counts[shard]))
      reader.close()
    return self._cache[shard]

  def _reader(self, shard: int):
    if self._readers[shard] is None:
      self._readers[shard] = ArrayRecordReader(self._paths[shard],
                                               "readahead_buffer_size:0,max_parallelism:0")
    return self._readers[shard]

  def read(self, indices: np.ndarray) -> list[bytes]:
    """The records at global `indices`, in order."""
    shard_N = np.searchsorted(self._starts, indices, side="right") - 1
    position_N = indices - self._starts[shard_N]
    out = [b""] * len(indices)
    for shard in np.unique(shard_N).tolist():
      where = np.flatnonzero(shard_N == shard)
      positions = position_N[where]
      if self.cached:
        records = self._records(shard)
        for k, p in zip(where.tolist(), positions.tolist()):
          out[k] = records[p]
        continue
      first = int(positions[0])
      if np.array_equal(positions, np.arange(first, first + len(positions))):
        records = self._reader(shard).read(first, first + len(positions))
      else:
        records = self._reader(shard).read(positions.tolist())
      for k, record in zip(where.tolist(), records):
        out[k] = record
    return out


class PretrainingIterator:
  """Host-local numpy batches of a prepared dataset; checkpointable.

  `get_state()` is a small JSON-serialisable dict, the same on every host and
  for any number of hosts; after `set_state(state)` the iterator yields exactly
  the batches that followed when the state was taken (with any process count).
  """

  def __init__(self, data_dir: str, split: str, *, global_batch_size: int, seed: int,
               max_predictions_per_seq: int, mask_rate: float = 0.15,
               whole_word_mask: bool = False, shuffle: bool = True,
               num_epochs: Optional[int] = None, process_index: int = 0, process_count: int = 1,
               drop_remainder: bool = True, prefetch: int = 2, cache_mb: int = 4096):
    self.meta = meta = read_meta(data_dir)
    if split not in meta["splits"]:
      raise UserError(f"{data_dir} has no split {split!r}; it has {sorted(meta['splits'])}")
    if global_batch_size <= 0 or global_batch_size % process_count:
      raise UserError(f"global batch size {global_batch_size} is not divisible by "
                      f"{process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    self.batch_size = global_batch_size // process_count
    self.global_batch_size = global_batch_size
    self.mode = meta["mode"]
    self.max_seq_length = meta["max_seq_length"]
    self._special = meta["special_ids"]
    self._dtype = np.dtype(meta.get("id_dtype", "uint16"))
    shards = meta["splits"][split]["shards"]
    self.num_records = total = sum(s["num_examples"] for s in shards)
    if drop_remainder and total < global_batch_size:
      raise UserError(f"split {split!r} of {data_dir} has {total} examples: fewer than one "
                      f"global batch of {global_batch_size}")
    self.order = stream.GlobalOrder(total, global_batch_size, seed, shuffle)
    self._source = _ShardedSource(data_dir, shards, cache_mb << 20)
    # Full batches straddle epochs (nothing dropped); padded batches stop at each epoch's end.
    self.batches_per_epoch = (total // global_batch_size if drop_remainder
                              else -(-total // global_batch_size))
    self._row_offset = process_index * self.batch_size
    self._num_epochs = num_epochs
    self._drop_remainder = drop_remainder
    word_start = None
    if whole_word_mask:
      tokenizer = tokenization.load_tokenizer(os.path.join(data_dir, meta["tokenizer"]))
      word_start = np.asarray(tokenizer.word_start_mask(np.arange(meta["vocab_size"])), bool)
    self._masker = masking.Masker(
        vocab_size=meta["vocab_size"], mask_id=self._special["mask"],
        special_ids=self._special.values(), max_predictions=max_predictions_per_seq,
        rate=mask_rate, word_start_table=word_start, whole_word=whole_word_mask, seed=seed)
    self._prefetch = prefetch
    self._position = 0  # the stream position of the next global batch
    self._thread, self._queue, self._stop = None, None, None

  # -- state

  def get_state(self) -> dict:
    """{"position": stream position of the next global batch, "epoch": its epoch}."""
    return dict(position=self._position, epoch=self._position // self.num_records)

  def set_state(self, state: dict) -> None:
    position = state.get("position") if isinstance(state, dict) else None
    if not isinstance(position, int) or position < 0:
      if isinstance(state, dict) and "batch_index" in state:
        raise UserError(f"input-iterator state {state} is in the old per-host format (each host "
                        "shuffled its own part of the data); this version cannot continue that "
                        "stream: resume with the version that wrote it, or start a new workdir")
      raise UserError(f"input-iterator state {state!r} is not valid: expected "
                      "{'position': <non-negative int>}")
    self._stop_thread()
    self._position = position

  # -- iteration

  def _span(self, position: int) -> Optional[tuple[int, int]]:
    """(start, end of its real rows) of the global batch at `position`; None past the end."""
    if self._drop_remainder:
      end = position + self.global_batch_size
      limit = None if self._num_epochs is None else self._num_epochs * self.num_records
      return None if limit is not None and end > limit else (position, end)
    epoch = position // self.num_records
    if self._num_epochs is not None and epoch >= self._num_epochs:
      return None
    return position, min(position + self.global_batch_size, (epoch + 1) * self.num_records)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    span = self._span(self._position)
    if span is None:
      raise StopIteration
    if self._prefetch > 0:
      if self._thread is None:
        self._start_thread(self._position)
      item = self._queue.get()
      if isinstance(item, BaseException):
        self._stop_thread()
        raise item
      (_, end), out = item
    else:
      (_, end), out = span, self.batch_at(*span)
    self._position = end
    return out

  def _start_thread(self, position: int) -> None:
    self._queue, self._stop = queue.Queue(self._prefetch), threading.Event()
    stop, out_queue = self._stop, self._queue
    # A weak reference: an iterator dropped without close() is collected and
    # its __del__ stops the thread.
    iterator_ref = weakref.ref(self)

    def work():
      nonlocal position
      try:
        while True:
          iterator = iterator_ref()
          if iterator is None:
            return
          span = iterator._span(position)  # pylint: disable=protected-access
          if span is None:
            return
          item = (span, iterator.batch_at(*span))
          del iterator
          position = span[1]
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

  # -- the pure part: a batch is a function of its stream positions

  def batch_at(self, start: int, end: int) -> dict[str, np.ndarray]:
    """This host's rows of the global batch at stream positions [start, start + B).

    Positions from `end` on are padding (`example_weights` 0; only when
    `drop_remainder=False`, at an epoch's end).
    """
    first = start + self._row_offset
    positions = np.arange(first, first + self.batch_size, dtype=np.int64)
    num_real = int(np.clip(end - first, 0, self.batch_size))
    if num_real < self.batch_size:  # Pad with the batch's last real record.
      positions[num_real:] = end - 1
    indices, epochs = self.order.records(positions)
    records = self._source.read(indices)
    out = prepare_pretraining.decode_records(
        records, dtype=self._dtype, max_seq_length=self.max_seq_length, mode=self.mode,
        pad_id=self._special["pad"], cls_id=self._special["cls"], sep_id=self._special["sep"])
    out.update(self._masker(out["input_ids"], indices, epochs))
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
      `global_batch_size // process_count` rows, block `process_index` of the
      global batch.
    seed: shuffling and masking seed.
    max_predictions_per_seq: P, the prediction slots per row.
    mask_rate: fraction of tokens selected for prediction (0.15 .. 0.4).
    whole_word_mask: select whole words.
    shuffle: shuffle the records every epoch.
    num_epochs: stop after this many epochs; None repeats forever.
    process_index: this host; default `jax.process_index()`.
    process_count: number of hosts; default `jax.process_count()`.
    drop_remainder: True: every batch is full, a batch may straddle two epochs
      (with `num_epochs`, the last partial batch is dropped). False: an
      epoch's last batch is padded and every batch has `example_weights`
      (evaluation: an exact pass over every example).
    prefetch: batches prepared ahead in a background thread (0: none).
    cache_mb: keep the split's records in memory when they fit in this many
      MB (fast; every host may be asked for any record); otherwise read each
      record from disk.
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
