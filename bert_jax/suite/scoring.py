"""Figures metrics.jsonl does not hold, computed from written predictions of the best model.

Why: the trainer logs one number per metric (entity F1 overall, SQuAD EM/F1);
the paper tables also show entity F1 per type, SQuAD v2.0's HasAns/NoAns split
and the best null threshold, and (when GLUE comes from the download's files)
MNLI's mismatched accuracy. Each is computed here from a predictions file the
suite writes under WORKDIR/<task>/predictions/ and scored against the dev file,
and the report names both files.
- SQuAD: the official predictions JSON `{id: answer}` (BERT's recipe: n-best
  start/end, the null answer when its score beats the best span by more than the
  model's `null_score_diff_threshold`) and `null_odds.json` (null score minus best
  span score per question, what BERT feeds the official v2.0 script as
  `--na-prob-file`); scored with the official v2.0 script's rules: exact/F1 over
  all questions, over those with answers (HasAns) and without (NoAns), and
  `find_best_thresh` (questions sorted by null odds, the threshold that maximises
  the score). Fractions in [0, 1].
- CoNLL: per entity type precision/recall/F1 with `heads.entities.chunks`
  (seqeval's default mode), micro over the type's chunks.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np

from bert_jax import files
from bert_jax.errors import UserError
from bert_jax.suite import submission
from bert_jax.heads import entities
from bert_jax.heads import squad_eval

N_BEST = 20  # configs/finetune.py's n_best_size


def _predict_file() -> Callable[[str, str, str], int]:
  from bert_jax.predict import predict_file  # pylint: disable=g-import-not-at-top
  return predict_file


# --------------------------------------------------------------------------- GLUE


def accuracy_from_predictions(model: str, dev_jsonl: str, out_tsv: str,
                              predict_file: Optional[Callable] = None) -> float:
  """Accuracy of `model` on a labelled JSONL file, through its written predictions."""
  os.makedirs(os.path.dirname(os.path.abspath(out_tsv)), exist_ok=True)
  (predict_file or _predict_file())(model, dev_jsonl, out_tsv)
  predicted = submission.read_predictions(out_tsv)
  with open(dev_jsonl, encoding="utf-8") as f:
    gold = [str(json.loads(line)["label"]) for line in f if line.strip()]
  if len(gold) != len(predicted):
    raise UserError(f"{out_tsv}: {len(predicted)} predictions for {len(gold)} rows of {dev_jsonl}")
  return float(np.mean([p == g for p, g in zip(predicted, gold)]))


# --------------------------------------------------------------------------- SQuAD


def squad_predictions(model: str, dev_json: str) -> tuple[dict[str, str], dict[str, float],
                                                          bool]:
  """({id: answer}, {id: null odds}, version_2) of `model` on a SQuAD JSON file."""
  from bert_jax.heads import base as head_base  # pylint: disable=g-import-not-at-top
  from bert_jax.heads import qa as qa_head  # pylint: disable=g-import-not-at-top
  from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  pre = convert.from_pretrained(model)
  task = pre.task or {}
  examples, _ = squad.read_squad_json(dev_json)
  length = int(task.get("max_seq_length") or 384)
  features = squad.encode(examples, pre.tokenizer, length, int(task.get("doc_stride") or 128),
                          int(task.get("max_query_length") or 64), source=dev_json)
  rows = head_base.run_rows(pre, qa_head._forward(pre.config),  # pylint: disable=protected-access
                            features.input_ids, features.token_type_ids, length)
  logits = [(r["tokens"][:, 0], r["tokens"][:, 1]) for r in rows]
  version_2 = bool(task.get("version_2")) or any(ex.is_impossible for ex in examples)
  threshold = float(task.get("null_score_diff_threshold") or 0.0)
  max_answer = int(task.get("max_answer_length") or 30)
  answers, odds = squad_eval.answers_and_null_odds(
      examples, features, np.arange(len(features)), [s for s, _ in logits],
      [e for _, e in logits], n_best=N_BEST, max_answer_length=max_answer,
      version_2=version_2, null_score_diff_threshold=threshold)
  return answers, odds, version_2


def find_best_thresh(preds: dict[str, str], scores: dict[str, float],
                     na_probs: dict[str, float], has_answer: dict[str, bool]
                     ) -> tuple[float, float]:
  """The official v2.0 script's threshold search: (best score as a fraction, threshold)."""
  num_no_ans = sum(1 for k in has_answer if not has_answer[k])
  cur = best = float(num_no_ans)
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if has_answer[qid]:
      diff = scores[qid]
    else:
      diff = -1.0 if preds[qid] else 0.0
    cur += diff
    if cur > best:
      best, best_thresh = cur, na_probs[qid]
  return best / len(scores), best_thresh


