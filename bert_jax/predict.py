"""Predictions of a fine-tuned model: the head decides what comes out.

Why one module: `launch/predict.py` takes any model path and prints what its
head means; the head registry (`formats/heads.py`) and the model dir's task
record (labels, kind, max length) say which predictor applies. Inputs are
sorted by length and cut to length buckets (one compiled shape per bucket);
outputs come back in input order.

Sequence classification gives the label, its probability and every label's
probability (softmax of the logits, as transformers' text-classification
pipeline with `top_k=None`); regression gives the value.
"""

from __future__ import annotations

import functools
import json
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from bert_jax import files
from bert_jax import model as model_lib
from bert_jax.data import finetune_data
from bert_jax.data import task_readers
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained


def max_length(pre: Pretrained, requested: Optional[int] = None) -> int:
  """--max_seq_length, else the length the model was fine-tuned with, else the position table."""
  limit = pre.config.max_position_embeddings
  if requested is not None:
    if not 3 <= requested <= limit:
      raise UserError(f"--max_seq_length={requested}: must be in [3, {limit}] for this model")
    return requested
  return int((pre.task or {}).get("max_seq_length") or min(limit, 512))


@functools.lru_cache(maxsize=8)
def _classifier_forward(config: model_lib.BertConfig, num_labels: int) -> Callable:
  module = model_lib.BertForSequenceClassification(config, num_labels=num_labels)
  return jax.jit(lambda params, ids, types, mask: module.apply({"params": params}, ids, types,
                                                                 mask))


def batched_rows(lengths: np.ndarray, batch_size: int, limit: int):
  """(rows, bucket length) batches over inputs sorted by length; rows index the inputs."""
  order = np.argsort(lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    yield rows, finetune_data.bucket_length(int(lengths[rows].max()), limit)


class SequencePredictor:
  """Label + probabilities (classification) or value (regression) per text or text pair."""

  def __init__(self, pre: Pretrained, max_seq_length: Optional[int] = None,
               batch_size: int = 32):
    if "classifier" not in pre.heads:
      raise UserError(f"this model has no sequence-classification head (heads: "
                      f"{list(pre.heads) or 'none'})")
    self.pre = pre
    self.length = max_length(pre, max_seq_length)
    self.batch_size = batch_size
    task = pre.task or {}
    self.regression = task.get("kind") == "regression" or pre.num_labels == 1
    self.labels = pre.labels or [f"LABEL_{i}" for i in range(pre.num_labels)]
    self._forward = _classifier_forward(pre.config, pre.num_labels)
    self._params = jax.device_put(pre.params)

  def logits(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
    """[N, num_labels] float32 logits in input order."""
    seq, lengths = finetune_data.encode_texts(self.pre.tokenizer, texts, pairs, self.length)
    out = np.zeros((len(lengths), self.pre.num_labels), np.float32)
    for rows, length in batched_rows(lengths, self.batch_size, self.length):
      shape_rows = np.concatenate([rows, np.full(self.batch_size - len(rows), rows[0])])
      ids, types = seq["input_ids"][shape_rows, :length], seq["token_type_ids"][shape_rows, :length]
      mask = (np.arange(length)[None] < lengths[shape_rows][:, None]).astype(np.int32)
      out[rows] = np.asarray(self._forward(self._params, ids, types, mask))[:len(rows)]
    return out

  def predict(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> list[dict]:
    """Per input: {'value'} (regression) or {'label', 'score', 'probabilities'}."""
    logits = self.logits(texts, pairs)
    if self.regression:
      return [{"value": float(row[0])} for row in logits]
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    out = []
    for row in probs:
      best = int(np.argmax(row))
      out.append({"label": self.labels[best], "score": float(row[best]),
                  "probabilities": {label: float(p) for label, p in zip(self.labels, row)}})
    return out


# --------------------------------------------------------------------------- files


def read_inputs(source: str) -> tuple[list[str], Optional[list[str]]]:
  """(texts, pairs) of a training-format file, a .txt file (one text a line) or glue/NAME:SPLIT."""
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  if source.startswith("glue/"):
    name, _, split = source.partition(":")
    examples = task_readers.read_glue(task_readers.glue_name(name), split or "test")
    return examples.texts, examples.pairs
  if source.endswith(".txt"):
    return inference.read_lines(source), None
  examples = task_readers.read_local(source, require_labels=False)
  return examples.texts, examples.pairs


def _prediction_text(p: dict) -> str:
  return str(p["value"]) if "value" in p else p["label"]


def write_predictions(path: str, results: list[dict]) -> None:
  """FILE.tsv: GLUE's submission format (`index<TAB>prediction`); else JSON lines. Atomic."""
  if path.endswith(".tsv"):
    lines = ["index\tprediction"] + [f"{i}\t{_prediction_text(p)}"
                                     for i, p in enumerate(results)]
  else:
    lines = [json.dumps(p, ensure_ascii=False) for p in results]
  data = ("\n".join(lines) + "\n").encode("utf-8")
  files.write_file_atomically(path, lambda f: f.write(data))


def predict_file(model_path: str, source: str, output: str) -> int:
  """Predicts every input of `source` with the model at `model_path` into `output`."""
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  texts, pairs = read_inputs(source)
  results = SequencePredictor(convert.from_pretrained(model_path)).predict(texts, pairs)
  write_predictions(output, results)
  return len(results)
