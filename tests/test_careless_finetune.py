"""Fine-tuning as a careless user runs it: each silent failure of issue 15 is now a one-line
error naming the culprit, or a correct result."""

import json
import os

import numpy as np
import pytest
import scipy.stats

import hf_fixtures
from bert_jax import train
from bert_jax.data import sample_pairs
from bert_jax.data import sample_tasks
from bert_jax.data.contract import FeatureSets, Spec
from bert_jax.data.readers import squad
from bert_jax.errors import UserError
from bert_jax.heads import classifier
from bert_jax.formats import convert
from conftest import read_rows
from test_finetune import finetune_config


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("careless")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=0), str(root / "hf"))
  return str(root / "hf")


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _pairs(seed, count, rename=None):
  rows = sample_pairs.examples(seed, count)
  if rename:
    rows = [dict(r, label=rename.get(r["label"], r["label"])) for r in rows]
  return rows


def test_resume_with_a_renamed_label_stops_and_names_the_labels(hf_dir, tmp_path):
  train_file = _write(tmp_path / "train.jsonl", _pairs(7, 24))
  workdir = str(tmp_path / "run")
  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file, validation_file="",
                      num_train_steps=2, eval_every_steps=0)
  train.train_and_evaluate(c, workdir)
  renamed = _write(tmp_path / "renamed.jsonl", _pairs(7, 24, {"contradiction": "maybe"}))
  more = finetune_config(init_checkpoint=hf_dir, train_file=renamed, validation_file="",
                         num_train_steps=4, eval_every_steps=0)
  with pytest.raises(UserError, match=r"trained with labels \['contradiction', 'entailment', "
                     r"'neutral'\], this run's data has \['entailment', 'maybe', 'neutral'\]"):
    train.train_and_evaluate(more, workdir)


@pytest.mark.parametrize("overrides,message", [
    (dict(num_epochs=-1.0, num_train_steps=-1), r"config.num_epochs=-1.0 must be > 0"),
    (dict(num_train_steps=-5), r"config.num_train_steps=-5: give a positive number"),
    # Accumulated micro-batches must split the batch, packed or padded.
    (dict(grad_accum_steps=3), r"config.batch_size=8 must be divisible by data\*fsdp=1 "
     r"devices x grad_accum_steps=3 \(= 3\)"),
    (dict(grad_accum_steps=3, pack=False), r"config.batch_size=8 must be divisible by "
     r"data\*fsdp=1 devices x grad_accum_steps=3 \(= 3\)"),
])
def test_negative_steps_or_epochs_are_errors(hf_dir, tmp_path, overrides, message):
  train_file = _write(tmp_path / "train.jsonl", _pairs(7, 16))
  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file, validation_file="",
                      **overrides)
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "best")


def test_a_stray_fraction_among_integer_labels_is_an_error(hf_dir, tmp_path):
  rows = [{"sentence": f"text {i}", "label": str(i % 3)} for i in range(40)]
  rows[5]["label"] = "2.5"
  path = _write(tmp_path / "train.jsonl", rows)
  c = finetune_config(init_checkpoint=hf_dir, train_file=path, validation_file="")
  with pytest.raises(UserError, match=r"train.jsonl: the labels are integers except \['2.5'\] "
                     r"\(1 of 40\)"):
    train.train_and_evaluate(c, str(tmp_path / "run"))


def test_a_label_only_in_the_validation_file_is_an_error(hf_dir, tmp_path):
  train_file = _write(tmp_path / "train.jsonl", [r for r in _pairs(7, 40)
                                                  if r["label"] != "neutral"])
  validation = _write(tmp_path / "validation.jsonl", _pairs(8, 20))
  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file, validation_file=validation)
  with pytest.raises(UserError, match=r"validation.jsonl: labels \['neutral'\] never occur in "
                     r"the training data"):
    train.train_and_evaluate(c, str(tmp_path / "run"))


