"""Sequence classification and regression: pooled [CLS] -> dropout -> linear.

Metrics are sums over batches, exact over any number of steps, hosts and
devices: a confusion matrix (accuracy, F1, Matthews) for classification. F1 is
the positive class's (label id 1) for two labels, as GLUE and scikit-learn's
default; macro-averaged over labels for more. Regression's Pearson and Spearman
are computed on the host in float64 from the gathered predictions: moments
summed in float32 cancel (a variance of -1.5e-5 where Pearson is 0.137 was
seen), and Spearman needs ranks anyway.

Prediction gives the label, its probability and every label's probability
(softmax of the logits, as transformers' text-classification pipeline with
`top_k=None`); regression gives the value.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import dropout as dropout_lib
from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.heads import base


class BertForSequenceClassification(nn.Module):
  """Pooled [CLS] -> dropout -> linear. `num_labels=1` is regression."""

  config: model_lib.BertConfig
  num_labels: int = 2

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL=None, attention_mask_BxL=None,
               position_ids_BxL=None, packing_ids_BxL=None, *, deterministic: bool = True,
               unpack_rows_GxS=None, unpack_positions_GxSxT=None):
    cfg = self.config
    out = model_lib.BertModel(cfg, name="bert")(
        input_ids_BxL, token_type_ids_BxL, attention_mask_BxL, position_ids_BxL,
        packing_ids_BxL, deterministic=deterministic, unpack_rows_GxS=unpack_rows_GxS,
        unpack_positions_GxSxT=unpack_positions_GxSxT)
    pooled_BxE = dropout_lib.Dropout(cfg.hidden_dropout_rate)(out.pooled_output,
                                                     deterministic=deterministic)
    return model_lib.dense(self.num_labels, ("embed", None), cfg, "classifier")(
        pooled_BxE).astype(jnp.float32)


class Classifier(base.Head):
  """One label (or value) per text or text pair."""

  name = "classifier"
  description = "sequence-classification"
  hf_prefix = "classifier."
  param_key = "classifier"
  uses_pooler = True
  labelled = True
  architecture = "BertForSequenceClassification"
  loss_terms = (("loss_sum", "example_weight"),)

  @classmethod
  def rows(cls, config, num_labels):
    return base.dense_rows("classifier", ("classifier",), num_labels, config.hidden_size)

  @classmethod
  def modern_rows(cls, config, num_labels):
    """ModernBertForSequenceClassification's own tensors (its `head.*` is the pooler)."""
    return cls.rows(config, num_labels)

  @classmethod
  def hf_kind(cls, hf, num_labels):
    return ("regression" if hf.get("problem_type") == "regression" or num_labels == 1
            else "classification")

  # --- Training. ---

  @property
  def regression(self) -> bool:
    return self.spec.kind == "regression"

  @property
  def main_metric(self) -> str:
    return self.spec.options.get("main_metric") or ("pearson" if self.regression else "accuracy")

  def build_model(self, bert_config) -> BertForSequenceClassification:
    return BertForSequenceClassification(bert_config, num_labels=self.spec.num_labels)

  def sums(self, model, params, batch, rng) -> dict:
    logits_BxK = base.apply_model(model, params, batch, rng)
    w_B = batch["example_weights"].astype(jnp.float32)
    sums = dict(example_weight=jnp.sum(w_B))
    if self.regression:
      p_B, y_B = logits_BxK[:, 0], batch["labels"].astype(jnp.float32)
      sums.update(loss_sum=jnp.sum(jnp.square(p_B - y_B) * w_B))
      return sums
    labels_B = batch["labels"]
    xent_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
    k = self.spec.num_labels
    true_BxK = jax.nn.one_hot(labels_B, k) * w_B[:, None]
    pred_BxK = jax.nn.one_hot(jnp.argmax(logits_BxK, -1), k)
    sums.update(loss_sum=jnp.sum(xent_B * w_B), confusion=true_BxK.T @ pred_BxK)  # [true, pred]
    return sums

  def denominators(self, batch) -> dict:
    return dict(example_weight=jnp.sum(batch["example_weights"].astype(jnp.float32)))

  def summarize(self, sums: Mapping[str, Any]) -> dict[str, float]:
    if "confusion" in sums:
      return classification_metrics(np.asarray(sums["confusion"]))
    if self.regression and "loss_sum" in sums:
      return {"mse": base.ratio(sums, "loss_sum", "example_weight")}
    return {}

  def predictions(self, model, params, batch) -> Optional[dict]:
    if not self.regression:
      return None
    return dict(prediction=base.apply_model(model, params, batch, None)[:, 0],
                label=batch["labels"].astype(jnp.float32),
                weight=batch["example_weights"].astype(jnp.float32))

  def score(self, gathered, eval_items) -> dict[str, float]:
    real = gathered["weight"] > 0
    p, y = gathered["prediction"][real], gathered["label"][real]
    return {"pearson": pearson(p, y), "spearman": spearman(p, y)}

  # --- Prediction. ---

  @classmethod
  def read_inputs(cls, source: str) -> tuple[list[str], Optional[list[str]]]:
    """(texts, pairs) of a training-format file, a .txt file (one text a line) or
    glue/NAME:SPLIT."""
    from bert_jax import inference  # pylint: disable=g-import-not-at-top
    from bert_jax.data.readers import sequences  # pylint: disable=g-import-not-at-top
    if source.startswith("glue/"):
      name, _, split = source.partition(":")
      examples = sequences.read_glue(sequences.glue_name(name), split or "test")
      return examples.texts, examples.pairs
    if source.endswith(".txt"):
      return inference.read_lines(source), None
    examples = sequences.read_local(source, require_labels=False)
    return examples.texts, examples.pairs

  @classmethod
  def command_line_inputs(cls, args):
    if args.get("text") is None:
      raise UserError("give exactly one of --text (with optional --text_pair) or --input=FILE")
    return [args["text"]], None if args.get("text_pair") is None else [args["text_pair"]]

  @classmethod
  def predict(cls, pre, inputs, options) -> list[dict]:
    texts, pairs = inputs
    trained_on_pairs = (pre.task or {}).get("text_pair")
    if trained_on_pairs is not None and bool(trained_on_pairs) != (pairs is not None):
      options.get("warn", lambda _: None)(
          "the model was fine-tuned on " + ("text pairs" if trained_on_pairs else "single texts")
          + "; predicting anyway")
    predictor = SequencePredictor(pre, options.get("max_seq_length"),
                                  options.get("batch_size") or 32)
    results = predictor.predict(texts, pairs)
    if predictor.cut:
      options.get("warn", lambda _: None)(
          f"{predictor.cut} input(s) reached the model's {predictor.length} tokens: longer ones "
          "were cut there (--max_seq_length)")
    return results

  @classmethod
  def shown_inputs(cls, inputs) -> list[str]:
    texts, pairs = inputs
    return list(texts) if pairs is None else [f"{a} ||| {b}" for a, b in zip(texts, pairs)]

  @classmethod
  def show(cls, result, options) -> str:
    if "value" in result:
      return f"{result['value']:.4f}"
    top = max(1, options.get("top_k") or 3)
    best = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:top]
    return "\t".join(f"{label} {prob:.4f}" for label, prob in best)

  @classmethod
  def tsv_field(cls, result) -> str:
    return str(result["value"]) if "value" in result else result["label"]


