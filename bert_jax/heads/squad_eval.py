"""SQuAD answers from start/end logits, and the official exact-match / F1 score.

Why here and not in the jitted step: an answer is a character span of the
original context chosen over all windows of a question, which needs the host's
view of the windows (offsets, max-context flags). Two selections:
- `best_answers` is BERT's evaluation recipe: the `n_best` highest start and
  end logits of each window, spans with start <= end, length <=
  `max_answer_length`, both ends in the context and the start in its
  max-context window, ranked by start + end logit; for SQuAD v2.0 the null
  answer (the [CLS] score, the lowest over windows) wins when it beats the best
  span by more than `null_score_diff_threshold`.
- `top_spans` is what `predict` prints: softmax of the start and of the end
  logits over the context pieces of a window, the spans with start <= end <
  start + max_answer_length ranked by the product of the two probabilities
  (the classic question-answering pipeline's postprocessing).
The score follows the official SQuAD v2.0 evaluation script's rules: answers
are normalised (lower case, punctuation and the articles a/an/the removed,
whitespace collapsed); exact match and token F1 take the max over the gold
answers; a question without gold answers has the single gold answer "".
"""

from __future__ import annotations

import collections
import re
import string
from typing import Optional, Sequence

import numpy as np

from bert_jax.data.readers import squad

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
  pred_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(gold).split()
  if not pred_tokens or not gold_tokens:  # no-answer: right only if both are empty
    return float(pred_tokens == gold_tokens)
  same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
  if not same:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def gold_answers(example: squad.QAExample) -> list[str]:
  answers = [text for text, _ in example.answers if normalize_answer(text)]
  return answers if answers and not example.is_impossible else [""]


def score(examples: Sequence[squad.QAExample], predictions: dict[str, str]) -> dict[str, float]:
  """Official exact match and F1 as fractions in [0, 1] (a missing prediction counts as "")."""
  if not examples:
    return {"exact_match": float("nan"), "f1": float("nan")}
  em = f1 = 0.0
  for ex in examples:
    golds = gold_answers(ex)
    pred = predictions.get(ex.qid, "")
    em += max(exact_match(pred, g) for g in golds)
    f1 += max(token_f1(pred, g) for g in golds)
  return {"exact_match": em / len(examples), "f1": f1 / len(examples)}


def _top(x: np.ndarray, k: int) -> np.ndarray:
  return np.argsort(-x, kind="stable")[:k]


def best_answers(examples: Sequence[squad.QAExample], features: squad.QAFeatures,
                 feature_index: np.ndarray, start_logits_FxL: np.ndarray,
                 end_logits_FxL: np.ndarray, **kwargs) -> dict[str, str]:
  """{question id: answer text} from the logits of rows `feature_index` (BERT's recipe)."""
  return answers_and_null_odds(examples, features, feature_index, start_logits_FxL,
                               end_logits_FxL, **kwargs)[0]


def answers_and_null_odds(examples: Sequence[squad.QAExample], features: squad.QAFeatures,
                          feature_index: np.ndarray, start_logits_FxL: np.ndarray,
                          end_logits_FxL: np.ndarray, *, n_best: int = 20,
                          max_answer_length: int = 30, version_2: bool = False,
                          null_score_diff_threshold: float = 0.0
                          ) -> tuple[dict[str, str], dict[str, float]]:
  """({question id: answer}, {question id: null score - best span score}) as `best_answers`;
  the odds are what the official SQuAD v2.0 script's best-threshold search reads."""
  by_example: dict[int, list[int]] = collections.defaultdict(list)
  for row, f in enumerate(np.asarray(feature_index).tolist()):
    by_example[int(features.example_index[f])].append(row)
  answers, odds = {}, {}
  for ei, ex in enumerate(examples):
    best_span, best_score, null_score = None, -np.inf, np.inf
    for row in by_example.get(ei, []):
      f = int(np.asarray(feature_index)[row])
      spans, usable = features.char_spans[f], features.max_context[f]
      n = len(spans)
      s_logits, e_logits = start_logits_FxL[row][:n], end_logits_FxL[row][:n]
      null_score = min(null_score, float(s_logits[0] + e_logits[0]))
      for s in _top(s_logits, n_best):
        for e in _top(e_logits, n_best):
          if (e < s or e - s + 1 > max_answer_length or spans[s, 0] < 0 or spans[e, 0] < 0
              or not usable[s]):
            continue
          value = float(s_logits[s] + e_logits[e])
          if value > best_score:
            best_score, best_span = value, (int(spans[s, 0]), int(spans[e, 1]))
    text = ex.context[best_span[0]:best_span[1]] if best_span is not None else ""
    odds[ex.qid] = float(null_score - best_score) if best_span is not None else float("inf")
    if version_2 and (best_span is None or odds[ex.qid] > null_score_diff_threshold):
      text = ""
    answers[ex.qid] = text
  return answers, odds


def _softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max())
  return e / e.sum()


def top_spans(start_logits_L: np.ndarray, end_logits_L: np.ndarray, context_mask_L: np.ndarray,
              max_answer_length: int = 15, top_k: int = 1,
              allowed_start_L: Optional[np.ndarray] = None) -> list[tuple[int, int, float]]:
  """The `top_k` (start, end, p_start * p_end) spans of one window, best first.

  Probabilities are softmaxes over the context positions (`context_mask_L`);
  spans satisfy start <= end < start + max_answer_length.
  """
  positions = np.nonzero(context_mask_L)[0]
  if not len(positions):
    return []
  p_start = _softmax(np.asarray(start_logits_L)[positions])
  p_end = _softmax(np.asarray(end_logits_L)[positions])
  joint = np.triu(np.outer(p_start, p_end))  # start <= end (positions are increasing)
  joint = np.tril(joint, max_answer_length - 1)  # end - start < max_answer_length (in pieces)
  if allowed_start_L is not None:
    joint[~np.asarray(allowed_start_L)[positions]] = 0.0
  order = np.argsort(-joint, axis=None, kind="stable")[:top_k]
  out = []
  for flat in order:
    i, j = np.unravel_index(flat, joint.shape)
    if joint[i, j] <= 0.0:
      break
    out.append((int(positions[i]), int(positions[j]), float(joint[i, j])))
  return out
