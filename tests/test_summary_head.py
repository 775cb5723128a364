"""The supervised summary head (BertSum): ROUGE against rouge-score, the greedy oracle, trigram
blocking, the module's [CLS] scores against BertModel, the task end to end on the sample set
(eval ROUGE equal to rouge-score on predict's output), tfds cnn_dailymail, and the launcher."""

import json
import os
import random
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rouge_score import rouge_scorer
import tensorflow_datasets as tfds

from bert_jax import heads
from bert_jax import model as model_lib
from bert_jax import predict
from bert_jax import train
from bert_jax.data import sample_tasks
from bert_jax.data.contract import Spec
from bert_jax.data.readers import summaries
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.tasks import extractive_summary

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import read_rows  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_finetune import tiny_finetune_config  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("vocab"))
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", max_position_embeddings=128), d)
  return d


def _reference_rouge(target, prediction):
  return {k: v.fmeasure for k, v in SCORER.score(target, prediction).items()}


def test_rouge_equals_rouge_score_on_random_pairs():
  rng = random.Random(0)
  words = ["the", "cat", "sat", "on", "mat", "Dog", "ran", "far", "a", "big", "Ünïcode", "42",
           "don't", "U.S.", "well-known", ",", "."]
  for _ in range(300):
    t = " ".join(rng.choice(words) for _ in range(rng.randrange(0, 30)))
    p = " ".join(rng.choice(words) for _ in range(rng.randrange(0, 30)))
    got, want = summaries.rouge(t, p), _reference_rouge(t, p)
    for k in want:
      assert got[k] == pytest.approx(want[k], abs=1e-12), (k, t, p)


def test_oracle_hand_made():
  sentences = ["The cat sat on the mat.", "It was raining in the town.",
               "The cat sat on the mat again.", "A dog barked at the cat.",
               "Nothing else happened."]
  reference = "The cat sat on the mat. A dog barked."
  # 0 first (best R1+R2 alone); then 3 adds "a dog barked"; 2 only repeats words already
  # counted (clipped), and adding anything else lowers the F-measure: stop at two.
  assert summaries.oracle(sentences, reference) == [0, 3]
  assert summaries.oracle(sentences, reference, limit=1) == [0]
  assert summaries.oracle(["x y z."], "a b c") == []


def test_trigram_blocking():
  sentences = ["the cat sat on the mat.", "a cat sat on the mat too.", "dogs bark loudly.",
               "birds sing."]
  scores = [0.9, 0.8, 0.5, 0.1]
  # 1 shares "sat on the" with 0: skipped; order is the document's.
  assert summaries.select(sentences, scores, 3) == [0, 2, 3]
  assert summaries.select(sentences, scores, 3, block_trigrams=False) == [0, 1, 2]
  assert summaries.select(sentences, [0.1, 0.3, 0.9, 0.2], 2) == [1, 2]  # not [2, 1]


def test_encode_bertsum_rows_and_truncation(tok_dir):
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  tok = tokenization.load_tokenizer(tok_dir)
  articles = [["the cat sat.", "a dog ran.", "it is a day."], ["the " * 40]]
  pieces = tok.encode_plain(articles[0])
  row = [tok.cls_id, *pieces[0], tok.sep_id, tok.cls_id, *pieces[1], tok.sep_id]
  length = len(row) + 1  # the third sentence does not fit
  enc = summaries.encode(tok, articles, length)
  assert enc.input_ids[0, :len(row)].tolist() == row and enc.lengths[0] == len(row)
  a = len(pieces[0]) + 2
  assert enc.token_type_ids[0, :len(row)].tolist() == [0] * a + [1] * (len(row) - a)
  assert enc.cls_positions[0].tolist() == [0, a] and enc.num_sentences.tolist() == [2, 1]
  assert enc.input_ids[0, len(row)] == tok.pad_id
  assert enc.lengths[1] == length and enc.input_ids[1, -1] == tok.sep_id  # the one sentence cut
  assert (enc.stats.truncated, enc.stats.dropped_sentences) == (2, 1)


def _tiny_model_and_params(seed=0):
  cfg = model_lib.BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=64, max_position_embeddings=64,
                             hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
  module = heads.HEADS["summary"](Spec("extractive_summary", "summary", "extractive_summary",
                                       32, 50)).build_model(cfg)
  ids = jax.random.randint(jax.random.PRNGKey(seed), (2, 32), 1, 50)
  params = nn.unbox(module.init({"params": jax.random.PRNGKey(1)}, ids,
                                cls_positions_BxS=jnp.zeros((2, 3), jnp.int32))["params"])
  return cfg, module, params, ids


