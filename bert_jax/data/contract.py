"""The contract between the input side and the trainer: batches, iterators, `Data`.

Why in `data/`: readers, pipelines and synthetic data produce it and the trainer
consumes it; keeping it here means `data/` never imports from the layers above it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional, Protocol

import jax
import numpy as np

Batch = dict[str, jax.Array]
HostBatch = dict[str, np.ndarray]


class DataIterator(Protocol):
  """A host-local batch iterator whose position can be saved and restored exactly."""

  def __next__(self) -> HostBatch: ...

  def get_state(self) -> dict: ...

  def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass
class Data:
  """What the loop needs from the input side (tests pass synthetic ones).

  `eval_sets` maps a metric-name infix to a factory of a finite iterator over
  one exact pass of an evaluation set ('' gives `eval_accuracy`, 'mismatched'
  gives `eval_mismatched_accuracy`). Every batch has the same shape on every
  host; rows past the end carry `example_weights` 0.
  """

  train: DataIterator
  eval_sets: dict[str, Callable[[], Iterable[HostBatch]]] = dataclasses.field(
      default_factory=dict)
  tokenizer_dir: Optional[str] = None
  # Host-side items behind the evaluation rows (sentences, questions) for heads whose
  # metrics need them (`FeatureSets`); None when every metric is a sum.
  eval_items: Optional["FeatureSets"] = None


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a run's data fixes about its head: frozen, saved with the run, compared on resume.

  `task` is config.task; `head` a name of the head registry (`bert_jax.heads`); `kind`
  what the head's outputs mean (classification, regression, tagging, qa, multiple_choice,
  pretraining, ...); `labels` the label names in id order (None where outputs are not
  labelled); `options` the head's other settings (text_pair, version_2, doc_stride, ...).
  `to_record()` is the model dir's `task` record, which predict reads.
  """

  task: str
  head: str
  kind: str
  max_seq_length: int
  vocab_size: int
  labels: Optional[tuple[str, ...]] = None
  num_train_examples: Optional[int] = None
  options: dict = dataclasses.field(default_factory=dict)

  @property
  def num_labels(self) -> Optional[int]:
    if self.kind == "regression":
      return 1
    return None if self.labels is None else len(self.labels)

  def to_record(self) -> dict:
    record = {"name": self.task, "head": self.head, "kind": self.kind,
              "max_seq_length": int(self.max_seq_length)}
    if self.labels is not None or self.kind == "regression":
      record.update(labels=None if self.labels is None else list(self.labels),
                    num_labels=self.num_labels)
    record.update(self.options)
    return record


class FeatureSets:
  """Evaluation sets whose rows are features (windows) of host-side items (sentences,
  questions): feature ids are numbered across all sets, so a head's `score` can tell from a
  gathered `feature_index` which set a pass went over and map rows back to their items."""

  def __init__(self):
    self._sets: list[tuple[int, object, list]] = []  # (first feature id, features, items)
    self._next = 0

  def add(self, features: object, items: list) -> int:
    """Registers a set; returns the id of its first feature (pass it to `encoded`)."""
    offset = self._next
    self._sets.append((offset, features, items))
    self._next += len(features)
    return offset

  def lookup(self, index: np.ndarray) -> tuple[object, list, np.ndarray]:
    """(features, items, feature indices within that set) of a pass's gathered feature ids."""
    offset, features, items = next(e for e in reversed(self._sets) if e[0] <= index.min())
    return features, items, index - offset

  def real_rows(self, gathered: dict) -> Optional[tuple[np.ndarray, object, list, np.ndarray]]:
    """(mask of the real rows, features, items, their feature indices) of a pass's gathered
    outputs (rows with `weights` > 0 carrying `feature_index`), or None when none is real."""
    keep = gathered["weights"] > 0
    index = gathered["feature_index"][keep].astype(np.int64)
    if not len(index):
      return None
    return (keep, *self.lookup(index))