def squad_scores(dev_json: str, answers: dict[str, str], odds: dict[str, float],
                 version_2: bool) -> dict[str, float]:
  """The official script's figures (fractions); v2.0 adds HasAns/NoAns and best thresholds."""
  from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
  examples, _ = squad.read_squad_json(dev_json)
  exact, f1, has = {}, {}, {}
  for ex in examples:
    golds = squad_eval.gold_answers(ex)
    pred = answers.get(ex.qid, "")
    exact[ex.qid] = max(squad_eval.exact_match(pred, g) for g in golds)
    f1[ex.qid] = max(squad_eval.token_f1(pred, g) for g in golds)
    has[ex.qid] = golds != [""]
  out = {"exact": float(np.mean(list(exact.values()))), "f1": float(np.mean(list(f1.values()))),
         "total": len(examples)}
  if not version_2:
    return out
  for name, keep in (("HasAns", True), ("NoAns", False)):
    ids = [q for q in has if has[q] == keep]
    out[f"{name}_total"] = len(ids)
    if ids:
      out[f"{name}_exact"] = float(np.mean([exact[q] for q in ids]))
      out[f"{name}_f1"] = float(np.mean([f1[q] for q in ids]))
  finite = {q: (v if np.isfinite(v) else 1e30) for q, v in odds.items()}
  out["best_exact"], out["best_exact_thresh"] = find_best_thresh(answers, exact, finite, has)
  out["best_f1"], out["best_f1_thresh"] = find_best_thresh(answers, f1, finite, has)
  return out


def squad_report(model: str, dev_json: str, out_dir: str) -> tuple[dict[str, float], str]:
  """Writes predictions.json (+ null_odds.json for v2.0); returns (scores, predictions path)."""
  answers, odds, version_2 = squad_predictions(model, dev_json)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "predictions.json")
  body = json.dumps(answers, ensure_ascii=False, indent=1).encode("utf-8")
  files.write_file_atomically(path, lambda f: f.write(body))
  if version_2:
    odds_body = json.dumps({q: (v if np.isfinite(v) else 1e30) for q, v in odds.items()}
                           ).encode("utf-8")
    files.write_file_atomically(os.path.join(out_dir, "null_odds.json"),
                                lambda f: f.write(odds_body))
  return squad_scores(dev_json, answers, odds, version_2), path


# --------------------------------------------------------------------------- CoNLL


def per_type_f1(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, dict[str, float]]:
  """{type: {precision, recall, f1, support}} plus 'overall', seqeval's default mode."""
  true_set, pred_set = set(), set()
  for i, (g, p) in enumerate(zip(gold, predicted)):
    true_set.update((i,) + c for c in entities.chunks(g))
    pred_set.update((i,) + c for c in entities.chunks(p))
  types = sorted({c[1] for c in true_set | pred_set})
  out = {}
  for kind in types + ["overall"]:
    t = {c for c in true_set if kind in (c[1], "overall")}
    p = {c for c in pred_set if kind in (c[1], "overall")}
    hits = len(t & p)
    precision = hits / len(p) if p else 0.0
    recall = hits / len(t) if t else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out[kind] = {"precision": precision, "recall": recall, "f1": f1, "support": len(t)}
  return out


def conll_report(model: str, dev_conll: str, out_dir: str,
                 predict_file: Optional[Callable] = None) -> tuple[dict, str]:
  """Predicts the dev file (JSON lines of words/labels), scores each type; (scores, path)."""
  from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "dev_predictions.jsonl")
  (predict_file or _predict_file())(model, dev_conll, path)
  with open(path, encoding="utf-8") as f:
    predicted = [json.loads(line)["labels"] for line in f if line.strip()]
  gold = [s.labels for s in conll.read_conll(dev_conll)]
  if len(gold) != len(predicted):
    raise UserError(f"{path}: {len(predicted)} sentences for {len(gold)} in {dev_conll}")
  return per_type_f1(gold, predicted), path
