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

  meta: dict  # vocab_size, max_seq_length, and what the task records (labels, ...)
  train: DataIterator
  eval_sets: dict[str, Callable[[], Iterable[HostBatch]]] = dataclasses.field(
      default_factory=dict)
  tokenizer_dir: Optional[str] = None