@functools.lru_cache(maxsize=8)
def _forward(config: model_lib.BertConfig, num_labels: int):
  module = BertForSequenceClassification(config, num_labels=num_labels)

  @jax.jit
  def forward(params, batch):
    logits_SxK = module.apply({"params": params}, *base.packed_rows(batch),
                               **base.packed_inputs(batch))
    rows, segments = batch["starts"].shape
    return {"segments": logits_SxK.reshape(rows, segments, -1)}  # per segment of a row

  return forward


class SequencePredictor:
  """Label + probabilities (classification) or value (regression) per text or text pair."""

  def __init__(self, pre, max_seq_length: Optional[int] = None, batch_size: int = 32):
    if Classifier.name not in pre.heads:
      raise UserError(f"this model has no sequence-classification head (heads: "
                      f"{list(pre.heads) or 'none'})")
    self.pre = pre
    self.length = base.max_length(pre, max_seq_length)
    self.batch_size = batch_size
    self.regression = (pre.task or {}).get("kind") == "regression" or pre.num_labels == 1
    self.labels = base.label_names(pre)
    self._forward = _forward(pre.config, pre.num_labels)
    self.cut = 0

  def logits(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
    """[N, num_labels] float32 logits in input order."""
    enc = self.pre.tokenizer.encode_batch(list(texts), None if pairs is None else list(pairs),
                                          max_length=self.length, padding="none")
    lengths = np.asarray([len(r) for r in enc["input_ids"]])
    self.cut = int(np.sum(lengths >= self.length))  # inputs that may have been cut
    out = base.run_rows(self.pre, self._forward, enc["input_ids"], enc["token_type_ids"],
                        self.length, self.batch_size, pack=True)
    return np.stack([o["segments"] for o in out]) if out else np.zeros(
        (0, self.pre.num_labels), np.float32)

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
  """Pearson from summed moments (float64 sums only: float32 ones cancel)."""
  n = float(s["example_weight"])
  if n <= 1:
    return float("nan")
  cov = s["sum_py"] - s["sum_p"] * s["sum_y"] / n
  var_p = s["sum_pp"] - s["sum_p"] ** 2 / n
  var_y = s["sum_yy"] - s["sum_y"] ** 2 / n
  return float(cov / np.sqrt(var_p * var_y)) if var_p > 0 and var_y > 0 else float("nan")


def pearson(prediction: np.ndarray, label: np.ndarray) -> float:
  """Pearson's r in float64 with centred values (no cancellation)."""
  if len(prediction) < 2:
    return float("nan")
  a = np.asarray(prediction, np.float64) - np.mean(prediction, dtype=np.float64)
  b = np.asarray(label, np.float64) - np.mean(label, dtype=np.float64)
  denom = np.sqrt((a @ a) * (b @ b))
  return float(a @ b / denom) if denom > 0 else float("nan")


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
  return pearson(_ranks(np.asarray(prediction, np.float64)),
                 _ranks(np.asarray(label, np.float64)))