def test_a_missing_test_file_is_reported_before_training(hf_dir, tmp_path):
  train_file = _write(tmp_path / "train.jsonl", _pairs(7, 16))
  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file, validation_file="",
                      test_file=str(tmp_path / "nope.jsonl"))
  with pytest.raises(UserError, match=r"config.test_file=.*nope.jsonl: no such file"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_workdir_that_is_a_file(hf_dir, tmp_path):
  (tmp_path / "afile").write_text("x")
  c = finetune_config(init_checkpoint=hf_dir, train_file="x.jsonl")
  with pytest.raises(UserError, match=r"--workdir=.*afile is a file, not a directory"):
    train.train_and_evaluate(c, str(tmp_path / "afile"))


def test_squad_file_whose_answer_starts_are_all_wrong(tmp_path):
  doc = sample_tasks.squad_json(1, 4, version_2=True)
  for article in doc["data"]:
    for qa in article["paragraphs"][0]["qas"]:
      for answer in qa["answers"]:
        answer["answer_start"] += 3
  path = tmp_path / "train.json"
  path.write_text(json.dumps(doc))
  examples, stats = squad.read_squad_json(str(path))
  with pytest.raises(UserError, match=r"train.json: none of the 16 answerable question\(s\) has "
                     "an answer at its answer_start"):
    squad.check_examples(examples, stats, str(path), training=True)


def test_pearson_is_computed_without_cancellation():
  # Values far from 0 with a small spread: float32 moment sums cancel (this is what made
  # eval_pearson NaN); the gathered predictions are centred in float64.
  rs = np.random.default_rng(0)
  y = (1000.0 + rs.normal(0, 0.01, 4000)).astype(np.float32)
  p = (y + rs.normal(0, 0.02, 4000)).astype(np.float32)
  spec = Spec(task="local", head="classifier", kind="regression", max_seq_length=8,
              vocab_size=10)
  got = classifier.Classifier(spec).score(
      {"prediction": p, "label": y, "weight": np.ones_like(p)}, FeatureSets())
  want = scipy.stats.pearsonr(p.astype(np.float64), y.astype(np.float64))[0]
  assert got["pearson"] == pytest.approx(want, abs=1e-9)
  assert got["spearman"] == pytest.approx(scipy.stats.spearmanr(p, y)[0], abs=1e-9)


def test_regression_eval_pearson_matches_scipy_on_the_predictions(hf_dir, tmp_path):
  rs = np.random.default_rng(1)
  rows = [{"sentence": " ".join(hf_fixtures.WORDS[j] for j in rs.integers(0, 40, 5)),
           "label": f"{v:.2f}"} for v in rs.uniform(0, 5, 48)]
  train_file = _write(tmp_path / "train.jsonl", rows[:32])
  validation = _write(tmp_path / "validation.jsonl", rows[32:])
  workdir = str(tmp_path / "run")
  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file, validation_file=validation,
                      num_train_steps=2, eval_every_steps=2)
  train.train_and_evaluate(c, workdir)
  last = [r for r in read_rows(workdir) if "eval_pearson" in r][-1]
  pre = convert.from_pretrained(os.path.join(workdir, "best"))
  assert pre.task["kind"] == "regression"
  values = [r["value"] for r in classifier.Classifier.predict(
      pre, ([r["sentence"] for r in rows[32:]], None), {})]
  labels = [float(r["label"]) for r in rows[32:]]
  assert last["eval_pearson"] == pytest.approx(scipy.stats.pearsonr(values, labels)[0], abs=1e-5)


def test_predict_says_when_a_text_was_cut(tmp_path):
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertForSequenceClassification", seed=2),
                          str(tmp_path / "cls"))
  pre = convert.from_pretrained(str(tmp_path / "cls"))
  said = []
  long_text = " ".join(hf_fixtures.WORDS * 3)
  results = classifier.Classifier.predict(pre, (["a short one", long_text], None),
                                          {"max_seq_length": 16, "warn": said.append})
  assert len(results) == 2
  assert said == ["1 input(s) reached the model's 16 tokens: longer ones were cut there "
                  "(--max_seq_length)"]


def test_logged_throughput_counts_the_rows_actually_run(hf_dir, tmp_path):
  """tokens_per_sec counts rows x bucket length, real_tokens_per_sec the non-padding tokens,
  padding_fraction their ratio: checked against the batches the stream serves."""
  from bert_jax import tasks  # pylint: disable=g-import-not-at-top
  train_file = _write(tmp_path / "train.jsonl", _pairs(7, 40))
  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file, validation_file="",
                      num_train_steps=4, eval_every_steps=0, log_every_steps=1)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir)
  data, _ = tasks.make_data(c)
  timed = [r for r in read_rows(workdir) if "tokens_per_sec" in r]
  assert [r["step"] for r in timed] == [2, 3, 4]
  for r in timed:
    batch = data.train.batch_at(r["step"] - 1)
    computed, real = batch["input_ids"].size, batch["attention_mask"].sum()
    assert batch["input_ids"].shape[1] < 32 or computed == 8 * 32  # a length bucket
    assert r["tokens_per_sec"] / r["seq_per_sec"] == pytest.approx(computed / 8, rel=1e-9)
    assert r["real_tokens_per_sec"] / r["seq_per_sec"] == pytest.approx(real / 8, rel=1e-9)
    assert r["padding_fraction"] == pytest.approx(1 - real / computed, abs=1e-12)
    assert 0 < r["mfu"]
