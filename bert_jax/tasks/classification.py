"""Sequence classification and regression: GLUE (tfds) and local labelled files.

Metrics are sums over batches, exact over any number of steps, hosts and
devices: a confusion matrix (accuracy, F1, Matthews) for classification and
moments (Pearson) for regression; Spearman needs ranks, so regression also
returns per-row predictions that the loop gathers and `score` ranks. F1 is the
positive class's (label id 1) for two labels, as GLUE and scikit-learn's
default; macro-averaged over labels for more.

Labels: GLUE's come from tfds; a local file's string labels are mapped to ids
in sorted order (numeric labels by value), unless the init checkpoint names
labels that cover them (then its order, so its head can be kept). The map is
saved with the model. `config.num_labels=1` (or STS-B, or a local file whose
labels are non-integer numbers) makes it a regression.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.data import finetune_pipeline
from bert_jax.data.readers import sequences
from bert_jax.errors import UserError
from bert_jax.model import BertForSequenceClassification
from bert_jax.tasks import base

# GLUE task -> the metric its leaderboard ranks by (others: accuracy).
GLUE_MAIN_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}


class SequenceTask(base.EncoderTask):
  """`glue/<name>` or `local`: one label (or value) per text or text pair."""

  heads = ("classifier",)
  loss_terms = (("loss_sum", "example_weight"),)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.name = config.task
    self.glue = sequences.glue_name(self.name) if self.name.startswith("glue") else None
    self.kind = "classification"
    self.labels: Optional[list[str]] = None
    self.pair = False

  # -- what the model dir records

  @property
  def num_labels(self) -> int:
    return 1 if self.kind == "regression" else len(self.labels)

  @property
  def main_metric(self) -> str:
    if self.glue:
      return GLUE_MAIN_METRIC.get(self.glue, "accuracy")
    return "pearson" if self.kind == "regression" else "accuracy"

  def model_info(self) -> dict:
    return {"name": self.name, "kind": self.kind, "labels": self.labels,
            "num_labels": self.num_labels, "max_seq_length": int(self.config.max_seq_length),
            "text_pair": self.pair}

  def bind(self, meta: dict) -> None:
    self.kind, self.labels = meta["kind"], meta["labels"]
    self.pair = bool(meta.get("text_pair"))

  # -- model

  def build_model(self, bert_config) -> BertForSequenceClassification:
    return BertForSequenceClassification(bert_config, num_labels=self.num_labels)

  # -- sums and metrics

  def sums(self, model, params, batch: base.Batch, rng: Optional[jax.Array]) -> dict:
    logits_BxK = base.apply_model(model, params, batch, rng)
    w_B = batch["example_weights"].astype(jnp.float32)
    sums = dict(example_weight=jnp.sum(w_B))
    if self.kind == "regression":
      p_B, y_B = logits_BxK[:, 0], batch["labels"].astype(jnp.float32)
      sums.update(loss_sum=jnp.sum(jnp.square(p_B - y_B) * w_B), sum_p=jnp.sum(p_B * w_B),
                  sum_y=jnp.sum(y_B * w_B), sum_pp=jnp.sum(p_B * p_B * w_B),
                  sum_yy=jnp.sum(y_B * y_B * w_B), sum_py=jnp.sum(p_B * y_B * w_B))
      return sums
    labels_B = batch["labels"]
    xent_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
    k = self.num_labels
    true_BxK = jax.nn.one_hot(labels_B, k) * w_B[:, None]
    pred_BxK = jax.nn.one_hot(jnp.argmax(logits_BxK, -1), k)
    sums.update(loss_sum=jnp.sum(xent_B * w_B), confusion=true_BxK.T @ pred_BxK)  # [true, pred]
    return sums

  def denominators(self, batch: base.Batch) -> dict:
    return dict(example_weight=jnp.sum(batch["example_weights"].astype(jnp.float32)))

  def summarize(self, sums: Mapping[str, Any]) -> dict[str, float]:
    if "confusion" in sums:
      return classification_metrics(np.asarray(sums["confusion"]))
    if "sum_py" in sums:
      return {"mse": base.ratio(sums, "loss_sum", "example_weight"),
              "pearson": pearson_from_moments(sums)}
    return {}

  def predictions(self, model, params, batch) -> Optional[dict]:
    if self.kind != "regression":
      return None
    return dict(prediction=base.apply_model(model, params, batch, None)[:, 0],
                label=batch["labels"].astype(jnp.float32),
                weight=batch["example_weights"].astype(jnp.float32))

  def score(self, gathered: dict[str, np.ndarray]) -> dict[str, float]:
    real = gathered["weight"] > 0
    return {"spearman": spearman(gathered["prediction"][real], gathered["label"][real])}

  # -- data

  def read(self, config) -> tuple[sequences.Examples, dict[str, sequences.Examples]]:
    """(train examples, {eval infix: examples})."""
    if self.glue:
      data_dir = config.get("tfds_data_dir") or None
      train = sequences.read_glue(self.glue, "train", data_dir)
      splits = sequences.GLUE_EVAL_SPLITS.get(self.glue, {"": "validation"})
      evals = {infix: sequences.read_glue(self.glue, split, data_dir)
               for infix, split in splits.items()}
      return train, evals
    train = sequences.read_local(config.train_file)
    evals = {"": sequences.read_local(config.validation_file)} if config.validation_file else {}
    return train, evals

  def resolve_labels(self, config, train, evals) -> None:
    """Sets kind and label names from the config, the data and the init checkpoint."""
    every = [train, *evals.values()]
    if self.glue == "stsb" or config.get("num_labels") == 1:
      self.kind, self.labels = "regression", None
      return
    if train.label_names is not None:
      self.labels = list(train.label_names)
    else:
      values = sorted({str(label) for ex in every for label in ex.labels})
      if not self.glue and not config.get("num_labels") and _non_integer_numbers(values):
        self.kind, self.labels = "regression", None
        return
      self.labels = _sort_labels(values)
      known = _checkpoint_labels(config.get("init_checkpoint"))
      if known and set(self.labels) <= set(known):
        self.labels = known
    wanted = config.get("num_labels")
    if wanted and wanted != len(self.labels):
      raise UserError(f"config.num_labels={wanted} but the data has {len(self.labels)} labels "
                      f"{self.labels[:20]}")

  def _label_ids(self, examples: sequences.Examples) -> np.ndarray:
    if self.kind == "regression":
      try:
        return np.asarray([float(v) for v in examples.labels], np.float32)
      except (TypeError, ValueError):
        bad = next(v for v in examples.labels if not _is_number(v))
        raise UserError(f"{examples.source}: label {bad!r} is not a number (regression)") from None
    if examples.label_names is not None:
      return np.asarray(examples.labels, np.int32)
    index = {name: i for i, name in enumerate(self.labels)}
    ids = []
    for label in examples.labels:
      if str(label) not in index:
        raise UserError(f"{examples.source}: label {label!r} is not one of the model's labels "
                        f"{self.labels[:20]}")
      ids.append(index[str(label)])
    return np.asarray(ids, np.int32)

  def encode(self, tokenizer, examples: sequences.Examples, max_seq_length: int,
             labelled: bool = True) -> finetune_pipeline.Encoded:
    seq, lengths = finetune_pipeline.encode_texts(tokenizer, examples.texts, examples.pairs,
                                              max_seq_length)
    rows = {"labels": self._label_ids(examples)} if labelled else {}
    return finetune_pipeline.Encoded(seq, rows, lengths)

  def make_data(self, config: ml_collections.ConfigDict) -> base.Data:
    tokenizer, tokenizer_dir = self.load_tokenizer(config)
    train, evals = self.read(config)
    self.pair = train.pairs is not None
    self.resolve_labels(config, train, evals)
    length = int(config.max_seq_length)
    stream, eval_sets = finetune_pipeline.make_streams(
        config, self.encode(tokenizer, train, length),
        {infix: self.encode(tokenizer, ex, length) for infix, ex in evals.items()})
    meta = dict(vocab_size=tokenizer.vocab_size, max_seq_length=length, kind=self.kind,
                labels=self.labels, num_train_examples=len(train), text_pair=self.pair)
    return base.Data(meta=meta, train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir)


# --------------------------------------------------------------------------- metrics


def classification_metrics(confusion_KxK: np.ndarray) -> dict[str, float]:
  """accuracy, f1 (binary: class 1; else macro) and Matthews' correlation from counts."""
  c = np.asarray(confusion_KxK, np.float64)
  total = c.sum()
  if not total:
    return {"accuracy": float("nan"), "f1": float("nan"), "mcc": float("nan")}
  tp = np.diag(c)
  pred, true = c.sum(axis=0), c.sum(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    f1_k = np.where(pred + true > 0, 2 * tp / (pred + true), 0.0)
  f1 = f1_k[1] if c.shape[0] == 2 else float(np.mean(f1_k))
  cov_tp = tp.sum() * total - true @ pred
  denom = np.sqrt((total ** 2 - pred @ pred) * (total ** 2 - true @ true))
  mcc = float(cov_tp / denom) if denom > 0 else 0.0
  return {"accuracy": float(tp.sum() / total), "f1": float(f1), "mcc": mcc}


def pearson_from_moments(s: Mapping[str, float]) -> float:
  n = float(s["example_weight"])
  if n <= 1:
    return float("nan")
  cov = s["sum_py"] - s["sum_p"] * s["sum_y"] / n
  var_p = s["sum_pp"] - s["sum_p"] ** 2 / n
  var_y = s["sum_yy"] - s["sum_y"] ** 2 / n
  return float(cov / np.sqrt(var_p * var_y)) if var_p > 0 and var_y > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n, ties sharing their average rank."""
  order = np.argsort(x, kind="stable")
  sorted_x = x[order]
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  ranks = np.empty(len(x), np.float64)
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = (s + e + 1) / 2.0
  return ranks


def spearman(prediction: np.ndarray, label: np.ndarray) -> float:
  if len(prediction) < 2:
    return float("nan")
  a, b = _ranks(np.asarray(prediction, np.float64)), _ranks(np.asarray(label, np.float64))
  a, b = a - a.mean(), b - b.mean()
  denom = np.sqrt((a @ a) * (b @ b))
  return float(a @ b / denom) if denom > 0 else float("nan")


# --------------------------------------------------------------------------- labels


def _is_number(v: Any) -> bool:
  try:
    float(v)
    return True
  except (TypeError, ValueError):
    return False


def _non_integer_numbers(values: list[str]) -> bool:
  return (bool(values) and all(_is_number(v) for v in values)
          and any(float(v) != int(float(v)) for v in values))


def _sort_labels(values: list[str]) -> list[str]:
  if all(_is_number(v) for v in values):
    return sorted(values, key=float)
  return sorted(values)


def _checkpoint_labels(path: Optional[str]) -> Optional[list[str]]:
  if not path:
    return None
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  task = convert.read_model_task(path) or {}
  labels = task.get("labels")
  if not labels or all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
    return None  # Hugging Face's placeholder names say nothing
  return list(labels)
