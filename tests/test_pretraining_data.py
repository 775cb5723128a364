"""Pretraining data preparation: NSP pairs, packing, record format, launcher."""

import gzip
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.data import pretrain_pipeline
from bert_jax.data import prepare_pretraining as pd
from bert_jax.data import sample_corpus
from bert_jax.data import text_corpus
from bert_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the cat dog sat on a mat by river town red blue green went to market and saw big "
         "small house old new tree hill").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_corpus(path, num_docs=60, seed=0):
  rng = random.Random(seed)
  with open(path, "w") as f:
    for _ in range(num_docs):
      for _ in range(rng.randint(1, 8)):
        f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + " .\n")
      f.write("\n")


def write_vocab(directory):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(SPECIALS + [".", ","] + WORDS + ["##s", "##ed"]) + "\n")
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump({"do_lower_case": True}, f)
  return directory


def run_launcher(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "prepare_data.py"), *args],
                        capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = tmp_path_factory.mktemp("tiny")
  write_corpus(d / "corpus.txt")
  return dict(dir=d, corpus=str(d / "corpus.txt"), vocab=write_vocab(str(d / "vocab")))


def _docs(num_docs, rng):
  return [[np.arange(rng.randint(1, 20), dtype=np.int32) + 100 * d + 5
           for _ in range(rng.randint(1, 6))] for d in range(num_docs)]