def test_scores_read_each_sentences_cls_output():
  cfg, module, params, ids = _tiny_model_and_params()
  types = jnp.asarray(np.repeat([[0, 1, 0, 1]], 8, axis=1).repeat(2, 0), jnp.int32)
  mask = jnp.asarray(np.arange(32)[None] < np.array([[32], [20]]), jnp.int32)
  cls = jnp.asarray([[0, 9, 17], [0, 5, 0]], jnp.int32)
  got = module.apply({"params": params}, ids, types, mask, cls_positions_BxS=cls)
  encoder = model_lib.BertModel(cfg, add_pooling_layer=False)
  seq = encoder.apply({"params": params["bert"]}, ids, types, mask).sequence_output
  w, b = params["summary_classifier"]["kernel"], params["summary_classifier"]["bias"]
  for r in range(2):
    want = np.asarray(seq[r, np.asarray(cls[r])] @ w + b)[:, 0]
    np.testing.assert_allclose(np.asarray(got[r]), want, atol=1e-5)


def test_loss_and_gradients_are_finite_and_only_real_sentences_count():
  _, module, params, ids = _tiny_model_and_params()
  head = heads.HEADS["summary"](Spec("extractive_summary", "summary", "extractive_summary",
                                     32, 50))
  batch = dict(input_ids=ids, token_type_ids=jnp.zeros_like(ids),
               attention_mask=jnp.ones_like(ids), cls_positions=jnp.asarray([[0, 9, 17],
                                                                            [0, 5, 0]]),
               sentence_labels=jnp.asarray([[1, 0, 1], [0, 1, 0]]),
               sentence_mask=jnp.asarray([[1, 1, 1], [1, 1, 0]]),
               example_weights=jnp.ones(2))

  def loss(p):
    return heads.base.combine_loss(head.sums(module, p, batch, None), head.loss_terms)

  value, grads = jax.value_and_grad(loss)(params)
  assert np.isfinite(float(value))
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
  assert float(np.abs(grads["summary_classifier"]["kernel"]).sum()) > 0
  logits = np.asarray(module.apply({"params": params}, ids, cls_positions_BxS=batch[
      "cls_positions"]))
  x, y = logits[[0, 0, 0, 1, 1], [0, 1, 2, 0, 1]], np.array([1, 0, 1, 0, 1])
  bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
  assert float(value) == pytest.approx(bce.mean(), rel=1e-5)


def _config(paths, init, **overrides):
  c = tiny_finetune_config()
  c.update(task="extractive_summary", init_checkpoint=init, train_file=paths["train"],
           validation_file=paths["validation"], test_file="", max_seq_length=128,
           eval_every_steps=4, num_eval_batches=0, num_train_steps=4, learning_rate=1e-4)
  c.update(**overrides)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("summary")
  paths = sample_tasks.write(str(root / "data"), num_train=24, num_eval=12)["summary"]
  init = str(root / "hf")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=3,
                                                 max_position_embeddings=128), init)
  workdir = str(root / "run")
  result = train.train_and_evaluate(_config(paths, init), workdir)
  return paths, workdir, result, root


def test_finetune_eval_rouge_equals_rouge_score_on_predictions(trained):
  paths, workdir, result, _ = trained
  assert result["step"] == 4
  rows = [r for r in read_rows(workdir) if "eval_rouge2" in r]
  assert len(rows) == 1
  last = rows[-1]
  assert 0 < last["eval_rouge1"] <= 1 and "eval_lead3_rouge1" in last
  pre = convert.from_pretrained(os.path.join(workdir, "best"))
  assert heads.predicting_head(pre.heads) is heads.HEADS["summary"]
  examples = summaries.read_jsonl(paths["validation"])
  got = predict.predict(pre, [list(ex.sentences) for ex in examples])
  assert all(1 <= len(g["sentences"]) <= 3 for g in got)
  for key in ("rouge1", "rouge2", "rougeL"):
    want = np.mean([_reference_rouge(ex.reference, g["summary"])[key]
                    for ex, g in zip(examples, got)])
    assert last[f"eval_{key}"] == pytest.approx(want, abs=1e-9), key
    lead = np.mean([_reference_rouge(ex.reference, " ".join(ex.sentences[:3]))[key]
                    for ex in examples])
    assert last[f"eval_lead3_{key}"] == pytest.approx(lead, abs=1e-9), key
  for g in got:
    assert [s["index"] for s in g["sentences"]] == sorted(s["index"] for s in g["sentences"])
    assert g["summary"] == " ".join(s["text"] for s in g["sentences"])


