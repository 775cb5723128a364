"""Input pipeline over prepared data: batch contract, host split, exact resume."""

import collections
import gc
import json
import random
import threading
import time

import numpy as np
import pytest

from bert_jax.data import input_pipeline
from bert_jax.data import pretraining_data as pd
from bert_jax.data import text_corpus
from bert_jax.errors import UserError

WORDS = ("the cat dog sat on a mat by river town red blue green went to market and saw big "
         "small house old new tree hill").split()


def _prepare(root, mode, num_docs=120):
  rng = random.Random(0)
  corpus = root / f"corpus-{mode}.txt"
  with open(corpus, "w") as f:
    for _ in range(num_docs):
      for _ in range(rng.randint(1, 6)):
        f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n")
      f.write("\n")
  vocab = root / "vocab"
  vocab.mkdir(exist_ok=True)
  (vocab / "vocab.txt").write_text(
      "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ed"]) + "\n")
  (vocab / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  stats = text_corpus.ReadStats()
  options = pd.PrepareOptions(max_seq_length=24, mode=mode, eval_fraction=0.1,
                              num_output_shards=3, chunk_bytes=2000)
  out = root / mode
  pd.prepare(text_corpus.read_documents([str(corpus)], stats), stats, str(vocab), str(out), options)
  return str(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("ip")
  return {mode: _prepare(root, mode) for mode in ("nsp", "packed")}


def _it(path, **kwargs):
  defaults = dict(global_batch_size=8, seed=3, max_predictions_per_seq=4, process_index=0,
                  process_count=1)
  defaults.update(kwargs)
  return input_pipeline.make_pretraining_iterator(path, "train", **defaults)


def _rows(batch):
  """The unmasked rows of a batch as bytes (identity of the underlying records)."""
  ids = batch["input_ids"].copy()
  rows, slots = np.nonzero(batch["masked_weights"])
  ids[rows, batch["masked_positions"][rows, slots]] = batch["masked_ids"][rows, slots]
  return [r.tobytes() for r in ids]


def _same(a, b):
  return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["nsp", "packed"])
def test_batch_contract(data, mode):
  batch = next(_it(data[mode], prefetch=0))
  common = dict(input_ids=(np.int32, (8, 24)), token_type_ids=(np.int32, (8, 24)),
                attention_mask=(np.int32, (8, 24)), masked_positions=(np.int32, (8, 4)),
                masked_ids=(np.int32, (8, 4)), masked_weights=(np.float32, (8, 4)))
  extra = (dict(next_sentence_labels=(np.int32, (8,))) if mode == "nsp" else
           dict(position_ids=(np.int32, (8, 24)), packing_ids=(np.int32, (8, 24))))
  expected = {**common, **extra}
  assert sorted(batch) == sorted(expected)
  for key, (dtype, shape) in expected.items():
    assert batch[key].dtype == dtype and batch[key].shape == shape, key
  assert (batch["input_ids"][:, 0] == 2).all()        # every row starts with [CLS]
  assert ((batch["input_ids"] == 0) == (batch["attention_mask"] == 0)).all()
  assert batch["masked_weights"].sum() > 8
  if mode == "packed":
    real = batch["attention_mask"] == 1
    assert ((batch["packing_ids"] > 0) == real).all()
    starts = (batch["position_ids"] == 0) & real
    np.testing.assert_array_equal(batch["input_ids"][starts], 2)
  else:
    assert set(np.unique(batch["next_sentence_labels"])) <= {0, 1}
    assert (batch["token_type_ids"].sum(1) > 0).all()


def test_two_hosts_read_disjoint_halves(data):
  def epoch_rows(**kwargs):
    it = _it(data["nsp"], global_batch_size=8, shuffle=False, num_epochs=1,
             drop_remainder=False, prefetch=0, **kwargs)
    rows = []
    for batch in it:
      rows += [r for r, w in zip(_rows(batch), batch["example_weights"]) if w]
    return rows, it.batches_per_epoch

  host0, n0 = epoch_rows(process_index=0, process_count=2)
  host1, n1 = epoch_rows(process_index=1, process_count=2)
  everything, _ = epoch_rows()
  assert n0 == n1                       # hosts stay in step
  total = input_pipeline.read_meta(data["nsp"])["splits"]["train"]["num_examples"]
  assert len(host0) + len(host1) == len(everything) == total
  assert sorted(host0 + host1) == sorted(everything)
  assert abs(len(host0) - len(host1)) <= 1
  # Disjoint record indices, not just distinct contents.
  assert input_pipeline.host_range(total, 0, 2)[1] == input_pipeline.host_range(total, 1, 2)[0]
  # Host batches are global_batch_size // process_count rows.
  batch = next(_it(data["nsp"], global_batch_size=8, process_index=1, process_count=2))
  assert batch["input_ids"].shape[0] == 4


@pytest.mark.parametrize("prefetch", [0, 2])
def test_restore_yields_identical_batches(data, prefetch):
  reference = _it(data["packed"], prefetch=prefetch)
  per_epoch = reference.batches_per_epoch
  stream = [next(reference) for _ in range(per_epoch * 2 + 3)]   # crosses epoch boundaries
  for stop in (0, 1, per_epoch - 1, per_epoch, per_epoch + 2):
    it = _it(data["packed"], prefetch=prefetch)
    for _ in range(stop):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    resumed = _it(data["packed"], prefetch=prefetch)
    resumed.set_state(state)
    for expected in stream[stop:stop + 4]:
      assert _same(next(resumed), expected)
    resumed.close()
  reference.close()


@pytest.mark.parametrize("process_index", [0, 1])
def test_disk_reads_equal_memory_cache(data, process_index):
  kwargs = dict(prefetch=0, process_index=process_index, process_count=2)
  cached, uncached = _it(data["nsp"], **kwargs), _it(data["nsp"], cache_mb=0, **kwargs)
  assert cached._source.cached and not uncached._source.cached
  for _ in range(cached.batches_per_epoch + 2):
    assert _same(next(cached), next(uncached))


def test_dropped_iterator_stops_its_thread(data):
  def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "pretraining-prefetch"]

  before = len(prefetch_threads())
  it = _it(data["nsp"], prefetch=2)
  next(it)
  assert len(prefetch_threads()) == before + 1
  del it
  gc.collect()
  deadline = time.time() + 5
  while len(prefetch_threads()) > before and time.time() < deadline:
    time.sleep(0.05)
  assert len(prefetch_threads()) == before