def test_nsp_examples_follow_the_original_recipe():
  rng = random.Random(0)
  docs = _docs(200, rng)
  labels, lengths = [], []
  for d in range(len(docs)):
    for label, a, b in pd.create_nsp_examples(docs, d, max_seq_length=32, short_seq_prob=0.1,
                                              rng=rng):
      assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= 29
      # Tokens encode their document as id // 100.
      assert set(a // 100) == {d}
      if label == 0:
        assert set(b // 100) == {d}
      labels.append(label)
      lengths.append(len(a) + len(b))
  # One-sentence documents and doc ends force random B, so a bit over half are random.
  assert 0.45 < np.mean(labels) < 0.7
  assert np.mean(lengths) > 15


def test_truncation_trims_the_longer_side_at_both_ends():
  rng = random.Random(1)
  ends = set()
  for _ in range(50):
    a, b = pd.truncate_seq_pair(np.arange(30), np.arange(100, 105), 20, rng)
    assert len(a) == 15 and len(b) == 5
    ends.add((a[0] > 0, a[-1] < 29))
  assert ends == {(True, True)}


def test_packing_keeps_text_in_order_with_little_padding():
  rng = random.Random(2)
  docs = [np.arange(rng.randint(1, 90), dtype=np.int32) + 10 for _ in range(100)]
  rows = pd.pack_documents(docs, max_seq_length=64, cls_id=2, sep_id=3)
  assert all(len(r) <= 64 for r in rows)
  flat = np.concatenate(rows)
  np.testing.assert_array_equal(flat[(flat != 2) & (flat != 3)], np.concatenate(docs))
  assert 1 - len(flat) / (64 * len(rows)) < 0.05
  assert all(r[0] == 2 and r[-1] == 3 for r in rows)


def test_record_round_trip_packed():
  dtype = np.dtype(np.uint16)
  rows = [np.array([2, 10, 11, 3, 2, 12, 3]), np.array([2, 13, 14, 15, 3])]
  records = [pd.encode_record(0, r, dtype) for r in rows]
  out = pd.decode_records(records, dtype=dtype, max_seq_length=8, mode="packed", pad_id=0,
                          cls_id=2, sep_id=3)
  np.testing.assert_array_equal(out["input_ids"][0], [2, 10, 11, 3, 2, 12, 3, 0])
  np.testing.assert_array_equal(out["packing_ids"][0], [1, 1, 1, 1, 2, 2, 2, 0])
  np.testing.assert_array_equal(out["position_ids"][0], [0, 1, 2, 3, 0, 1, 2, 0])
  np.testing.assert_array_equal(out["attention_mask"][1], [1, 1, 1, 1, 1, 0, 0, 0])
  out = pd.decode_records([pd.encode_record(1, [2, 10, 3, 11, 12, 3], dtype)], dtype=dtype,
                          max_seq_length=8, mode="nsp", pad_id=0, cls_id=2, sep_id=3)
  np.testing.assert_array_equal(out["token_type_ids"][0], [0, 0, 0, 1, 1, 1, 0, 0])
  assert out["next_sentence_labels"][0] == 1


def test_split_sentences_and_eval_documents():
  assert text_corpus.split_sentences("One here. Two there! \"Three?\" 4 is last.\nNew line") == [
      "One here.", "Two there!", "\"Three?\"", "4 is last.", "New line"]
  assert text_corpus.split_sentences("e.g. lower case stays") == ["e.g. lower case stays"]
  held = [i for i in range(100) if pd.eval_document(i, 0.1)]
  assert len(held) == 10 and held[0] == 0


def test_gzip_input_and_corrupt_gzip(tmp_path):
  good, bad = tmp_path / "a.txt.gz", tmp_path / "b.jsonl.gz"
  with gzip.open(good, "wt") as f:
    f.write("one sentence .\ntwo .\n\nthree .\n")
  stats = text_corpus.ReadStats()
  assert list(text_corpus.read_documents([str(good)], stats)) == [["one sentence .", "two ."],
                                                                   ["three ."]]
  bad.write_bytes(good.read_bytes()[:15])
  with pytest.raises(UserError, match="b.jsonl.gz: cannot be read"):
    list(text_corpus.read_documents([str(bad)], stats))


def _prepare(tiny, out, **kwargs):
  stats = text_corpus.ReadStats()
  docs = text_corpus.read_documents([tiny["corpus"]], stats)
  options = pd.PrepareOptions(max_seq_length=32, chunk_bytes=300, **kwargs)
  return pd.prepare(docs, stats, tiny["vocab"], str(out), options)


def _files(directory):
  """Every output file's bytes, by relative path."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


@pytest.mark.parametrize("mode", ["nsp", "packed"])
def test_same_bytes_for_any_number_of_workers(tiny, tmp_path, mode):
  kwargs = dict(mode=mode, eval_fraction=0.1, num_output_shards=2, dupe_factor=2)
  meta1 = _prepare(tiny, tmp_path / "w1", num_workers=1, **kwargs)
  meta2 = _prepare(tiny, tmp_path / "w2", num_workers=2, **kwargs)
  files1, files2 = _files(tmp_path / "w1"), _files(tmp_path / "w2")
  assert sorted(files1) == ["eval-00000-of-00001.array_record", "meta.json",
                            "tokenizer/tokenizer_config.json", "tokenizer/vocab.txt",
                            "train-00000-of-00002.array_record",
                            "train-00001-of-00002.array_record"]
  assert files1 == files2   # byte-identical, meta.json included
  assert meta1["splits"] == meta2["splits"]
  other = _prepare(tiny, tmp_path / "s2", num_workers=1, seed=99, **kwargs)
  shards = lambda files: {k: v for k, v in files.items() if k.endswith(".array_record")}
  assert shards(_files(tmp_path / "s2")) != shards(files1)
  assert other["splits"]["train"]["num_tokens"] > 0
  assert meta1["mode"] == mode and meta1["vocab_size"] == len(SPECIALS) + 2 + len(WORDS) + 2
  assert os.path.exists(tmp_path / "w1" / "tokenizer" / "vocab.txt")


def test_hosts_prepare_disjoint_parts_that_merge(tiny, tmp_path):
  out = tmp_path / "multi"
  for host in range(2):
    _prepare(tiny, out, num_shards=2, shard_index=host, mode="packed")
  single = _prepare(tiny, tmp_path / "single", mode="packed")
  meta = pretrain_pipeline.read_meta(str(out))
  assert [s["file"] for s in meta["splits"]["train"]["shards"]] == [
      "train-00000-of-00002.array_record", "train-00001-of-00002.array_record"]
  assert meta["splits"]["train"]["num_tokens"] == single["splits"]["train"]["num_tokens"]
  assert meta["summary"]["documents"] == 2 * single["summary"]["documents"]  # both read all


def test_interrupted_run_leaves_nothing(tiny, tmp_path, monkeypatch):
  calls = []

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) > 2:
      raise KeyboardInterrupt
    return original(*args, **kwargs)

  original = pd.make_chunk_examples
  monkeypatch.setattr(pd, "make_chunk_examples", failing)
  with pytest.raises(KeyboardInterrupt):
    _prepare(tiny, tmp_path / "out")
  assert not os.path.exists(tmp_path / "out")
  assert os.listdir(tmp_path) == []


def test_launcher_bad_bytes_jsonl_and_summary(tiny, tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"the cat sat .\nthe dog \xff\xfe went .\n\n\n\n   \n\nthe red tree .\n")
  jsonl = tmp_path / "docs.jsonl"
  jsonl.write_text(json.dumps({"text": "The big dog sat. The cat went to town."}) + "\n\n"
                   + json.dumps({"text": ""}) + "\n")
  result = run_launcher(f"--input={bad},{tmp_path}/*.jsonl", f"--vocab={tiny['vocab']}",
                        f"--output={tmp_path}/out", "--max_seq_length=16", "--num_workers=1")
  assert result.returncode == 0, result.stderr
  assert "bad bytes 2 (in 1 lines)" in result.stdout
  meta = pretrain_pipeline.read_meta(str(tmp_path / "out"))
  assert meta["summary"]["documents"] == 3       # two text documents, one JSONL document
  assert meta["summary"]["empty_documents"] == 1  # the empty JSONL text
  assert meta["summary"]["sentences"] == 5


@pytest.mark.parametrize("case", ["empty", "no_vocab", "no_input", "bad_jsonl", "tfds"])
def test_launcher_errors_are_one_line(tiny, tmp_path, case):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n  \n")
  broken = tmp_path / "broken.jsonl"
  broken.write_text("{not json}\n")
  args = {"empty": [f"--input={empty}", f"--vocab={tiny['vocab']}"],
          "no_vocab": [f"--input={tiny['corpus']}", f"--vocab={tmp_path}/missing"],
          "no_input": [f"--input={tmp_path}/nothing*.txt", f"--vocab={tiny['vocab']}"],
          "bad_jsonl": [f"--input={broken}", f"--vocab={tiny['vocab']}"],
          "tfds": ["--tfds_dataset=wikipedia/20230601.en", f"--vocab={tiny['vocab']}"]}[case]
  result = run_launcher(*args, f"--output={tmp_path}/out", "--num_workers=1")
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
  assert "Traceback" not in result.stderr
  assert {"empty": "empty.txt has no text", "no_vocab": "missing", "no_input": "nothing",
          "bad_jsonl": "broken.jsonl:1", "tfds": "[tf]"}[case] in lines[0]
  assert not os.path.exists(tmp_path / "out")


def test_sample_corpus_is_regenerated_byte_for_byte():
  with open(sample_corpus.shipped_path(), encoding="utf-8") as f:
    shipped = f.read()
  assert sample_corpus.generate(0) == shipped
  assert 2e6 < len(shipped.encode()) < 4e6
  docs = shipped.split("\n\n")
  assert len(docs) == 7500 and all(d.strip() for d in docs)


def test_tfds_text_dataset_is_read_without_tensorflow(tmp_path, tiny):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=12):
    texts = list(text_corpus.tfds_texts("imdb_reviews:train", "text"))
    with pytest.raises(UserError, match=r"no feature 'body'; it has \['label', 'text'\]"):
      next(text_corpus.tfds_texts("imdb_reviews:train", "body"))
    reference = tfds.data_source("imdb_reviews", split="train")
    assert texts == [reference[i]["text"] for i in range(len(reference))]
  assert len(texts) == 12
  stats = text_corpus.ReadStats()
  documents = list(text_corpus.documents_from_texts(texts, stats))
  assert stats.text_bytes == sum(len(t) for t in texts) and len(documents) == stats.documents
  meta = pd.prepare(iter(documents), stats, tiny["vocab"], str(tmp_path / "out"),
                    pd.PrepareOptions(max_seq_length=32, mode="packed", num_workers=1))
  assert meta["splits"]["train"]["num_examples"] > 0


def test_existing_prepared_data_is_never_silently_replaced(tmp_path, tiny):
  out = tmp_path / "prepared"
  first = run_launcher(f"--input={tiny['corpus']}", f"--vocab={tiny['vocab']}",
                       f"--output={out}", "--max_seq_length=32", "--num_workers=1")
  assert first.returncode == 0, first.stderr
  before = sorted(os.listdir(out))
  again = run_launcher(f"--input={tiny['corpus']}", f"--vocab={tiny['vocab']}",
                       f"--output={out}", "--max_seq_length=64", "--num_workers=1")
  lines = again.stderr.strip().splitlines()
  assert again.returncode == 1 and len(lines) == 1 and "--overwrite" in lines[0]
  assert sorted(os.listdir(out)) == before
  assert json.loads((out / "meta.json").read_text())["max_seq_length"] == 32
  forced = run_launcher(f"--input={tiny['corpus']}", f"--vocab={tiny['vocab']}",
                        f"--output={out}", "--max_seq_length=64", "--num_workers=1",
                        "--overwrite")
  assert forced.returncode == 0, forced.stderr
  assert json.loads((out / "meta.json").read_text())["max_seq_length"] == 64