def test_export_to_hf_refuses_and_bert_jax_keeps_the_head(trained):
  _, workdir, _, root = trained
  with pytest.raises(UserError, match=r"no Hugging Face architecture has heads \['summary'\]"):
    convert.convert(os.path.join(workdir, "best"), str(root / "hf_out"), "hf")
  assert not os.path.exists(root / "hf_out")
  convert.convert(os.path.join(workdir, "best"), str(root / "jax_out"), "bert_jax")
  assert convert.from_pretrained(str(root / "jax_out")).heads == ("summary",)


def _register_cnn_dailymail():
  """tfds' own cnn_dailymail builder needs TensorFlow to import; without it, a stand-in with
  its features (a prepared dataset would be read from its files without any builder code)."""
  try:
    tfds.builder_cls("cnn_dailymail")
    return
  except tfds.core.registered.DatasetNotFoundError:
    pass

  class CnnDailymail(tfds.core.GeneratorBasedBuilder):  # pylint: disable=unused-variable
    VERSION = tfds.core.Version("3.4.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"article": tfds.features.Text(), "highlights": tfds.features.Text(),
           "id": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      raise NotImplementedError

    def _generate_examples(self):
      raise NotImplementedError


def test_tfds_cnn_dailymail(tmp_path, tok_dir):
  _register_cnn_dailymail()
  def raw(seed, n):
    rows = [json.loads(l) for l in sample_tasks.summaries_jsonl(seed, n).splitlines()]
    return [{"article": r["article"].encode(), "highlights": r["highlights"].encode(),
             "id": str(i).encode()} for i, r in enumerate(rows)]
  stored = {"train": raw(1, 10), "validation": raw(2, 4)}
  c = _config({"train": "", "validation": ""}, tok_dir, task="cnn_dailymail",
              max_seq_length=64)
  with tfds.testing.mock_data(as_data_source_fn=lambda self, split, **kw: stored[split]):
    data, spec = extractive_summary.make_data(c)
    examples = summaries.read_tfds("cnn_dailymail", "validation")
  assert examples[0].reference == " ".join(stored["validation"][0]["highlights"].decode().split())
  assert sorted(data.eval_sets) == [""] and spec.head == "summary"
  batch = next(data.train)
  assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64
  assert batch["sentence_labels"].sum() > 0
  assert (batch["sentence_labels"] <= batch["sentence_mask"]).all()


def test_export_hf_is_refused_before_training(tmp_path):
  c = _config({"train": str(tmp_path / "t.jsonl"), "validation": ""}, "", export_hf=True)
  with pytest.raises(UserError, match="config.export_hf=True: no Hugging Face class"):
    extractive_summary.make_data(c)


def test_reader_errors(tmp_path):
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps({"article": "Ab cd. Ef gh."}) + "\n")
  with pytest.raises(UserError, match=r"s.jsonl:1: no 'highlights'"):
    summaries.read_jsonl(str(path))
  examples = summaries.read_jsonl(str(path), require_reference=False)
  assert examples[0].sentences == ("Ab cd.", "Ef gh.")
  path.write_text(json.dumps({"article": " ", "summary": "x"}) + "\n")
  with pytest.raises(UserError, match=r"s.jsonl:1: the article is empty"):
    summaries.read_jsonl(str(path))


@pytest.mark.slow
def test_predict_launcher(trained, tmp_path):
  paths, workdir, _, _ = trained
  run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "launch", "predict.py"),  # pylint: disable=g-long-lambda
                                   f"--model={os.path.join(workdir, 'best')}", *a],
                                  capture_output=True, text=True, timeout=900)
  many = run(f"--input={paths['validation']}", "--json")
  assert many.returncode == 0, many.stderr[-2000:]
  lines = [json.loads(l) for l in many.stdout.strip().splitlines()]
  pre = convert.from_pretrained(os.path.join(workdir, "best"))
  examples = summaries.read_jsonl(paths["validation"])
  want = predict.predict(pre, [list(ex.sentences) for ex in examples])
  assert [l["summary"] for l in lines] == [w["summary"] for w in want]
  np.testing.assert_allclose([s["score"] for l in lines for s in l["sentences"]],
                             [s["score"] for w in want for s in w["sentences"]], atol=1e-5)
  article = " ".join(examples[0].sentences)
  one = run(f"--text={article}", "--json", "--top_k=2")
  assert one.returncode == 0, one.stderr[-2000:]
  got = json.loads(one.stdout.strip().splitlines()[-1])
  assert set(got) == {"summary", "sentences"} and len(got["sentences"]) == 2
  assert set(got["sentences"][0]) == {"index", "text", "score"}
  bad = run("--question=q", "--context=c")
  assert bad.returncode == 1 and "needs --text=ARTICLE" in bad.stderr
  assert "Traceback" not in bad.stderr
