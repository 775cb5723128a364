"""launch/benchmark.py --suite=squad2|conll on the project's sample sets.

SQuAD v2.0: the official threshold search against a brute force over every threshold, the
EM/F1 of the written predictions against the trainer's logged figures. CoNLL: entity F1 per
type against seqeval on the same predictions, overall against metrics.jsonl.
"""

import json
import os

import numpy as np
import pytest
import seqeval.metrics

import hf_fixtures
from bert_jax.data import sample_tasks
from bert_jax.data.readers import conll
from bert_jax.errors import UserError
from bert_jax.suite import benchmark
from bert_jax.suite import runs
from bert_jax.suite import scoring
from conftest import override


def small_config(**overrides):
  c = runs.load_config()
  c.update(batch_size=8, eval_batch_size=8, num_train_steps=4, warmup_steps=1,
           log_every_steps=2, eval_every_steps=2, checkpoint_every_steps=2, schedule="constant")
  return override(c, **overrides)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("sq")
  hf = str(root / "hf")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=0), hf)
  paths = sample_tasks.write(str(root / "samples"), num_train=40, num_eval=24)
  return {"hf": hf, "squad": os.path.dirname(paths["squad"]["train"]),
          "ner": os.path.dirname(paths["ner"]["train"]), "root": root}


def _brute_force_best(preds, scores, na_probs, has_answer):
  """max over thresholds t of the score when questions with na_prob > t answer nothing."""
  best, best_t = -1.0, None
  for t in sorted({0.0, *na_probs.values()}):
    total = 0.0
    for q in scores:
      if na_probs[q] > t:
        total += 0.0 if has_answer[q] else 1.0
      else:
        total += scores[q] if has_answer[q] else float(not preds[q])
    if total > best:
      best, best_t = total, t
  return best / len(scores), best_t


def test_best_threshold_is_the_official_search():
  rs = np.random.default_rng(0)
  for trial in range(20):
    n = 30
    qids = [f"q{i}" for i in range(n)]
    has = {q: bool(rs.integers(2)) for q in qids}
    preds = {q: "" if rs.uniform() < 0.3 else "x" for q in qids}
    scores = {q: float(rs.choice([0.0, 0.5, 1.0])) if has[q] and preds[q] else
              (float(not preds[q]) if not has[q] else 0.0) for q in qids}
    na = {q: float(rs.uniform(0.01, 5.0)) for q in qids}
    got = scoring.find_best_thresh(preds, scores, na, has)
    want = _brute_force_best(preds, scores, na, has)
    assert got[0] == pytest.approx(want[0], abs=1e-12), trial
    assert got[1] == want[1], trial


@pytest.mark.slow
def test_squad2_suite_on_the_sample_set(setup, tmp_path):
  workdir = str(tmp_path / "squad")
  options = benchmark.Options(suite="squad2", init_checkpoint=setup["hf"], workdir=workdir,
                              data=setup["squad"], learning_rates=[1e-3, 5e-4])
  lines = []
  results = benchmark.run(options, small_config(max_seq_length=64, **{"qa.doc_stride": 32,
                                                "qa.max_query_length": 16}), say=lines.append)
  assert sum(l.startswith("[") for l in lines) == 2
  official = results["official"]
  dev = os.path.join(setup["squad"], "validation.json")
  predictions = json.load(open(results["predictions"]))
  with open(dev) as f:
    questions = [q for a in json.load(f)["data"] for p in a["paragraphs"] for q in p["qas"]]
  assert sorted(predictions) == sorted(q["id"] for q in questions)  # the official format
  assert official["HasAns_total"] + official["NoAns_total"] == len(questions) > 0
  # The official totals are the HasAns/NoAns figures weighted by their counts.
  assert official["exact"] == pytest.approx(
      (official["HasAns_exact"] * official["HasAns_total"]
       + official["NoAns_exact"] * official["NoAns_total"]) / len(questions))
  assert official["best_f1"] >= official["f1"] - 1e-12
  # Predicting the dev file again gives what the trainer logged at the best step.
  best = results["tasks"]["squad"]
  rows = [json.loads(l) for l in open(os.path.join(best["workdir"], "metrics.jsonl"))]
  row = next(r for r in rows if r["step"] == best["best_step"] and "eval_f1" in r)
  assert official["exact"] == pytest.approx(row["eval_exact_match"], abs=1e-9)
  assert official["f1"] == pytest.approx(row["eval_f1"], abs=1e-9)
  assert results["figures"]["EM"]["value"] == row["eval_exact_match"]
  md = open(os.path.join(workdir, "results.md")).read()
  assert "| bert_jax, dev |" in md and "HasAns_exact" in md and "NoAns_f1" in md
  assert f"{official['best_f1_thresh']:.3f} for F1" in md
  assert os.path.exists(os.path.join(workdir, "squad", "predictions", "null_odds.json"))
  assert os.path.getsize(os.path.join(workdir, "plots", "squad.png")) > 1000


