"""Tagging: CoNLL reading, first-piece labels and windows, training with entity metrics that
equal seqeval on transformers' predictions from the same weights, tfds conll2003, bad input."""

import importlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from seqeval import metrics as seqeval_metrics
import torch
import transformers

from bert_jax import tokenization
from bert_jax import train
from bert_jax.data.readers import conll
from bert_jax.data import sample_tasks
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.tasks import tagging

from conftest import read_rows
import hf_fixtures
from test_finetune import tiny_finetune_config

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter\tNNP\tB-PER
Blackburn\tNNP\tI-PER
"""


def test_read_conll_columns_docstart_and_label_list(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text(CONLL)
  sentences = conll.read_conll(str(path))
  assert [s.words for s in sentences] == [["EU", "rejects", "German", "call", "."],
                                          ["Peter", "Blackburn"]]
  assert sentences[0].labels == ["B-ORG", "O", "B-MISC", "O", "O"]
  assert conll.label_list(sentences) == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_read_conll_errors_name_file_and_line(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_text("EU B-ORG\nrejects\n")
  with pytest.raises(UserError, match=r"bad.txt:2: no label column in 'rejects'"):
    conll.read_conll(str(path))
  path.write_bytes(b"EU B-ORG\n\xff O\n")
  with pytest.raises(UserError, match=r"bad.txt:2: not UTF-8"):
    conll.read_conll(str(path))


@pytest.fixture(scope="module")
def hf_vocab_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("vocab"))
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", max_position_embeddings=128), d)
  return d


def test_first_piece_labels_equal_transformers_word_ids(hf_vocab_dir):
  sentences = conll.read_conll(sample_tasks_file(hf_vocab_dir, 40))
  labels = conll.label_list(sentences)
  label_to_id = {l: i for i, l in enumerate(labels)}
  ours = conll.encode(sentences, tokenization.load_tokenizer(hf_vocab_dir), label_to_id, 128)
  hf_tok = transformers.BertTokenizerFast.from_pretrained(hf_vocab_dir)
  for i, s in enumerate(sentences):
    enc = hf_tok(s.words, is_split_into_words=True)
    want, previous = [], None
    for w in enc.word_ids():
      want.append(-1 if w is None or w == previous else label_to_id[s.labels[w]])
      previous = w
    np.testing.assert_array_equal(ours.input_ids[i], enc["input_ids"])
    np.testing.assert_array_equal(ours.label_ids[i], want)


def sample_tasks_file(directory, n):
  path = os.path.join(directory, f"ner_{n}.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write(sample_tasks.conll_text(7, n))
  return path


def test_long_sentences_are_windowed_never_cut(hf_vocab_dir):
  tok = tokenization.load_tokenizer(hf_vocab_dir)
  sentences = conll.read_conll(sample_tasks_file(hf_vocab_dir, 30))
  long = conll.Sentence(sum((s.words for s in sentences[:6]), []),
                        sum((s.labels for s in sentences[:6]), []))
  labels = conll.label_list([long, sentences[7]])
  label_to_id = {l: i for i, l in enumerate(labels)}
  long.words[3] = "qwertyuiopasdfghjklzxcvbnm"  # one word of 26 pieces: more than a row
  features = conll.encode([long, sentences[7]], tok, label_to_id, 24)
  assert features.num_windowed >= 1 and features.num_cut_words == 1 and len(features) > 3
  assert all(len(ids) <= 24 for ids in features.input_ids)
  # Every word is labelled in exactly one window; reading the gold labels back gives them all.
  assert sum(int((l >= 0).sum()) for l in features.label_ids) == len(long.words) + len(
      sentences[7].words)
  gold_rows = np.full((len(features), 24), -1)
  for i, l in enumerate(features.label_ids):
    gold_rows[i, :len(l)] = l
  order = np.arange(len(features))[::-1]  # rows in any order
  words = conll.word_predictions(features, [long, sentences[7]], order, gold_rows[order])
  assert [[labels[i] for i in s] for s in words] == [long.labels, sentences[7].labels]


def _config(root, paths, init, **overrides):
  c = tiny_finetune_config()
  c.update(task="conll", init_checkpoint=init, train_file=paths["train"],
           validation_file=paths["validation"], test_file="", max_seq_length=64,
           eval_every_steps=2, num_eval_batches=0, num_train_steps=2, learning_rate=1e-4)
  c.update(**overrides)
  return c


def test_train_metrics_equal_seqeval_on_transformers_predictions(tmp_path):
  paths = sample_tasks.write(str(tmp_path / "data"), num_train=32, num_eval=24)["ner"]
  labels = conll.label_list(conll.read_conll(paths["train"]))
  init = str(tmp_path / "hf_tagger")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model(
      "BertForTokenClassification", seed=3, max_position_embeddings=128,
      id2label=dict(enumerate(labels))), init)
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(_config(tmp_path, paths, init), workdir)
  last = [r for r in read_rows(workdir) if "eval_f1" in r][-1]
  assert result["step"] == 2 and last["step"] == 2

  # The same weights in transformers: word label = argmax at the word's first piece.
  exported = str(tmp_path / "hf_back")
  convert.convert(workdir, exported, "hf")
  model = transformers.BertForTokenClassification.from_pretrained(exported).eval()
  assert model.config.id2label == dict(enumerate(labels))
  hf_tok = transformers.BertTokenizerFast.from_pretrained(exported)
  sentences = conll.read_conll(paths["validation"])
  gold, predicted, right, total = [], [], 0, 0
  for s in sentences:
    enc = hf_tok(s.words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
      pred = model(**enc).logits[0].argmax(-1).numpy()
    firsts = {}
    for pos, w in enumerate(enc.word_ids()):
      if w is not None and w not in firsts:
        firsts[w] = pos
    words = [labels[int(pred[firsts[w]])] for w in range(len(s.words))]
    gold.append(s.labels)
    predicted.append(words)
    right += sum(a == b for a, b in zip(words, s.labels))
    total += len(words)
  want = {"eval_precision": seqeval_metrics.precision_score(gold, predicted),
          "eval_recall": seqeval_metrics.recall_score(gold, predicted),
          "eval_f1": seqeval_metrics.f1_score(gold, predicted),
          "eval_accuracy": right / total}
  assert want["eval_f1"] > 0.0 and want["eval_accuracy"] < 1.0
  for k, v in want.items():
    assert last[k] == pytest.approx(v, abs=1e-6), k
  # The model dir records the task and labels; `best` is exported by eval_f1.
  pre = convert.from_pretrained(os.path.join(workdir, "best"))
  assert pre.heads == ("token_classifier",) and pre.labels == labels
  assert pre.task["kind"] == "tagging"


def test_label_outside_the_init_models_label_set(tmp_path):
  paths = sample_tasks.write(str(tmp_path / "data"), num_train=16, num_eval=8)["ner"]
  init = str(tmp_path / "hf_tagger")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model(
      "BertForTokenClassification", max_position_embeddings=128,
      id2label=dict(enumerate(["O", "B-PER", "I-PER"]))), init)
  c = _config(tmp_path, paths, init)
  with pytest.raises(UserError, match=r"train.conll: sentence \d+ has label\(s\) \['B-\w+'.*"
                     r"outside the model's label set \['O', 'B-PER', 'I-PER'\]"):
    tagging.make_data(c)


def test_tfds_conll2003(tmp_path, hf_vocab_dir):
  importlib.import_module("tensorflow_datasets.text.conll2003")
  names = tfds.builder("conll2003").info.features["ner"].feature.names
  rng = np.random.default_rng(0)
  words = [w for w in hf_fixtures.WORDS if w.isalpha()]
  stored = {split: [{"tokens": np.array([words[j] for j in rng.integers(0, len(words), n)]),
                     "ner": rng.integers(0, len(names), n)} for n in rng.integers(2, 9, 6)]
            for split in ("train", "dev", "test")}
  c = _config(tmp_path, {"train": "", "validation": ""}, hf_vocab_dir, task="conll2003")
  # The examples tfds.data_source serves (random mock examples have unequal tokens/tags).
  with tfds.testing.mock_data(as_data_source_fn=lambda self, split, **kw: stored[split]):
    data, spec = tagging.make_data(c)
    sentences, _ = conll.read_conll2003_tfds("dev")
  assert list(spec.labels) == names and spec.num_train_examples == 6
  assert sorted(data.eval_sets) == ["", "test"]
  assert [s.words for s in sentences] == [list(e["tokens"]) for e in stored["dev"]]
  assert [s.labels for s in sentences] == [[names[i] for i in e["ner"]] for e in stored["dev"]]
  batch = next(data.train)
  # 8 examples (config.pack: the encoder rows hold several each; the labels keep one per row).
  assert batch["label_ids"].shape[0] == 8 and batch["label_ids"].shape[1] <= 64
  assert batch["input_ids"].shape[0] < 8 and batch["input_ids"].shape[1] <= 64
  assert (batch["label_ids"] >= 0).any()
