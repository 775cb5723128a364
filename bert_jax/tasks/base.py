"""What the data builders share: the init checkpoint's tokenizer and labels, split reading.

Why this shape: a task is a data builder, `make_data(config) -> (Data, Spec)`:
it reads and encodes the examples (`bert_jax/data/`), decides what the data
fixes about the head (labels, kind, lengths: the frozen `Spec`, saved with the
run and compared on resume) and returns both. Nothing is set on an object and
read back later; the trainer builds the head from the Spec
(`bert_jax.heads.for_spec`).
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections

from bert_jax.errors import UserError


def load_tokenizer(config: ml_collections.ConfigDict) -> tuple[Any, str]:
  """(tokenizer, its dir) of config.init_checkpoint, which fine-tuning requires."""
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  if not config.init_checkpoint:
    raise UserError("config.init_checkpoint is empty: fine-tuning starts from a model path "
                    "(a Hugging Face or Google BERT dir, a bert_jax export or workdir)")
  tokenizer_dir = convert.model_tokenizer_dir(config.init_checkpoint)
  return tokenization.load_tokenizer(tokenizer_dir), tokenizer_dir


def checkpoint_labels(path: Optional[str], kind: str) -> Optional[list[str]]:
  """The label names of a model path whose head is of `kind`, if it names real ones."""
  if not path:
    return None
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  task = convert.read_model_task(path) or {}
  labels = task.get("labels")
  if task.get("kind") != kind or not labels:
    return None
  if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
    return None  # Hugging Face's placeholder names say nothing
  return list(labels)


def check_files(config: ml_collections.ConfigDict, keys=("train_file", "validation_file",
                                                       "test_file")) -> None:
  """Every named data file exists, checked before anything is read or trained (a missing
  test_file used to surface only after training)."""
  import os  # pylint: disable=g-import-not-at-top
  for key in keys:
    path = config[key]
    if path and not os.path.isfile(path):
      raise UserError(f"config.{key}={path}: no such file")
