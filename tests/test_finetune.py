"""Sequence fine-tuning: metrics against scikit-learn/scipy, local files end to end, resume,
heads loaded or fresh, predictions against transformers' text-classification pipeline."""

import json
import os

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

import hf_fixtures
from bert_jax import predict
from bert_jax import train
from bert_jax.data import sample_pairs
from bert_jax.data.readers import sequences
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.heads import classifier as classification
from conftest import load_config, override, read_rows, sigterm_then_resume


def tiny_finetune_config(**overrides):
  """configs/finetune.py with the training values of conftest.tiny_config (no dropout, batch 8,
  seq 32, 6 steps, constant schedule), the model's size from init_checkpoint."""
  c = load_config("finetune.py")
  c.model.update(hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
  c.update(batch_size=8, eval_batch_size=0, max_seq_length=32, num_train_steps=6,
           learning_rate=1e-3, warmup_steps=2, schedule="constant", log_every_steps=1,
           eval_every_steps=0, checkpoint_every_steps=2, num_eval_batches=2)
  return override(c, **overrides)


def finetune_config(**overrides):
  """configs/finetune.py at test size: batch 8, seq 32, a few steps, eval at the end."""
  c = load_config("finetune.py")
  c.update(task="local", batch_size=8, eval_batch_size=16, max_seq_length=32,
           num_train_steps=6, warmup_steps=1, learning_rate=1e-3, log_every_steps=1,
           eval_every_steps=6, checkpoint_every_steps=2, schedule="constant")
  return override(c, **overrides)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A tiny random Hugging Face BERT dir and small sample-pair files."""
  root = tmp_path_factory.mktemp("ft")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=0), str(root / "hf"))
  paths = {}
  for split, count in (("train", 40), ("validation", 21)):
    path = root / f"{split}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in sample_pairs.examples(
        7 if split == "train" else 8, count)))
    paths[split] = str(path)
  paths["hf"] = str(root / "hf")
  return paths


def _local(files, **overrides):
  return finetune_config(**{"init_checkpoint": files["hf"], "train_file": files["train"],
                            "validation_file": files["validation"], **overrides})


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("num_labels", [2, 3])
def test_classification_metrics_equal_sklearn(num_labels):
  rs = np.random.default_rng(num_labels)
  y, p = rs.integers(0, num_labels, 500), rs.integers(0, num_labels, 500)
  p[:200] = y[:200]  # better than chance
  confusion = np.zeros((num_labels, num_labels))
  np.add.at(confusion, (y, p), 1)
  got = classification.classification_metrics(confusion)
  average = "binary" if num_labels == 2 else "macro"
  assert got["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(y, p), abs=1e-12)
  assert got["f1"] == pytest.approx(sklearn.metrics.f1_score(y, p, average=average), abs=1e-12)
  assert got["mcc"] == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p), abs=1e-12)


def test_regression_metrics_equal_scipy():
  rs = np.random.default_rng(0)
  y = np.round(rs.uniform(0, 5, 300), 1)  # ties, as STS-B's labels
  p = np.round(y + rs.normal(0, 1, 300), 1)
  sums = dict(example_weight=300.0, sum_p=p.sum(), sum_y=y.sum(), sum_pp=(p * p).sum(),
              sum_yy=(y * y).sum(), sum_py=(p * y).sum())
  assert classification.pearson_from_moments(sums) == pytest.approx(
      scipy.stats.pearsonr(p, y)[0], abs=1e-9)
  assert classification.spearman(p, y) == pytest.approx(scipy.stats.spearmanr(p, y)[0],
                                                         abs=1e-12)


# --------------------------------------------------------------------------- local files


def test_local_pairs_train_evaluate_export_and_predict(files, tmp_path):
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(_local(files), workdir)
  assert result["step"] == 6 and not result["preempted"]
  rows = read_rows(workdir)
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
  evals = [r for r in rows if "eval_accuracy" in r]
  assert len(evals) == 1 and {"eval_loss", "eval_f1", "eval_mcc"} <= set(evals[0])
  # The best model is a model dir with its labels, and predicting the validation file with
  # it gives the metrics the trainer logged (one exact pass: 21 rows, 2 batches of 16).
  best = convert.from_pretrained(os.path.join(workdir, "best"))
  assert best.labels == sorted(sample_pairs.LABELS) and best.heads == ("classifier",)
  assert best.task["kind"] == "classification" and best.task["text_pair"]
  examples = sequences.read_local(files["validation"])
  got = classification.SequencePredictor(best).predict(examples.texts, examples.pairs)
  labels = [best.labels.index(label) for label in examples.labels]
  preds = [best.labels.index(g["label"]) for g in got]
  assert evals[0]["eval_accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, preds))
  assert evals[0]["eval_mcc"] == pytest.approx(sklearn.metrics.matthews_corrcoef(labels, preds))
  assert evals[0]["eval_f1"] == pytest.approx(
      sklearn.metrics.f1_score(labels, preds, average="macro"))
  assert json.loads((tmp_path / "run" / "best" / "best.json").read_text())["step"] == 6


def test_sigterm_then_resume_is_bit_identical(files, tmp_path):
  c = _local(files, num_train_steps=8, eval_every_steps=4, checkpoint_every_steps=4)

  def iterator_state_at_3(cut):
    state = json.loads((tmp_path / "cut" / "checkpoints" / "3" / "data_iterator" /
                        "process_0-of-1.json").read_text())
    assert state == {"step": 3}

  whole, cut = sigterm_then_resume(c, tmp_path, after_cut=iterator_state_at_3)
  a = convert.from_pretrained(os.path.join(whole, "best")).params
  b = convert.from_pretrained(os.path.join(cut, "best")).params
  for x, y in zip(*(jax_leaves(t) for t in (a, b))):
    np.testing.assert_array_equal(x, y)


def test_packed_and_padded_runs_log_the_same_losses_and_metrics(files, tmp_path):
  """A fixed-seed run (dropout off) packed and padded: the same examples each step, so
  every logged loss and eval metric agrees to float rounding (packing reorders sums); a
  packed run accumulating 2 micro-batches per update logs the same losses too."""
  c = _local(files, num_train_steps=6, eval_every_steps=3,
             **{"model.hidden_dropout_rate": 0.0, "model.attention_dropout_rate": 0.0})
  runs = {}
  for name, pack, accum in (("packed", True, 1), ("padded", False, 1),
                            ("packed_accum", True, 2)):
    workdir = str(tmp_path / name)
    train.train_and_evaluate(override(c, pack=pack, grad_accum_steps=accum), workdir)
    runs[name] = read_rows(workdir)
  losses = {p: [r["loss"] for r in rows if "loss" in r] for p, rows in runs.items()}
  np.testing.assert_allclose(losses["packed"], losses["padded"], rtol=2e-4)
  np.testing.assert_allclose(losses["packed_accum"], losses["padded"], rtol=2e-4)
  evals = {p: [r for r in rows if "eval_accuracy" in r] for p, rows in runs.items()}
  assert len(evals["packed"]) == 2
  for a, b, c in zip(evals["packed"], evals["padded"], evals["packed_accum"]):
    assert a["eval_accuracy"] == b["eval_accuracy"] == c["eval_accuracy"]
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=2e-4)
  # Packed rows never compute more tokens for the same examples.
  computed = {p: sum(r["tokens_per_sec"] / r["seq_per_sec"] for r in rows if r.get("seq_per_sec"))
              for p, rows in runs.items()}
  assert computed["packed"] <= computed["padded"]


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_epochs_and_warmup_ratio_resolve_to_steps(files):
  c = train.resolve_schedule(_local(files, num_train_steps=-1, num_epochs=2.0, warmup_steps=-1,
                                    warmup_ratio=0.1, eval_every_steps=-1), 40)
  assert (c.num_train_steps, c.warmup_steps, c.eval_every_steps) == (10, 1, 5)


def test_classifier_with_the_same_labels_is_kept_and_others_are_fresh(files, tmp_path):
  labels = sorted(sample_pairs.LABELS)
  hf = hf_fixtures.make_model("BertForSequenceClassification", seed=5, num_labels=3,
                              id2label=dict(enumerate(labels)),
                              label2id={l: i for i, l in enumerate(labels)})
  hf_dir = str(tmp_path / "hf_cls")
  hf_fixtures.save_hf_dir(hf, hf_dir)
  kept = train.train_and_evaluate(
      _local(files, init_checkpoint=hf_dir, learning_rate=0.0, num_train_steps=1,
             eval_every_steps=1), str(tmp_path / "kept"))
  assert kept["step"] == 1
  params = convert.from_pretrained(str(tmp_path / "kept" / "best")).params
  np.testing.assert_array_equal(params["classifier"]["kernel"],
                                hf.classifier.weight.detach().numpy().T)
  # Other label names: a fresh classifier of the data's labels.
  other = hf_fixtures.make_model("BertForSequenceClassification", seed=5, num_labels=3,
                                 id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1,
                                                                               "c": 2})
  other_dir = str(tmp_path / "hf_other")
  hf_fixtures.save_hf_dir(other, other_dir)
  train.train_and_evaluate(_local(files, init_checkpoint=other_dir, learning_rate=0.0,
                                  num_train_steps=1, eval_every_steps=1), str(tmp_path / "fresh"))
  fresh = convert.from_pretrained(str(tmp_path / "fresh" / "best"))
  assert fresh.labels == labels
  assert not np.allclose(fresh.params["classifier"]["kernel"],
                         other.classifier.weight.detach().numpy().T)
  np.testing.assert_array_equal(fresh.params["bert"]["pooler"]["kernel"],
                                other.bert.pooler.dense.weight.detach().numpy().T)


def test_predictions_equal_transformers_pipeline(files, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_local(files, export_hf=True), workdir)
  hf_dir = os.path.join(workdir, "best_hf")
  config = json.loads(open(os.path.join(hf_dir, "config.json")).read())
  assert config["architectures"] == ["BertForSequenceClassification"]
  assert config["id2label"] == {str(i): l for i, l in enumerate(sorted(sample_pairs.LABELS))}
  examples = sequences.read_local(files["validation"])
  ours = classification.SequencePredictor(convert.from_pretrained(hf_dir), max_seq_length=32).predict(
      examples.texts, examples.pairs)
  pipe = transformers.pipeline("text-classification", model=hf_dir, top_k=None, device="cpu")
  theirs = pipe([{"text": t, "text_pair": p} for t, p in zip(examples.texts, examples.pairs)],
                truncation=True, max_length=32)  # the fine-tuning length, as ours
  for o, t in zip(ours, theirs):
    assert o["label"] == t[0]["label"]
    for entry in t:
      assert o["probabilities"][entry["label"]] == pytest.approx(entry["score"], abs=1e-5)


def test_bad_local_files_name_the_culprit(files, tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "no sentence column", "label": "x"}\n')
  with pytest.raises(UserError, match=r"bad.jsonl: expected a 'sentence' column"):
    sequences.read_local(str(bad))
  tsv = tmp_path / "short.tsv"
  tsv.write_text("sentence\tlabel\nonly one column\n")
  with pytest.raises(UserError, match=r"short.tsv:2: 1 columns where the header has 2"):
    sequences.read_local(str(tsv))
  latin = tmp_path / "latin.csv"
  latin.write_bytes(b"sentence,label\ncaf\xe9,1\n")
  with pytest.raises(UserError, match=r"latin.csv:2: not UTF-8"):
    sequences.read_local(str(latin))
  with pytest.raises(UserError, match="num_labels=5 but the data has 3 labels"):
    train.train_and_evaluate(_local(files, num_labels=5), str(tmp_path / "x"))


# --------------------------------------------------------------------------- GLUE


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(sequences.GLUE_FEATURES))
def test_glue_task_end_to_end_on_mock_data(name, files, tmp_path):
  """Every GLUE task trains and evaluates; its logged metrics equal scikit-learn/scipy on the
  predictions of the exported model over the same validation split(s)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / name)
  c = finetune_config(task=f"glue/{name}", init_checkpoint=files["hf"], num_train_steps=2,
                      eval_every_steps=2, checkpoint_every_steps=2, eval_batch_size=8)
  with tfds.testing.mock_data(num_examples=20):
    result = train.train_and_evaluate(c, workdir)
    splits = sequences.GLUE_EVAL_SPLITS.get(name, {"": "validation"})
    evals = {infix: sequences.read_glue(name, split) for infix, split in splits.items()}
  assert result["step"] == 2
  best = convert.from_pretrained(os.path.join(workdir, "best"))
  row = [r for r in read_rows(workdir) if any(k.startswith("eval_") for k in r)][-1]
  for infix, examples in evals.items():
    prefix = f"eval_{infix}_" if infix else "eval_"
    got = classification.SequencePredictor(best).predict(examples.texts, examples.pairs)
    if name == "stsb":
      values = np.asarray([g["value"] for g in got])
      assert row[prefix + "pearson"] == pytest.approx(
          scipy.stats.pearsonr(values, examples.labels)[0], abs=1e-5)
      assert row[prefix + "spearman"] == pytest.approx(
          scipy.stats.spearmanr(values, examples.labels)[0], abs=1e-5)
      continue
    preds = [best.labels.index(g["label"]) for g in got]
    average = "binary" if len(best.labels) == 2 else "macro"
    assert row[prefix + "accuracy"] == pytest.approx(
        sklearn.metrics.accuracy_score(examples.labels, preds), abs=1e-9)
    assert row[prefix + "f1"] == pytest.approx(
        sklearn.metrics.f1_score(examples.labels, preds, average=average, zero_division=0.0),
        abs=1e-9)
    assert row[prefix + "mcc"] == pytest.approx(
        sklearn.metrics.matthews_corrcoef(examples.labels, preds), abs=1e-9)
  if name == "mnli":
    assert "eval_mismatched_accuracy" in row
