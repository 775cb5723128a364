"""Input pipeline over prepared data: batch contract, host split, exact resume."""

import collections
import gc
import json
import os
import random
import threading
import time

from array_record.python.array_record_module import ArrayRecordReader
import numpy as np
import pytest

from bert_jax.data import pretrain_pipeline
from bert_jax.data import prepare_pretraining as pd
from bert_jax.data import text_corpus
from bert_jax.errors import UserError

WORDS = ("the cat dog sat on a mat by river town red blue green went to market and saw big "
         "small house old new tree hill").split()
# Words of two WordPiece pieces (cat ##s, ...) in the corpus, not in the vocabulary.
PLURALS = ["cats", "dogs", "towns", "trees", "hills"]


def _prepare(root, mode, num_docs=120):
  rng = random.Random(0)
  corpus = root / f"corpus-{mode}.txt"
  with open(corpus, "w") as f:
    for _ in range(num_docs):
      for _ in range(rng.randint(1, 6)):
        f.write(" ".join(rng.choice(WORDS + PLURALS) for _ in range(rng.randint(3, 12))) + "\n")
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
  return pretrain_pipeline.make_pretraining_iterator(path, "train", **defaults)


def _rows(batch):
  """The unmasked rows of a batch as bytes (identity of the underlying records)."""
  ids = batch["input_ids"].copy()
  rows, slots = np.nonzero(batch["masked_weights"])
  ids[rows, batch["masked_positions"][rows, slots]] = batch["masked_ids"][rows, slots]
  return [r.tobytes() for r in ids]


def _file_rows(path):
  """input_ids rows of the train split read straight from its shards, in meta.json order."""
  meta = pretrain_pipeline.read_meta(path)
  records = []
  for shard in meta["splits"]["train"]["shards"]:
    reader = ArrayRecordReader(os.path.join(path, shard["file"]))
    records += reader.read(0, reader.num_records())
    reader.close()
  ids = pd.decode_records(records, dtype=np.dtype(meta.get("id_dtype", "uint16")),
                          max_seq_length=meta["max_seq_length"], mode=meta["mode"],
                          **{f"{k}_id": meta["special_ids"][k] for k in ("pad", "cls", "sep")})
  return [r.tobytes() for r in ids["input_ids"]]


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


def _global(path, hosts, batches, state=None, **kwargs):
  """`batches` global batches read by `hosts` simulated hosts (their rows concatenated)."""
  its = [_it(path, process_index=h, process_count=hosts, **kwargs) for h in range(hosts)]
  if state is not None:
    for it in its:
      it.set_state(state)
  out = []
  for _ in range(batches):
    parts = [next(it) for it in its]
    out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  states = [it.get_state() for it in its]
  assert all(s == states[0] for s in states)   # the state is global
  for it in its:
    it.close()
  return out, states[0]