@pytest.mark.slow
def test_conll_suite_on_the_sample_set(setup, tmp_path):
  workdir = str(tmp_path / "conll")
  options = benchmark.Options(suite="conll", init_checkpoint=setup["hf"], workdir=workdir,
                              data=setup["ner"], learning_rates=[1e-3])
  results = benchmark.run(options, small_config(max_seq_length=32), say=lambda _: None)
  dev = os.path.join(setup["ner"], "validation.conll")
  gold = [s.labels for s in conll.read_conll(dev)]
  predicted = [json.loads(l)["labels"] for l in open(results["predictions"])]
  report = seqeval.metrics.classification_report(gold, predicted, output_dict=True,
                                                 zero_division=0)
  per_type = results["per_type"]
  types = sorted(k for k in per_type if k != "overall")
  assert types == sorted(k for k in report if k.isupper())
  for kind in types:
    for key in ("precision", "recall", "f1"):
      assert per_type[kind][key] == pytest.approx(report[kind][f"{key}-score"
                                                               if key == "f1" else key],
                                                  abs=1e-12), (kind, key)
    assert per_type[kind]["support"] == report[kind]["support"]
  assert per_type["overall"]["f1"] == pytest.approx(seqeval.metrics.f1_score(gold, predicted),
                                                    abs=1e-12)
  best = results["tasks"]["conll"]
  rows = [json.loads(l) for l in open(os.path.join(best["workdir"], "metrics.jsonl"))]
  row = next(r for r in rows if r["step"] == best["best_step"] and "eval_f1" in r)
  assert per_type["overall"]["f1"] == pytest.approx(row["eval_f1"], abs=1e-9)
  md = open(os.path.join(workdir, "results.md")).read()
  assert "PER F1" in md and "| BERT-base (paper) |" in md


def test_suite_input_errors(setup, tmp_path):
  base = small_config()
  opts = lambda **kw: benchmark.Options(**{**dict(  # pylint: disable=unnecessary-lambda-assignment
      suite="conll", init_checkpoint=setup["hf"], workdir=str(tmp_path / "w"),
      data=setup["ner"]), **kw})
  with pytest.raises(UserError, match="--suite=conll has the one task 'conll'"):
    benchmark.run(opts(tasks=["cola"]), base)
  with pytest.raises(UserError, match="no training file"):
    benchmark.run(opts(data=str(tmp_path)), base)
  with pytest.raises(UserError, match="--init_checkpoint=/nowhere does not exist"):
    benchmark.run(opts(init_checkpoint="/nowhere"), base)


@pytest.mark.slow
def test_squad1_suite_reports_em_and_f1_only(setup, tmp_path):
  paths = sample_tasks.write(str(tmp_path / "v1"), num_train=40, num_eval=24, version_2=False)
  workdir = str(tmp_path / "squad1")
  options = benchmark.Options(suite="squad1", init_checkpoint=setup["hf"], workdir=workdir,
                              data=os.path.dirname(paths["squad"]["train"]),
                              learning_rates=[1e-3])
  results = benchmark.run(options, small_config(max_seq_length=64, **{"qa.doc_stride": 32,
                                                "qa.max_query_length": 16}), say=lambda _: None)
  assert sorted(results["figures"]) == ["EM", "F1"]
  assert "HasAns_total" not in results["official"]
  best = results["tasks"]["squad"]
  rows = [json.loads(l) for l in open(os.path.join(best["workdir"], "metrics.jsonl"))]
  row = next(r for r in rows if r["step"] == best["best_step"] and "eval_f1" in r)
  assert results["official"]["f1"] == pytest.approx(row["eval_f1"], abs=1e-9)
  assert "Table 2, BERT-base" in open(os.path.join(workdir, "results.md")).read()
