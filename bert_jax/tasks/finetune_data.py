"""Shared input plumbing of the token-level fine-tuning tasks (tagging, QA).

Why: both tasks turn their examples into rows (dicts of 1-D arrays of varying
length plus scalars) and need the same things around them: the tokenizer and
label set of `config.init_checkpoint`, a training stream that is a function of
(seed, step) (`data.stream.GlobalOrder`: host h reads block h of each global
batch, so the stream does not depend on the number of hosts), and exact
evaluation passes whose last batch is padded with rows of weight 0.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import checkpoint
from bert_jax import tokenization
from bert_jax.data import stream
from bert_jax.errors import UserError

Record = dict[str, np.ndarray]


def example_weights(batch) -> jax.Array:
  if "example_weights" in batch:
    return batch["example_weights"].astype(jnp.float32)
  return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)


def encoder_flops_per_sequence(config, seq_len: int) -> float:
  """Training FLOPs (3x forward) of the encoder on one row, matmuls only (heads are tiny)."""
  e, m, n = config.hidden_size, config.intermediate_size, config.num_layers
  per_layer = 2 * seq_len * (4 * e * e + 2 * e * m) + 4 * seq_len * seq_len * e
  return 3.0 * n * per_layer


def _model_doc(path: str) -> tuple[str, dict]:
  """(format, the model's config document) without reading weights."""
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  fmt = convert.detect_format(path)
  if fmt in ("bert_jax", "bert_jax_workdir"):
    return fmt, checkpoint.read_model_doc(path)
  if fmt == "hf":
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
      return fmt, json.load(f)
  return fmt, {}


def load_tokenizer(config: ml_collections.ConfigDict) -> tuple[Any, str]:
  """The tokenizer of `config.init_checkpoint` (fine-tuning starts from a model)."""
  path = config.get("init_checkpoint") or ""
  if not path:
    raise UserError("fine-tuning needs config.init_checkpoint (a bert_jax, Hugging Face or "
                    "Google BERT model path): its tokenizer and weights")
  fmt, doc = _model_doc(path)
  if fmt in ("bert_jax", "bert_jax_workdir"):
    if not doc.get("tokenizer"):
      raise UserError(f"{path} has no tokenizer")
    directory = os.path.join(path, doc["tokenizer"])
  elif fmt == "hf":
    directory = path
  else:
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    directory = os.path.dirname(convert._google_prefix(path))  # pylint: disable=protected-access
  return tokenization.load_tokenizer(directory), directory


def init_checkpoint_labels(config: ml_collections.ConfigDict, kind: str) -> Optional[list[str]]:
  """Label names of `config.init_checkpoint` when it is a fine-tuned `kind` model."""
  path = config.get("init_checkpoint") or ""
  if not path:
    return None
  fmt, doc = _model_doc(path)
  if fmt in ("bert_jax", "bert_jax_workdir"):
    task = doc.get("task") or {}
    return list(task["labels"]) if task.get("kind") == kind and task.get("labels") else None
  if fmt == "hf" and kind == "tagging" and "BertForTokenClassification" in (
      doc.get("architectures") or []):
    id2label = {int(k): v for k, v in (doc.get("id2label") or {}).items()}
    return [id2label[i] for i in range(len(id2label))] or None
  return None


def _collate(records: Sequence[Record], length: int, pad_rows: int = 0) -> dict[str, np.ndarray]:
  """Pads 1-D fields to `length` (label-like fields with -1, others 0); adds masks/weights."""
  out: dict[str, np.ndarray] = {}
  n = len(records) + pad_rows
  for key, first in records[0].items():
    if np.ndim(first) == 0:
      column = np.zeros(n, np.asarray(first).dtype)
      column[:len(records)] = [r[key] for r in records]
    else:
      fill = -1 if key == "label_ids" else 0
      column = np.full((n, length), fill, np.asarray(first).dtype)
      for i, r in enumerate(records):
        column[i, :len(r[key])] = r[key]
    out[key] = column
  mask = np.zeros((n, length), np.int32)
  for i, r in enumerate(records):
    mask[i, :len(r["input_ids"])] = 1
  out["attention_mask"] = mask
  weights = np.zeros(n, np.float32)
  weights[:len(records)] = 1.0
  out["example_weights"] = weights
  return out


class TrainIterator:
  """Global batches of rows in `GlobalOrder`; the state is the number of batches read."""

  def __init__(self, records: Sequence[Record], global_batch_size: int, seed: int, length: int):
    self.records = records
    self.length = length
    self.order = stream.GlobalOrder(len(records), global_batch_size, seed)
    self.batch_index = 0

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rows, _ = self.order.host_rows(self.batch_index, jax.process_index(), jax.process_count())
    self.batch_index += 1
    return _collate([self.records[i] for i in rows], self.length)

  def get_state(self) -> dict:
    return {"batch_index": self.batch_index}

  def set_state(self, state: dict) -> None:
    self.batch_index = int(state["batch_index"])


def train_iterator(records: Sequence[Record], config: ml_collections.ConfigDict) -> TrainIterator:
  return TrainIterator(records, config.batch_size, config.seed, config.max_seq_length)


def eval_factory(records: Sequence[Record], config: ml_collections.ConfigDict,
                 offset: int = 0) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
  """A factory of one exact pass (feature ids shifted by `offset`), last batch padded."""
  batch = int(config.get("eval_batch_size") or config.batch_size)
  per_host = batch // jax.process_count()
  shifted = [dict(r, feature_index=np.asarray(int(r["feature_index"]) + offset, np.int32))
             for r in records]

  def passes():
    for start in range(0, len(shifted), batch):
      rows = shifted[start:start + batch]
      mine = rows[jax.process_index() * per_host:(jax.process_index() + 1) * per_host]
      yield _collate(mine or rows[:1], config.max_seq_length,
                     pad_rows=per_host - len(mine)) if mine else _empty(rows[0], per_host,
                                                                        config.max_seq_length)

  return passes


def _empty(template: Record, rows: int, length: int) -> dict[str, np.ndarray]:
  out = _collate([template], length, pad_rows=rows - 1)
  out["example_weights"][:] = 0.0
  return out
