"""Sequence classification and regression data: GLUE (tfds) and local labelled files.

Labels: GLUE's come from tfds; a local file's string labels are mapped to ids in
sorted order (numeric labels by value), unless the init checkpoint names labels
that cover them (then its order, so its head can be kept). Every label must be in
the training data: a label seen only in the validation file is an error (the
head would never be trained on it). The map is part of the run's `Spec`.
`config.num_labels=1` (or STS-B, or a local file whose labels are all numbers
with at least one non-integer) makes it a regression, and the log says so; one
stray non-integer among integer labels is an error, not a silent regression.
"""

from __future__ import annotations

from typing import Any, Optional

from absl import logging
import ml_collections
import numpy as np

from bert_jax.data import finetune_pipeline
from bert_jax.data.contract import Data, Spec
from bert_jax.data.readers import sequences
from bert_jax.errors import UserError
from bert_jax.tasks import base

HEAD = "classifier"
# GLUE task -> the metric its leaderboard ranks by (others: accuracy).
GLUE_MAIN_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}


def read(config) -> tuple[sequences.Examples, dict[str, sequences.Examples]]:
  """(train examples, {eval infix: examples})."""
  if config.task.startswith("glue"):
    glue = sequences.glue_name(config.task)
    data_dir = config.tfds_data_dir or None
    train = sequences.read_glue(glue, "train", data_dir)
    splits = sequences.GLUE_EVAL_SPLITS.get(glue, {"": "validation"})
    return train, {infix: sequences.read_glue(glue, split, data_dir)
                   for infix, split in splits.items()}
  train = sequences.read_local(config.train_file)
  evals = {"": sequences.read_local(config.validation_file)} if config.validation_file else {}
  return train, evals


def resolve_labels(config, train: sequences.Examples,
                   evals: dict[str, sequences.Examples]) -> tuple[str, Optional[list[str]]]:
  """(kind, label names) from the config, the data and the init checkpoint."""
  glue = sequences.glue_name(config.task) if config.task.startswith("glue") else None
  wanted = config.num_labels
  if glue == "stsb" or wanted == 1:
    return "regression", None
  if train.label_names is not None:
    labels = list(train.label_names)
  else:
    values = sorted({str(label) for label in train.labels})
    if not glue and not wanted and _all_numbers(values) and _non_integer(values):
      stray = [str(v) for v in train.labels if not _is_integer(v)]
      if len(stray) <= 0.05 * len(train.labels) and any(_is_integer(v) for v in values):
        raise UserError(f"{train.source}: the labels are integers except {sorted(set(stray))[:5]} "
                        f"({len(stray)} of {len(train.labels)}): fix them, or set "
                        "config.num_labels=1 to train a regression")
      logging.warning("%s: every label is a number and %d of %d are not integers: training a "
                      "regression (set config.num_labels to classify)", train.source,
                      len(stray), len(train.labels))
      return "regression", None
    labels = _sort_labels(values)
    known = base.checkpoint_labels(config.init_checkpoint, "classification")
    if known and set(labels) <= set(known):
      labels = known
    for infix, examples in evals.items():
      unseen = sorted({str(l) for l in examples.labels} - set(labels))
      if unseen:
        raise UserError(f"{examples.source}: labels {unseen[:10]} never occur in the training "
                        f"data {train.source} (its labels: {labels[:20]})")
  if wanted and wanted != len(labels):
    raise UserError(f"config.num_labels={wanted} but the data has {len(labels)} labels "
                    f"{labels[:20]}")
  return "classification", labels


def label_ids(kind: str, labels: Optional[list[str]], examples: sequences.Examples) -> np.ndarray:
  if kind == "regression":
    try:
      return np.asarray([float(v) for v in examples.labels], np.float32)
    except (TypeError, ValueError):
      bad = next(v for v in examples.labels if not _is_number(v))
      raise UserError(f"{examples.source}: label {bad!r} is not a number (regression)") from None
  if examples.label_names is not None:
    return np.asarray(examples.labels, np.int32)
  index = {name: i for i, name in enumerate(labels)}
  ids = []
  for label in examples.labels:
    if str(label) not in index:
      raise UserError(f"{examples.source}: label {label!r} is not one of the model's labels "
                      f"{labels[:20]}")
    ids.append(index[str(label)])
  return np.asarray(ids, np.int32)


def encode(tokenizer, examples: sequences.Examples, max_seq_length: int, kind: str,
           labels: Optional[list[str]]) -> finetune_pipeline.Encoded:
  seq, lengths = finetune_pipeline.encode_texts(tokenizer, examples.texts, examples.pairs,
                                                max_seq_length)
  return finetune_pipeline.Encoded(seq, {"labels": label_ids(kind, labels, examples)}, lengths)


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
  base.check_files(config)
  tokenizer, tokenizer_dir = base.load_tokenizer(config)
  train, evals = read(config)
  kind, labels = resolve_labels(config, train, evals)
  length = int(config.max_seq_length)
  stream, eval_sets = finetune_pipeline.make_streams(
      config, encode(tokenizer, train, length, kind, labels),
      {infix: encode(tokenizer, ex, length, kind, labels) for infix, ex in evals.items()},
      pad_id=tokenizer.pad_id)
  glue = sequences.glue_name(config.task) if config.task.startswith("glue") else None
  options = {"text_pair": train.pairs is not None}
  if glue in GLUE_MAIN_METRIC:
    options["main_metric"] = GLUE_MAIN_METRIC[glue]
  spec = Spec(task=config.task, head=HEAD, kind=kind, max_seq_length=length,
              vocab_size=tokenizer.vocab_size, labels=None if labels is None else tuple(labels),
              num_train_examples=len(train), options=options)
  return Data(train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir), spec


# --------------------------------------------------------------------------- labels


def _is_number(v: Any) -> bool:
  try:
    float(v)
    return True
  except (TypeError, ValueError):
    return False


def _is_integer(v: Any) -> bool:
  return _is_number(v) and float(v) == int(float(v))


def _all_numbers(values: list[str]) -> bool:
  return bool(values) and all(_is_number(v) for v in values)


def _non_integer(values: list[str]) -> bool:
  return any(_is_number(v) and not _is_integer(v) for v in values)


def _sort_labels(values: list[str]) -> list[str]:
  if _all_numbers(values):
    return sorted(values, key=float)
  return sorted(values)
