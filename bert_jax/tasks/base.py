"""The task interface: what the one trainer needs to know about a task.

Why this shape: `train.make_train_step` / `make_eval_step` are the only jitted
functions, shared by pretraining and every fine-tuning task. A task supplies
the pieces that differ, all pure:
- `build_model(bert_config)`: the linen module (encoder + this task's head);
- `init_inputs(config)`: dummy inputs to initialise it;
- `sums(model, params, batch, rng)`: loss numerators and metric sums over one
  (micro-)batch, honouring per-example weights (padding rows weigh 0);
- `loss_terms`: pairs (numerator, denominator) of sum names; the loss is
  `sum_i numerator_i / denominator_i` with denominators taken over the whole
  (accumulated) batch, so K micro-batches update exactly like one big batch;
  `combine_loss` is the only place a loss is formed, in the step and in logs;
- `summarize(sums)`: host-side metrics from window/eval sums (accuracy, F1 from
  TP/FP/FN, Matthews from the confusion matrix, Pearson from moments);
- `predictions(model, params, batch)` + `score(gathered)`: for metrics that
  sums cannot give (Spearman, SQuAD), per-row outputs gathered on the host;
- `make_data(config)`: the `Data` (train stream, evaluation sets, tokenizer).
The trainer imports this module; tasks never import the trainer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax.data.contract import Batch, Data, DataIterator, HostBatch  # noqa: F401


class Task(Protocol):
  """See the module docstring."""

  name: str
  heads: tuple[str, ...]  # the heads the model dir records (bert_jax.formats.heads)
  loss_terms: tuple[tuple[str, str], ...]
  main_metric: Optional[str]  # key of `summarize`/`score` (without 'eval_') for best checkpoints

  def build_model(self, bert_config: Any) -> Any: ...

  def init_inputs(self, config: ml_collections.ConfigDict) -> dict[str, jax.Array]: ...

  def init(self, model: Any, rng: jax.Array, inputs: dict[str, jax.Array]) -> Any: ...

  def bind(self, meta: dict) -> None: ...

  def sums(self, model: Any, params: Any, batch: Batch,
           rng: Optional[jax.Array]) -> dict[str, jax.Array]: ...

  def denominators(self, batch: Batch) -> dict[str, jax.Array]: ...

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]: ...

  def predictions(self, model: Any, params: Any, batch: Batch) -> Optional[dict]: ...

  def score(self, gathered: dict[str, np.ndarray]) -> dict[str, float]: ...

  def make_data(self, config: ml_collections.ConfigDict) -> Data: ...

  def model_info(self) -> dict: ...

  def flops_per_sequence(self, bert_config: Any, config: ml_collections.ConfigDict) -> float: ...


class EncoderTask:
  """What every fine-tuning task shares: plain token inputs (no masked positions) to
  initialise its model, and the encoder's training FLOPs per sequence."""

  def init_inputs(self, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    ids = jnp.zeros((1, config.max_seq_length), jnp.int32)
    return dict(input_ids=ids, token_type_ids=ids, attention_mask=ids)

  def init(self, model: Any, rng: jax.Array, inputs: dict[str, jax.Array]) -> Any:
    return model.init({"params": rng}, inputs["input_ids"], inputs["token_type_ids"],
                      inputs["attention_mask"])

  def load_tokenizer(self, config: ml_collections.ConfigDict) -> tuple[Any, str]:
    """(tokenizer, its dir) of config.init_checkpoint, which fine-tuning requires."""
    from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
    from bert_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    if not config.get("init_checkpoint"):
      raise UserError("config.init_checkpoint is empty: fine-tuning starts from a model path "
                      "(a Hugging Face or Google BERT dir, a bert_jax export or workdir)")
    tokenizer_dir = convert.model_tokenizer_dir(config.init_checkpoint)
    return tokenization.load_tokenizer(tokenizer_dir), tokenizer_dir

  def flops_per_sequence(self, bert_config: Any, config: ml_collections.ConfigDict) -> float:
    from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    return metrics_lib.pretraining_flops_per_sequence(bert_config, config.max_seq_length, 0,
                                                      with_nsp=False)


class FeatureSets:
  """Evaluation sets whose rows are features (windows) of host-side items (sentences,
  questions): feature ids are numbered across all sets, so `score` can tell from a gathered
  `feature_index` which set a pass went over and map rows back to their items."""

  def __init__(self):
    self._sets: list[tuple[int, Any, list]] = []  # (first feature id, features, items)
    self._next = 0

  def add(self, features: Any, items: list) -> int:
    """Registers a set; returns the id of its first feature (pass it to `encoded`)."""
    offset = self._next
    self._sets.append((offset, features, items))
    self._next += len(features)
    return offset

  def lookup(self, index: np.ndarray) -> tuple[Any, list, np.ndarray]:
    """(features, items, feature indices within that set) of a pass's gathered feature ids."""
    offset, features, items = next(e for e in reversed(self._sets) if e[0] <= index.min())
    return features, items, index - offset


def combine_loss(sums: Mapping[str, Any], loss_terms: Iterable[tuple[str, str]],
                 denominators: Optional[Mapping[str, Any]] = None) -> Any:
  """sum_i sums[num_i] / den_i, den_i from `denominators` (default: `sums`), floored at 1.

  Works on jax arrays (in the step) and on floats (host summaries); a term whose
  numerator is absent (e.g. no NSP head) is skipped.
  """
  den = sums if denominators is None else denominators
  loss = 0.0
  for num_key, den_key in loss_terms:
    if num_key in sums:
      loss = loss + sums[num_key] / _floor1(den[den_key])
  return loss


def _floor1(x):
  return jnp.maximum(x, 1.0) if isinstance(x, jax.Array) else max(float(x), 1.0)


def ratio(sums: Mapping[str, float], num: str, den: str) -> float:
  """sums[num] / sums[den], NaN when the denominator is 0 or missing."""
  d = sums.get(den, 0.0)
  return float(sums[num]) / float(d) if d else float("nan")


def apply_model(model: Any, params: Any, batch: Batch, rng: Optional[jax.Array],
                **kwargs: Any) -> Any:
  """`model.apply` with the standard BERT inputs of a batch; dropout on iff `rng` is given."""
  deterministic = rng is None
  return model.apply(
      {"params": params}, batch["input_ids"], batch.get("token_type_ids"),
      batch.get("attention_mask"), batch.get("position_ids"), batch.get("packing_ids"),
      deterministic=deterministic, rngs=None if deterministic else {"dropout": rng}, **kwargs)


def finite_iter(iterator: Iterator[HostBatch], max_batches: int) -> Iterator[HostBatch]:
  """At most `max_batches` batches of `iterator` (all when `max_batches` <= 0)."""
  for i, batch in enumerate(iterator):
    if 0 < max_batches <= i:
      return
    yield batch
