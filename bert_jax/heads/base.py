"""What every head is: the interface the trainer, converter, predict and the runner rely on.

Why a class per head: a head shows up in the linen model (its module on the
shared encoder), the rename table to Hugging Face / Google names, the Hugging
Face architecture written to config.json, the loss and metric sums of the one
jitted train step, the host-side evaluator, and prediction post-processing.
Each `bert_jax/heads/<name>.py` holds all of it; `bert_jax/heads/__init__.py`
registers it. Code outside `heads/` asks the registry and the head's
attributes, never a head's name.

Two levels:
- Class attributes and class methods describe the head for conversion
  (`rows`, `hf_prefix`, `architecture`, ...) and prediction (`predict`), with
  no training run behind them.
- An instance is bound to a run's frozen `Spec` (labels, lengths, options)
  and supplies the pure pieces of the train/eval steps: `build_model`,
  `sums`, `denominators`, `loss_terms`; and the host side: `summarize` (metrics
  from summed counts), `predictions` + `score` (metrics that need per-row
  outputs gathered on the host, such as Spearman or SQuAD F1).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax.data.contract import Batch, Spec
from bert_jax.errors import UserError

# A rename row: (name under Hugging Face, path in the bert_jax tree, kind, HF shape).
# kind: copy | dense (Linear weight, transposed) | qkv | qkv_bias | attn_out.
Row = tuple[str, tuple[str, ...], str, tuple[int, ...]]


def dense_rows(hf: str, path: tuple[str, ...], n_out: int, n_in: int, kind: str = "dense",
               bias_kind: str = "copy") -> list[Row]:
  return [(f"{hf}.weight", path + ("kernel",), kind, (n_out, n_in)),
          (f"{hf}.bias", path + ("bias",), bias_kind, (n_out,))]


def norm_rows(hf: str, path: tuple[str, ...], width: int) -> list[Row]:
  return [(f"{hf}.weight", path + ("scale",), "copy", (width,)),
          (f"{hf}.bias", path + ("bias",), "copy", (width,))]


class Head:
  """One output head; see the module docstring."""

  # --- Conversion: what the head is in a checkpoint. ---
  name: ClassVar[str]  # as recorded in bert_jax_config.json 'heads'
  hf_prefix: ClassVar[str]  # prefix of its tensors in a Hugging Face state dict
  param_key: ClassVar[str]  # its top-level key in the bert_jax parameter tree
  uses_pooler: ClassVar[bool] = False  # reads the pooled [CLS] output
  labelled: ClassVar[bool] = False  # has num_labels outputs with label names
  architecture: ClassVar[Optional[str]] = None  # the HF architecture with exactly this head
  # Is this head what a fine-tuned model predicts with (mlm/nsp are not)?
  predicts: ClassVar[bool] = True
  # What it is, for messages ("sequence-classification").
  description: ClassVar[str] = ""

  @classmethod
  def rows(cls, config: Any, num_labels: Optional[int]) -> list[Row]:
    raise NotImplementedError

  @classmethod
  def hf_kind(cls, hf: Mapping[str, Any], num_labels: Optional[int]) -> str:
    """The `Spec.kind` of a Hugging Face model with this head (its config.json `hf`)."""
    return cls.name

  # --- Training: bound to a run's Spec. ---
  loss_terms: tuple[tuple[str, str], ...] = ()

  def __init__(self, spec: Spec):
    self.spec = spec

  @property
  def recorded_heads(self) -> tuple[str, ...]:
    """The head names the model dir records for a run of this head."""
    return (self.name,)

  @property
  def main_metric(self) -> Optional[str]:
    """Key of `summarize`/`score` (without 'eval_') that picks the best checkpoint."""
    return None

  def build_model(self, bert_config: Any) -> Any:
    raise NotImplementedError

  def init_inputs(self, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    ids = jnp.zeros((1, config.max_seq_length), jnp.int32)
    return dict(input_ids=ids, token_type_ids=ids, attention_mask=ids)

  def init(self, model: Any, rng: jax.Array, inputs: dict[str, jax.Array]) -> Any:
    return model.init({"params": rng}, inputs["input_ids"], inputs["token_type_ids"],
                      inputs["attention_mask"])

  def sums(self, model: Any, params: Any, batch: Batch,
           rng: Optional[jax.Array]) -> dict[str, jax.Array]:
    raise NotImplementedError

  def denominators(self, batch: Batch) -> dict[str, jax.Array]:
    raise NotImplementedError

  def summarize(self, sums: Mapping[str, Any]) -> dict[str, float]:
    return {}

  def predictions(self, model: Any, params: Any, batch: Batch) -> Optional[dict]:
    return None

  def score(self, gathered: dict[str, np.ndarray], eval_items: Any) -> dict[str, float]:
    return {}

  def flops_per_sequence(self, bert_config: Any, length: int,
                         config: ml_collections.ConfigDict,
                         lora_modules: Sequence[str] = ()) -> float:
    """Training FLOPs of one encoder row of `length` tokens (for MFU of the rows run);
    `lora_modules`: the adapted modules of a LoRA run (frozen base, no weight gradients)."""
    from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    return metrics_lib.pretraining_flops_per_sequence(
        bert_config, length, 0, with_nsp=False,
        lora_rank=int(config.lora.rank) if lora_modules else 0, lora_modules=lora_modules)

  # --- Prediction (launch/predict.py): class methods on a loaded model. ---

  @classmethod
  def read_inputs(cls, source: str) -> Any:
    """The inputs of a file (or tfds split name) in this head's formats."""
    raise UserError(f"a {cls.name} model cannot read inputs from {source}")

  @classmethod
  def command_line_inputs(cls, args: Mapping[str, Any]) -> Any:
    """The inputs given as flags (`text`, `text_pair`, `question`, `context`, `choices`)."""
    raise UserError(f"a {cls.name} model takes --input=FILE")

  @classmethod
  def predict(cls, pre: Any, inputs: Any, options: Mapping[str, Any]) -> list[dict]:
    """One JSON-ready result per input, in input order."""
    raise UserError(f"the {cls.name} head does not predict")

  @classmethod
  def shown_inputs(cls, inputs: Any) -> list[str]:
    """Each input as one line, printed above its prediction when there are several."""
    return [str(x) for x in inputs]

  @classmethod
  def show(cls, result: dict, options: Mapping[str, Any]) -> str:
    """A person-readable form of one result."""
    return str(result)

  @classmethod
  def tsv_field(cls, result: dict) -> str:
    """The `prediction` column of a GLUE-style TSV."""
    return str(result)