def test_epochs_reshuffle_and_remask(data):
  it = _it(data["nsp"], prefetch=0)
  n = it.batches_per_epoch
  epoch0 = [next(it) for _ in range(n)]
  epoch1 = [next(it) for _ in range(n)]
  rows0 = [r for b in epoch0 for r in _rows(b)]
  rows1 = [r for b in epoch1 for r in _rows(b)]
  assert rows0 != rows1
  # The same records, except the few dropped at each epoch's end (drop_remainder).
  total = input_pipeline.read_meta(data["nsp"])["splits"]["train"]["num_examples"]
  dropped = total - len(rows0)
  assert dropped < 8
  common = collections.Counter(rows0) & collections.Counter(rows1)
  assert sum(common.values()) >= len(rows0) - dropped
  positions0 = np.concatenate([b["masked_positions"] for b in epoch0])
  positions1 = np.concatenate([b["masked_positions"] for b in epoch1])
  assert not np.array_equal(positions0, positions1)
  assert it.get_state() == {"epoch": 1, "batch_index": n}


def test_num_epochs_and_padded_last_batch(data):
  meta = input_pipeline.read_meta(data["nsp"])
  total = meta["splits"]["eval"]["num_examples"]
  it = input_pipeline.make_pretraining_iterator(
      data["nsp"], "eval", global_batch_size=8, seed=0, max_predictions_per_seq=4,
      shuffle=False, num_epochs=1, drop_remainder=False, process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == -(-total // 8)
  weights = np.concatenate([b["example_weights"] for b in batches])
  assert weights.sum() == total
  last = batches[-1]
  assert (last["masked_weights"][last["example_weights"] == 0] == 0).all()


def test_whole_word_masking_uses_the_tokenizer(data):
  batch = next(_it(data["nsp"], whole_word_mask=True, mask_rate=0.3, prefetch=0))
  assert batch["masked_weights"].sum() > 0


def test_errors(data, tmp_path):
  with pytest.raises(UserError, match="no split"):
    input_pipeline.PretrainingIterator(data["nsp"], "test", global_batch_size=8, seed=0,
                                       max_predictions_per_seq=4)
  with pytest.raises(UserError, match="divisible"):
    _it(data["nsp"], global_batch_size=7, process_count=2)
  with pytest.raises(FileNotFoundError):
    input_pipeline.read_meta(str(tmp_path / "missing"))
  with pytest.raises(UserError, match="no meta.json"):
    input_pipeline.read_meta(str(tmp_path))