@pytest.mark.parametrize("mode", ["nsp", "packed"])
def test_global_batches_do_not_depend_on_the_host_count(data, mode):
  total = pretrain_pipeline.read_meta(data[mode])["splits"]["train"]["num_examples"]
  batches = -(-2 * total // 8) + 1                         # past two epoch boundaries
  reference, state = _global(data[mode], 1, batches)
  assert state["position"] == batches * 8 and state["epoch"] == batches * 8 // total
  for hosts in (2, 4):
    batches_h, state_h = _global(data[mode], hosts, batches)
    assert state_h == state
    for a, b in zip(batches_h, reference):
      assert _same(a, b)                                   # rows, masks, labels
  # One host's rows are its block of the global batch, 8 // hosts rows.
  batch = next(_it(data[mode], process_index=1, process_count=2, prefetch=0))
  assert _same(batch, {k: v[4:] for k, v in reference[0].items()})


def test_state_saved_with_two_hosts_restores_with_one_and_four(data):
  _, state = _global(data["packed"], 2, 7)
  state = json.loads(json.dumps(state))
  expected, _ = _global(data["packed"], 1, 20)
  for hosts in (1, 4):
    for prefetch in (0, 2):
      resumed, _ = _global(data["packed"], hosts, 5, state=state, prefetch=prefetch)
      for a, b in zip(resumed, expected[7:12]):
        assert _same(a, b)


@pytest.mark.parametrize("hosts", [1, 2, 4])
def test_evaluation_is_one_exact_pass_for_any_host_count(data, hosts):
  total = pretrain_pipeline.read_meta(data["nsp"])["splits"]["train"]["num_examples"]
  everything = _file_rows(data["nsp"])
  batches, _ = _global(data["nsp"], hosts, -(-total // 8), shuffle=False, num_epochs=1,
                       drop_remainder=False)
  for h in range(hosts):                                   # every host yields as many batches
    assert len(list(_it(data["nsp"], shuffle=False, num_epochs=1, drop_remainder=False,
                        process_index=h, process_count=hosts))) == len(batches)
  rows = [r for b in batches for r, w in zip(_rows(b), b["example_weights"]) if w]
  assert rows == everything and len(rows) == total        # every example once, in file order
  weights = np.concatenate([b["example_weights"] for b in batches])
  assert weights.sum() == total and (weights[:total] == 1).all()
  last = batches[-1]
  assert (last["masked_weights"][last["example_weights"] == 0] == 0).all()


def test_old_per_host_state_is_a_user_error(data):
  it = _it(data["nsp"], prefetch=0)
  with pytest.raises(UserError, match="old per-host format"):
    it.set_state({"epoch": 1, "batch_index": 3})
  with pytest.raises(UserError, match="not valid"):
    it.set_state({"position": -1})


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
  total = it.num_records
  batches = [next(it) for _ in range(-(-2 * total // 8))]   # full batches straddle epochs
  assert it.get_state() == {"position": len(batches) * 8, "epoch": len(batches) * 8 // total}
  rows = [r for b in batches for r in _rows(b)]
  epoch0, epoch1 = rows[:total], rows[total:2 * total]
  # Each epoch is every record exactly once (nothing dropped), in a new order.
  assert collections.Counter(epoch0) == collections.Counter(epoch1) == collections.Counter(
      _file_rows(data["nsp"]))
  assert epoch0 != epoch1
  # The same record gets a new mask in the next epoch.
  positions = np.concatenate([b["masked_positions"] for b in batches])
  mask0 = {r: p.tobytes() for r, p in zip(epoch0, positions[:total])}
  mask1 = {r: p.tobytes() for r, p in zip(epoch1, positions[total:2 * total])}
  assert np.mean([mask0[r] != mask1[r] for r in mask0]) > 0.5


def test_num_epochs_and_padded_last_batch(data):
  meta = pretrain_pipeline.read_meta(data["nsp"])
  total = meta["splits"]["eval"]["num_examples"]
  it = pretrain_pipeline.make_pretraining_iterator(
      data["nsp"], "eval", global_batch_size=8, seed=0, max_predictions_per_seq=4,
      shuffle=False, num_epochs=1, drop_remainder=False, process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == -(-total // 8)
  weights = np.concatenate([b["example_weights"] for b in batches])
  assert weights.sum() == total
  last = batches[-1]
  assert (last["masked_weights"][last["example_weights"] == 0] == 0).all()


def test_whole_word_masking_uses_the_tokenizer(data):
  """Every word with a selected piece has all its pieces selected, words of several pieces
  included; the word boundaries are the prepared data's tokenizer's."""
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  meta = pretrain_pipeline.read_meta(data["nsp"])
  tokenizer = tokenization.load_tokenizer(os.path.join(data["nsp"], meta["tokenizer"]))
  word_start = np.asarray(tokenizer.word_start_mask(np.arange(meta["vocab_size"])), bool)
  special = list(meta["special_ids"].values())
  batch = next(_it(data["nsp"], whole_word_mask=True, mask_rate=0.3, prefetch=0))
  selected_words = multi_piece = 0
  for b in range(batch["input_ids"].shape[0]):
    slots = batch["masked_weights"][b] > 0
    chosen = set(batch["masked_positions"][b][slots].tolist())
    original = batch["input_ids"][b].copy()
    original[batch["masked_positions"][b][slots]] = batch["masked_ids"][b][slots]
    words, current = [], []  # lists of positions of each word
    for p, token in enumerate(original):
      if token in special:
        current = []
        continue
      if word_start[token] or not current:
        current = [p]
        words.append(current)
      else:
        current.append(p)
    for word in words:
      hit = chosen & set(word)
      if hit:
        assert hit == set(word), (b, word, sorted(chosen))
        selected_words += 1
        multi_piece += len(word) > 1
  assert selected_words > 20 and multi_piece > 0


def test_errors(data, tmp_path):
  with pytest.raises(UserError, match="no split"):
    pretrain_pipeline.PretrainingIterator(data["nsp"], "test", global_batch_size=8, seed=0,
                                       max_predictions_per_seq=4)
  with pytest.raises(UserError, match="divisible"):
    _it(data["nsp"], global_batch_size=7, process_count=2)
  with pytest.raises(FileNotFoundError):
    pretrain_pipeline.read_meta(str(tmp_path / "missing"))
  with pytest.raises(UserError, match="no meta.json"):
    pretrain_pipeline.read_meta(str(tmp_path))