def ratio(sums: Mapping[str, float], num: str, den: str) -> float:
  """sums[num] / sums[den], NaN when the denominator is 0 or missing."""
  d = sums.get(den, 0.0)
  return float(sums[num]) / float(d) if d else float("nan")


def apply_model(model: Any, params: Any, batch: Batch, rng: Optional[jax.Array],
                **kwargs: Any) -> Any:
  """`model.apply` with the standard BERT inputs of a batch; dropout on iff `rng` is given.

  A packed fine-tuning batch (`bert_jax.data.packing`) has encoder rows plus
  `unpack_rows` / `unpack_positions`: the model reads each example back into the
  padded layout, and the batch's `attention_mask` is that layout's (the encoder's
  mask comes from `packing_ids`).
  """
  deterministic = rng is None
  packed = "unpack_rows" in batch
  if packed:
    kwargs.update(unpack_rows_GxS=batch["unpack_rows"],
                  unpack_positions_GxSxT=batch["unpack_positions"])
  return model.apply(
      {"params": params}, batch["input_ids"], batch.get("token_type_ids"),
      None if packed else batch.get("attention_mask"), batch.get("position_ids"),
      batch.get("packing_ids"), deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng}, **kwargs)


def packed_rows(batch: Mapping[str, jax.Array]) -> tuple[Any, ...]:
  """The model's positional inputs for a runner batch (possibly packed): per-token outputs."""
  return (batch["input_ids"], batch["token_type_ids"], None, batch["position_ids"],
          batch["packing_ids"])


