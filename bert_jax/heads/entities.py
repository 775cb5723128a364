"""Entities from tag sequences: entity-level P/R/F1 for evaluation, word groups for predict.

Why two readings of a tag sequence:
- Metrics follow seqeval's default (conlleval-compatible, lenient) mode, the
  number every NER paper reports: a chunk ends when the previous tag closes
  (E, S), when an O/B/S follows B or I, or when the type changes; a chunk starts
  at B or S, at an I/E that follows O/E/S, or where the type changes. So
  `I-PER I-PER` is one PER entity and `B-PER I-LOC` two. Precision and recall
  are micro-averaged over (sentence, type, first word, last word) chunks; a zero
  denominator gives 0, as seqeval does.
- `predict` groups words as the Hugging Face token-classification pipeline does
  (a B- tag always starts a group, an I- tag or a bare tag joins a group of the
  same type, the group's score is the mean of its words' scores, 'O' groups
  are dropped), so it prints what that pipeline prints on the same weights.
Labels without a prefix (plain labels such as `PER`) are read as I-<label> by
both: consecutive equal labels form one entity. (seqeval itself would read
`PER` as tag 'P' of type 'ER'; we score plain labels as their I- form.)
"""

from __future__ import annotations

from typing import Sequence

_PREFIXES = ("B", "I", "E", "S")


def split_tag(label: str) -> tuple[str, str]:
  """(boundary tag, type): 'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); 'PER' -> ('I', 'PER')."""
  if label == "O":
    return "O", ""
  prefix, sep, kind = label.partition("-")
  if sep and prefix in _PREFIXES and kind:
    return prefix, kind
  return "I", label


def chunks(labels: Sequence[str]) -> list[tuple[str, int, int]]:
  """Entities (type, first index, last index) of one sentence, seqeval's default rules."""
  found = []
  prev_tag, prev_type, begin = "O", "", 0
  for i, label in enumerate(list(labels) + ["O"]):
    tag, kind = split_tag(label)
    type_changed = kind != prev_type
    closes = (prev_tag in ("E", "S")
              or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
              or (prev_tag != "O" and type_changed))
    opens = (tag in ("B", "S")
             or (prev_tag in ("E", "S", "O") and tag in ("I", "E"))
             or (tag != "O" and type_changed))
    if closes:
      found.append((prev_type, begin, i - 1))
    if opens:
      begin = i
    prev_tag, prev_type = tag, kind
  return found


def precision_recall_f1(gold: Sequence[Sequence[str]],
                        predicted: Sequence[Sequence[str]]) -> dict[str, float]:
  """Micro-averaged entity precision, recall and F1 over sentences (seqeval default mode)."""
  if len(gold) != len(predicted):
    raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
  true_set, pred_set = set(), set()
  for i, (g, p) in enumerate(zip(gold, predicted)):
    if len(g) != len(p):
      raise ValueError(f"sentence {i}: {len(g)} gold labels but {len(p)} predicted")
    true_set.update((i,) + c for c in chunks(g))
    pred_set.update((i,) + c for c in chunks(p))
  hits = len(true_set & pred_set)
  precision = hits / len(pred_set) if pred_set else 0.0
  recall = hits / len(true_set) if true_set else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


def _pipeline_tag(label: str) -> tuple[str, str]:
  """The HF pipeline's reading: only B-/I- are prefixes; anything else continues its type."""
  if label.startswith(("B-", "I-")):
    return label[0], label[2:]
  return "I", label


def group_words(labels: Sequence[str],
                scores: Sequence[float]) -> list[tuple[str, int, int, float]]:
  """Entities (type, first word, last word, mean score) as the HF pipeline groups words."""
  groups: list[tuple[str, int, int, float]] = []
  start = 0
  for i in range(1, len(labels) + 1):
    if i < len(labels):
      tag, kind = _pipeline_tag(labels[i])
      if kind == _pipeline_tag(labels[i - 1])[1] and tag != "B":
        continue
    kind = labels[start].split("-", 1)[-1]
    if kind != "O":
      groups.append((kind, start, i - 1, sum(scores[start:i]) / (i - start)))
    start = i
  return groups
