"""Multiple choice (SWAG, the BERT paper's fourth task family): one score per choice.

Each choice is encoded as `[CLS] context [SEP] choice [SEP]`; the rows of one
example are [C, L] and the encoder sees them as C rows; the pooled [CLS] of
each goes through dropout and a 1-output linear layer, and a softmax over the
C scores is the example's distribution (transformers' `BertForMultipleChoice`,
whose weights load with the head kept). Metric: accuracy (a sum). Prediction
gives `{"label": i, "choice": str, "probabilities": [...]}`.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import dropout as dropout_lib
from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.heads import base


class BertForMultipleChoice(nn.Module):
  """[B, C, L] inputs -> [B, C] choice scores (pooled [CLS] -> dropout -> linear to 1)."""

  config: model_lib.BertConfig

  @nn.compact
  def __call__(self, input_ids_BxCxL, token_type_ids_BxCxL=None, attention_mask_BxCxL=None,
               position_ids_BxCxL=None, packing_ids_BxCxL=None, *, deterministic: bool = True,
               unpack_rows_GxS=None, unpack_positions_GxSxT=None, num_choices=None):
    """Padded [B, C, L] inputs; or packed rows [R, L] (`bert_jax.data.packing`) whose
    unpack arrays list the B*C choices example-major, with `num_choices` = C (default:
    the C of `attention_mask_BxCxL`, the padded view of a packed batch)."""
    cfg = self.config
    packed = unpack_rows_GxS is not None
    if packed:
      choices = num_choices or attention_mask_BxCxL.shape[1]
      ids, types, positions, packing = (input_ids_BxCxL, token_type_ids_BxCxL,
                                        position_ids_BxCxL, packing_ids_BxCxL)
      mask = None
    else:
      batch, choices, length = input_ids_BxCxL.shape

      def rows(x):  # [B, C, L] -> [B*C, L]
        return None if x is None else x.reshape(batch * choices, length)

      ids, types, mask, positions, packing = (rows(x) for x in (
          input_ids_BxCxL, token_type_ids_BxCxL, attention_mask_BxCxL, position_ids_BxCxL,
          packing_ids_BxCxL))
    out = model_lib.BertModel(cfg, name="bert")(
        ids, types, mask, positions, packing, deterministic=deterministic,
        unpack_rows_GxS=unpack_rows_GxS, unpack_positions_GxSxT=unpack_positions_GxSxT)
    pooled_NxE = dropout_lib.Dropout(cfg.hidden_dropout_rate)(out.pooled_output,
                                                     deterministic=deterministic)
    scores_Nx1 = model_lib.dense(1, ("embed", None), cfg, "classifier")(pooled_NxE)
    return scores_Nx1.astype(jnp.float32).reshape(-1, choices)


class MultipleChoice(base.Head):
  """BertForMultipleChoice on (context, choices, label) examples."""

  name = "multiple_choice"
  description = "multiple-choice"
  hf_prefix = "classifier."
  param_key = "classifier"
  uses_pooler = True
  architecture = "BertForMultipleChoice"
  loss_terms = (("mc_loss_sum", "example_weight"),)
  main_metric = "accuracy"

  @classmethod
  def rows(cls, config, num_labels):
    return base.dense_rows("classifier", ("classifier",), 1, config.hidden_size)

  @classmethod
  def modern_rows(cls, config, num_labels):
    """ModernBertForMultipleChoice's own tensors (its `head.*` is the pooler)."""
    return cls.rows(config, num_labels)

  @classmethod
  def hf_kind(cls, hf, num_labels):
    return "multiple_choice"

  # --- Training. ---

  def build_model(self, bert_config) -> BertForMultipleChoice:
    return BertForMultipleChoice(bert_config)

  def init_inputs(self, config) -> dict[str, jax.Array]:
    ids = jnp.zeros((1, int(self.spec.options.get("num_choices", 2)), config.max_seq_length),
                    jnp.int32)
    return dict(input_ids=ids, token_type_ids=ids, attention_mask=ids)

  def sums(self, model, params, batch, rng) -> dict:
    scores_BxC = base.apply_model(model, params, batch, rng,
                                  num_choices=batch["attention_mask"].shape[-2])
    w_B = batch["example_weights"].astype(jnp.float32)
    labels_B = batch["labels"]
    xent_B = optax.softmax_cross_entropy_with_integer_labels(scores_BxC, labels_B)
    correct_B = (jnp.argmax(scores_BxC, -1) == labels_B).astype(jnp.float32)
    return dict(mc_loss_sum=jnp.sum(xent_B * w_B), example_weight=jnp.sum(w_B),
                mc_correct=jnp.sum(correct_B * w_B))

  def denominators(self, batch) -> dict:
    return dict(example_weight=jnp.sum(batch["example_weights"].astype(jnp.float32)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    if "mc_correct" not in sums:
      return {}
    return {"accuracy": base.ratio(sums, "mc_correct", "example_weight")}

  # --- Prediction. ---

  @classmethod
  def read_inputs(cls, source: str) -> list[tuple[str, list[str]]]:
    from bert_jax.data.readers import multiple_choice  # pylint: disable=g-import-not-at-top
    examples = multiple_choice.read_jsonl(source, require_labels=False)
    return [(ex.context, list(ex.choices)) for ex in examples]

  @classmethod
  def command_line_inputs(cls, args):
    if args.get("text") is None or not args.get("choices"):
      raise UserError("a multiple-choice model needs --text=CONTEXT and --choices=a,b,c (or "
                      "--input=FILE.jsonl with context and choices)")
    choices = [c.strip() for c in args["choices"].split(",")]
    if len(choices) < 2 or not all(choices):
      raise UserError(f"--choices={args['choices']!r}: give at least two non-empty choices, "
                      "separated by commas")
    return [(args["text"], choices)]

  @classmethod
  def predict(cls, pre, inputs, options) -> list[dict]:
    if cls.name not in pre.heads:
      raise UserError(f"this model has no multiple-choice head (heads: {list(pre.heads)})")
    length = base.max_length(pre, options.get("max_seq_length"))
    scores = choice_scores(pre, inputs, length, options.get("batch_size") or 8)
    out = []
    for (_, choices), s in zip(inputs, scores):
      p = np.exp(s - s.max())
      p = p / p.sum()
      best = int(np.argmax(p))
      out.append({"label": best, "choice": choices[best],
                  "probabilities": [float(x) for x in p]})
    return out

  @classmethod
  def shown_inputs(cls, inputs) -> list[str]:
    return [f"{context} ({' | '.join(choices)})" for context, choices in inputs]

  @classmethod
  def show(cls, result, options) -> str:
    return f"{result['label']}\t{result['choice']}\t{result['probabilities'][result['label']]:.4f}"

  @classmethod
  def tsv_field(cls, result) -> str:
    return str(result["label"])


@functools.lru_cache(maxsize=8)
def _forward(config: model_lib.BertConfig):
  module = BertForMultipleChoice(config)

  @jax.jit
  def forward(params, batch):
    scores_Sx1 = module.apply({"params": params}, *base.packed_rows(batch),
                               **base.packed_inputs(batch), num_choices=1)
    return {"segments": scores_Sx1.reshape(batch["starts"].shape)}  # a choice per segment

  return forward


def choice_scores(pre, inputs: Sequence[tuple[str, list[str]]], length: int,
                  batch_size: int) -> list[np.ndarray]:
  """[C] scores per (context, choices), in input order: every choice is one row of the
  inference runner (`[CLS] context [SEP] choice [SEP]`), regrouped per example."""
  tok = pre.tokenizer
  contexts = [c for c, choices in inputs for _ in choices]
  enc = tok.encode_batch(contexts, [ch for _, choices in inputs for ch in choices],
                         max_length=length, padding="none")
  out = base.run_rows(pre, _forward(pre.config), enc["input_ids"], enc["token_type_ids"], length,
                      batch_size, pack=True)
  scores, at = [], 0
  for _, choices in inputs:
    scores.append(np.asarray([o["segments"] for o in out[at:at + len(choices)]], np.float32))
    at += len(choices)
  return scores