def packed_inputs(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """`unpack_*` keyword inputs that read every segment of a runner batch back at its
  [CLS] (one group, [B*K, 1] views), with `packed_rows`' inputs. Segments past a row's
  last one read position 0 of their row; the runner drops them."""
  starts_BxK = batch["starts"]
  rows, segments = starts_BxK.shape
  rows_S = jnp.repeat(jnp.arange(rows, dtype=jnp.int32), segments)
  return dict(unpack_rows_GxS=rows_S[None], unpack_positions_GxSxT=starts_BxK.reshape(1, -1, 1))


def example_weights(batch: Batch) -> jax.Array:
  """[B] float32 row weights (padding rows of an exact evaluation pass weigh 0)."""
  if "example_weights" in batch:
    return batch["example_weights"].astype(jnp.float32)
  return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)


def label_names(pre: Any) -> list[str]:
  """A loaded model's label names (Hugging Face's LABEL_i when it names none)."""
  return list(pre.labels or [f"LABEL_{i}" for i in range(pre.num_labels or 0)])


def max_length(pre: Any, requested: Optional[int] = None, cap: Optional[int] = None) -> int:
  """--max_seq_length, else the length the model was fine-tuned with, else the position
  table (at most `cap`)."""
  limit = pre.config.max_position_embeddings
  if requested is not None:
    if not 3 <= requested <= limit:
      raise UserError(f"--max_seq_length={requested}: must be in [3, {limit}] for this model")
    return requested
  trained = int((pre.task or {}).get("max_seq_length") or 0)
  return trained or min(limit, cap or 512)


def jsonl_rows(path: str, keys: Sequence[str]) -> list[dict]:
  """The objects of a JSONL file, each with string fields `keys` (one-line errors)."""
  from bert_jax import files  # pylint: disable=g-import-not-at-top
  rows = []
  for number, row in files.jsonl_objects(files.read_lines(path), path):
    if any(not isinstance(row.get(k), str) for k in keys):
      raise UserError(f"{path}:{number}: expected a JSON object with string fields "
                      f"{list(keys)}")
    rows.append(row)
  return rows


def run_rows(pre: Any, forward: Any, ids_rows: Sequence[Any], type_rows: Sequence[Any],
             max_length: int, batch_size: Optional[int] = None,
             pack: bool = False) -> list[dict[str, np.ndarray]]:
  """The one inference runner (`bert_jax.inference.runner`) over a loaded model's rows:
  per input, in input order, `forward`'s {"tokens": [n, ...], "segments": [K, ...]}."""
  from bert_jax.inference import runner  # pylint: disable=g-import-not-at-top
  return runner.run(forward, pre.params, ids_rows, type_rows, max_length=max_length,
                    pad_id=pre.tokenizer.pad_id, batch_size=batch_size, pack=pack)


def padded_inputs(batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(input_ids, token_type_ids, attention_mask) of a runner batch of one segment per row:
  the key-padding mask, so outputs equal a plain padded batch's."""
  return (batch["input_ids"], batch["token_type_ids"],
          (batch["packing_ids"] > 0).astype(jnp.int32))


def combine_loss(sums: Mapping[str, Any], loss_terms, denominators=None) -> Any:
  """sum_i sums[num_i] / den_i, den_i from `denominators` (default: `sums`), floored at 1.

  The only place a loss is formed, in the step and in logs. Works on jax arrays
  (in the step) and on floats (host summaries); a term whose numerator is absent
  (e.g. no NSP head) is skipped.
  """
  den = sums if denominators is None else denominators
  loss = 0.0
  for num_key, den_key in loss_terms:
    if num_key in sums:
      loss = loss + sums[num_key] / _floor1(den[den_key])
  return loss


def _floor1(x):
  return jnp.maximum(x, 1.0) if isinstance(x, jax.Array) else max(float(x), 1.0)
