"""The pretraining heads: masked LM (`mlm`) and next-sentence prediction (`nsp`).

- The MLM head is dense + GELU + LayerNorm, then the decoder tied to the word
  embeddings, plus a bias. It gathers the masked positions before the
  vocabulary projection: with 20 predictions in a 128-token row that is 6x
  less decoder work. The encoder's last layer is already computed only there (and at
  [CLS] for NSP): its other positions feed nothing (`model.BertLayer`'s `keep_BxP`).
  The decoder multiplies by the word table padded with zero
  rows to a multiple of `vocab_pad_multiple` (128: whole tensor-core/MXU tiles)
  and slices the logits back to the vocabulary, so stored tables, checkpoints
  and conversions keep the true vocabulary size and the logits are unchanged.
- The NSP head is a 2-way linear layer on the pooled [CLS].
- `Pretraining` trains both (or MLM only when the prepared data has no NSP
  pairs, `meta.json` mode `packed`); evaluation is sums only (MLM and NSP
  accuracy).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import model as model_lib
from bert_jax.heads import base


class MaskedLMHead(nn.Module):
  """dense + GELU + LayerNorm, then the decoder tied to the word embeddings, plus a bias."""

  config: model_lib.BertConfig

  @nn.compact
  def __call__(self, x_BxPxE, word_VxE):
    cfg = self.config
    h_BxPxE = model_lib.dense(cfg.hidden_size, ("embed", "embed_out"), cfg, "transform")(x_BxPxE)
    h_BxPxE = model_lib.LayerNorm(cfg, name="layer_norm")(
        model_lib.ACTIVATIONS[cfg.hidden_act](h_BxPxE))
    bias_V = self.param("output_bias",
                        nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                        (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))
    vocab = word_VxE.shape[0]
    padded = -(-vocab // cfg.vocab_pad_multiple) * cfg.vocab_pad_multiple
    # Zero rows up to a whole number of 128-wide tiles; their logits are sliced off below.
    word_WxE = jnp.pad(word_VxE.astype(cfg.compute_dtype), ((0, padded - vocab), (0, 0)))
    logits_BxPxW = jnp.einsum("bpe,we->bpw", h_BxPxE, word_WxE)
    return logits_BxPxW[..., :vocab].astype(jnp.float32) + bias_V.astype(jnp.float32)


class BertForPreTraining(nn.Module):
  """Encoder + MLM head (+ NSP head unless `with_nsp=False`, i.e. a masked-LM model).

  Returns a dict: `mlm_logits` [B, P, V] at `masked_positions` (all L positions
  when none are given), `nsp_logits` [B, 2], `sequence_output` (at the masked
  positions too, [B, P, E], when they are given), `pooled_output`.
  """

  config: model_lib.BertConfig
  with_nsp: bool = True

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL=None, attention_mask_BxL=None,
               position_ids_BxL=None, packing_ids_BxL=None, masked_positions_BxP=None, *,
               deterministic: bool = True, output_hidden_states: bool = False):
    cfg = self.config
    # With masked positions (training, evaluation) the encoder's last layer computes only
    # them and [CLS] (`BertModel`'s output_positions_BxP).
    out = model_lib.BertModel(cfg, add_pooling_layer=self.with_nsp, name="bert")(
        input_ids_BxL, token_type_ids_BxL, attention_mask_BxL, position_ids_BxL,
        packing_ids_BxL, deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_positions_BxP=masked_positions_BxP)
    x_BxPxE = out.sequence_output
    result = dict(mlm_logits=MaskedLMHead(cfg, name="mlm")(x_BxPxE, out.word_embeddings),
                  sequence_output=x_BxPxE, pooled_output=out.pooled_output,
                  hidden_states=out.hidden_states)
    if self.with_nsp:
      result["nsp_logits"] = model_lib.dense(2, ("embed", None), cfg, "nsp")(
          out.pooled_output).astype(jnp.float32)
    return result


class MaskedLM(base.Head):
  """The MLM head as a checkpoint holds it (trained by `Pretraining`)."""

  name = "mlm"
  hf_prefix = "cls.predictions."
  param_key = "mlm"
  architecture = "BertForMaskedLM"
  predicts = False

  @classmethod
  def rows(cls, config, num_labels):
    e = config.hidden_size
    return (base.dense_rows("cls.predictions.transform.dense", ("mlm", "transform"), e, e)
            + base.norm_rows("cls.predictions.transform.LayerNorm", ("mlm", "layer_norm"), e)
            + [("cls.predictions.bias", ("mlm", "output_bias"), "copy", (config.vocab_size,))])

  @classmethod
  def modern_rows(cls, config, num_labels):
    """ModernBertForMaskedLM's `head` (the transform) and decoder bias."""
    e = config.hidden_size
    norm = [("head.norm.weight", ("mlm", "layer_norm", "scale"), "copy", (e,))]
    if config.norm_bias:
      norm.append(("head.norm.bias", ("mlm", "layer_norm", "bias"), "copy", (e,)))
    return (base.dense_rows("head.dense", ("mlm", "transform"), e, e) + norm
            + [("decoder.bias", ("mlm", "output_bias"), "copy", (config.vocab_size,))])


