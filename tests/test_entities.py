"""Entity metrics against seqeval (default mode) on random and hand-picked tag sequences."""

import random
import warnings

import pytest
from seqeval import metrics as seqeval_metrics
from seqeval.metrics.sequence_labeling import get_entities

from bert_jax.heads import entities

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-PER", "I-ORG", "E-ORG", "S-ORG"]


def _random_sentences(seed, labels, n=300):
  rng = random.Random(seed)
  return [[rng.choice(labels) for _ in range(rng.randint(1, 12))] for _ in range(n)]


@pytest.mark.parametrize("labels", [LABELS, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]])
def test_chunks_and_scores_equal_seqeval(labels):
  gold = _random_sentences(0, labels)
  pred = [[l if random.Random(i * 31 + j).random() < 0.7 else random.Random(i + j).choice(labels)
           for j, l in enumerate(s)] for i, s in enumerate(gold)]
  for sentence in gold:
    assert entities.chunks(sentence) == get_entities(sentence)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    want = {"precision": seqeval_metrics.precision_score(gold, pred),
            "recall": seqeval_metrics.recall_score(gold, pred),
            "f1": seqeval_metrics.f1_score(gold, pred)}
  got = entities.precision_recall_f1(gold, pred)
  assert 0.1 < want["f1"] < 0.95
  for k in want:
    assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_plain_labels_score_as_their_i_form():
  gold = _random_sentences(1, ["O", "PER", "LOC", "MISC"])
  pred = _random_sentences(2, ["O", "PER", "LOC", "MISC"])
  pred = [p[:len(g)] + ["O"] * (len(g) - len(p)) for g, p in zip(gold, pred)]
  as_i = lambda ss: [[l if l == "O" else "I-" + l for l in s] for s in ss]
  got = entities.precision_recall_f1(gold, pred)
  assert got["f1"] == pytest.approx(seqeval_metrics.f1_score(as_i(gold), as_i(pred)), abs=1e-12)
  assert entities.chunks(["PER", "PER", "O", "LOC", "PER"]) == [("PER", 0, 1), ("LOC", 3, 3),
                                                                ("PER", 4, 4)]


def test_zero_denominators_give_zero_as_seqeval():
  gold, pred = [["O", "O"]], [["O", "B-PER"]]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    want = (seqeval_metrics.precision_score(gold, pred), seqeval_metrics.recall_score(gold, pred),
            seqeval_metrics.f1_score(gold, pred))
  got = entities.precision_recall_f1(gold, pred)
  assert (got["precision"], got["recall"], got["f1"]) == want
