"""MLM+NSP pretraining as one task of the trainer.

The data is a directory written by `launch/prepare_data.py`; its `meta.json`
says whether rows carry NSP pairs (`mode: nsp`) or packed documents (no NSP
head). Evaluation is one exact pass over the prepared eval split (capped by
`config.num_eval_batches` when that is > 0), padding rows weighing 0.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax import metrics as metrics_lib
from bert_jax.errors import UserError
from bert_jax.model import BertForPreTraining
from bert_jax.tasks import base


class PretrainingTask:
  """Masked-LM (+ next-sentence prediction when the data has NSP pairs)."""

  name = "pretraining"
  loss_terms = (("mlm_loss_sum", "mlm_weight"), ("nsp_loss_sum", "nsp_count"))
  main_metric = None  # no best-checkpoint export for pretraining

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.with_nsp = True

  @property
  def heads(self) -> tuple[str, ...]:
    return ("mlm", "nsp") if self.with_nsp else ("mlm",)

  def bind(self, meta: dict) -> None:
    self.with_nsp = meta.get("mode", "nsp") == "nsp"

  def build_model(self, bert_config) -> BertForPreTraining:
    return BertForPreTraining(bert_config, with_nsp=self.with_nsp)

  def init_inputs(self, config) -> dict[str, jax.Array]:
    ids = jnp.zeros((1, config.max_seq_length), jnp.int32)
    return dict(input_ids=ids, token_type_ids=ids, attention_mask=ids,
                masked_positions=jnp.zeros((1, config.max_predictions_per_seq), jnp.int32))

  def init(self, model, rng, inputs) -> Any:
    return model.init({"params": rng}, inputs["input_ids"], inputs["token_type_ids"],
                      inputs["attention_mask"], masked_positions_BxP=inputs["masked_positions"])

  def sums(self, model, params, batch: base.Batch, rng: Optional[jax.Array]) -> dict:
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
      w_B = _example_weights(batch)
      nsp_xent_B = optax.softmax_cross_entropy_with_integer_labels(out["nsp_logits"], labels_B)
      sums.update(nsp_loss_sum=jnp.sum(nsp_xent_B * w_B), nsp_count=jnp.sum(w_B),
                  nsp_correct=jnp.sum((jnp.argmax(out["nsp_logits"], -1) == labels_B) * w_B))
    return sums

  def denominators(self, batch: base.Batch) -> dict:
    return dict(mlm_weight=jnp.sum(batch["masked_weights"].astype(jnp.float32)),
                nsp_count=jnp.sum(_example_weights(batch)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    out = {}
    if "mlm_loss_sum" in sums:
      out["mlm_loss"] = base.ratio(sums, "mlm_loss_sum", "mlm_weight")
      out["mlm_accuracy"] = base.ratio(sums, "mlm_correct", "mlm_weight")
    if sums.get("nsp_count"):
      out["nsp_loss"] = base.ratio(sums, "nsp_loss_sum", "nsp_count")
      out["nsp_accuracy"] = base.ratio(sums, "nsp_correct", "nsp_count")
    return out

  def predictions(self, model, params, batch) -> None:
    return None

  def score(self, gathered) -> dict:
    return {}

  def model_info(self) -> dict:
    return {"name": self.name}

  def flops_per_sequence(self, bert_config, config) -> float:
    return metrics_lib.pretraining_flops_per_sequence(
        bert_config, config.max_seq_length, config.max_predictions_per_seq, self.with_nsp)

  def make_data(self, config: ml_collections.ConfigDict) -> base.Data:
    """The prepared data's iterators (bert_jax.data.pretrain_pipeline) for this process."""
    from bert_jax.data import pretrain_pipeline  # pylint: disable=g-import-not-at-top

    if not config.train_data:
      raise UserError("config.train_data is empty: give a directory written by "
                      "launch/prepare_data.py (--config.train_data=DIR)")
    meta = pretrain_pipeline.read_meta(config.train_data)
    if int(meta["max_seq_length"]) != int(config.max_seq_length):
      raise UserError(f"config.max_seq_length={config.max_seq_length} but {config.train_data} "
                      f"was prepared with max_seq_length={meta['max_seq_length']}")
    common = dict(max_predictions_per_seq=config.max_predictions_per_seq,
                  mask_rate=config.mask_rate, whole_word_mask=config.whole_word_mask)
    eval_sets = {}
    if config.eval_every_steps:
      eval_dir = config.eval_data or config.train_data
      eval_meta = meta if eval_dir == config.train_data else pretrain_pipeline.read_meta(eval_dir)
      if config.eval_split in eval_meta.get("splits", {}):
        eval_sets[""] = functools.partial(
            pretrain_pipeline.make_pretraining_iterator, eval_dir, config.eval_split,
            global_batch_size=config.eval_batch_size or config.batch_size, seed=config.seed,
            shuffle=False, num_epochs=1, drop_remainder=False, **common)
      elif config.eval_data:
        raise UserError(f"config.eval_data={eval_dir} has no split {config.eval_split!r}; it has "
                        f"{sorted(eval_meta.get('splits', {}))} (set config.eval_split)")
      else:
        logging.warning("no split %r in %s: no evaluation", config.eval_split, eval_dir)
    train = pretrain_pipeline.make_pretraining_iterator(
        config.train_data, config.train_split, global_batch_size=config.batch_size,
        seed=config.seed, **common)
    tok = os.path.join(config.train_data, meta.get("tokenizer", "tokenizer"))
    return base.Data(meta=meta, train=train, eval_sets=eval_sets,
                     tokenizer_dir=tok if os.path.isdir(tok) else None)


def _example_weights(batch: base.Batch) -> jax.Array:
  if "example_weights" in batch:
    return batch["example_weights"].astype(jnp.float32)
  return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