class NextSentence(base.Head):
  """The NSP head as a checkpoint holds it (trained by `Pretraining`)."""

  name = "nsp"
  hf_prefix = "cls.seq_relationship."
  param_key = "nsp"
  uses_pooler = True
  architecture = "BertForNextSentencePrediction"
  predicts = False

  @classmethod
  def rows(cls, config, num_labels):
    return base.dense_rows("cls.seq_relationship", ("nsp",), 2, config.hidden_size)


class Pretraining(base.Head):
  """Masked LM (+ next-sentence prediction when the data has NSP pairs)."""

  name = "pretraining"
  loss_terms = (("mlm_loss_sum", "mlm_weight"), ("nsp_loss_sum", "nsp_count"))
  predicts = False

  @property
  def with_nsp(self) -> bool:
    return self.spec.options.get("mode", "nsp") == "nsp"

  @property
  def recorded_heads(self) -> tuple[str, ...]:
    return (MaskedLM.name, NextSentence.name) if self.with_nsp else (MaskedLM.name,)

  def build_model(self, bert_config) -> BertForPreTraining:
    return BertForPreTraining(bert_config, with_nsp=self.with_nsp)

  def init_inputs(self, config) -> dict[str, jax.Array]:
    ids = jnp.zeros((1, config.max_seq_length), jnp.int32)
    return dict(input_ids=ids, token_type_ids=ids, attention_mask=ids,
                masked_positions=jnp.zeros((1, config.max_predictions_per_seq), jnp.int32))

  def init(self, model, rng, inputs) -> Any:
    return model.init({"params": rng}, inputs["input_ids"], inputs["token_type_ids"],
                      inputs["attention_mask"], masked_positions_BxP=inputs["masked_positions"])

  def sums(self, model, params, batch, rng) -> dict:
    out = base.apply_model(model, params, batch, rng,
                           masked_positions_BxP=batch["masked_positions"])
    logits_BxPxV = out["mlm_logits"]
    ids_BxP = batch["masked_ids"]
    w_BxP = batch["masked_weights"].astype(jnp.float32)
    xent_BxP = optax.softmax_cross_entropy_with_integer_labels(logits_BxPxV, ids_BxP)
    sums = dict(mlm_loss_sum=jnp.sum(xent_BxP * w_BxP), mlm_weight=jnp.sum(w_BxP),
                mlm_correct=jnp.sum((jnp.argmax(logits_BxPxV, -1) == ids_BxP) * w_BxP))
    if "nsp_logits" in out and "next_sentence_labels" in batch:
      labels_B = batch["next_sentence_labels"]
      w_B = base.example_weights(batch)
      nsp_xent_B = optax.softmax_cross_entropy_with_integer_labels(out["nsp_logits"], labels_B)
      sums.update(nsp_loss_sum=jnp.sum(nsp_xent_B * w_B), nsp_count=jnp.sum(w_B),
                  nsp_correct=jnp.sum((jnp.argmax(out["nsp_logits"], -1) == labels_B) * w_B))
    return sums

  def denominators(self, batch) -> dict:
    return dict(mlm_weight=jnp.sum(batch["masked_weights"].astype(jnp.float32)),
                nsp_count=jnp.sum(base.example_weights(batch)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    out = {}
    if "mlm_loss_sum" in sums:
      out["mlm_loss"] = base.ratio(sums, "mlm_loss_sum", "mlm_weight")
      out["mlm_accuracy"] = base.ratio(sums, "mlm_correct", "mlm_weight")
    if sums.get("nsp_count"):
      out["nsp_loss"] = base.ratio(sums, "nsp_loss_sum", "nsp_count")
      out["nsp_accuracy"] = base.ratio(sums, "nsp_correct", "nsp_count")
    return out

  def flops_per_sequence(self, bert_config, length, config, lora_modules=()) -> float:
    del lora_modules  # pretraining trains every parameter
    from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    return metrics_lib.pretraining_flops_per_sequence(
        bert_config, length, config.max_predictions_per_seq, self.with_nsp)

