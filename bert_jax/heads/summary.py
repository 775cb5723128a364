"""Supervised extractive summarization, BertSum's recipe (Liu & Lapata 2019, BertSumExt).

An article is one row `[CLS] s1 [SEP] [CLS] s2 [SEP] ...` with segment ids
alternating 0/1 per sentence (`data.readers.summaries.encode`); the encoder's
output at each sentence's `[CLS]` goes through dropout and a 1-output linear
layer: one logit per sentence. Loss: sigmoid binary cross-entropy against the
greedy ROUGE oracle's labels, the mean over real sentences. (BertSum's best
variant stacks two transformer layers over the sentence vectors; this is its
simplest scorer, the linear one.)

Evaluation (host side, `score`): per article the top 3 sentences by score with
trigram blocking (a sentence sharing a trigram with those already chosen is
skipped), in document order, scored against the reference with ROUGE-1/2/L
F-measures (`eval_rouge1`, `eval_rouge2`, `eval_rougeL`, fractions; equal to
the rouge-score package without stemming). Main metric: rouge2 (bigram overlap
rewards whole phrases, which picking sentences of frequent words does not earn).
The Lead-3 baseline (the article's first 3 sentences, truncated or not) of the same
articles is logged on
the first evaluation of a process as `eval_lead3_rouge1/2/L` (again after a
resume) and in the log.

Conversion: no Hugging Face architecture has this head (`architecture = None`),
so `convert --to=hf` refuses with a one-line error (and the task refuses
`config.export_hf=True` before training); `--to=bert_jax` keeps it.
Prediction gives `{"summary": str, "sentences": [{"index", "text", "score"}]}`
(score = the sentence's sigmoid probability; index into the article's
sentences), 3 sentences unless `--top_k` says otherwise.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import dropout as dropout_lib
from bert_jax import model as model_lib
from bert_jax.data.readers import summaries
from bert_jax.data.sentences import split_sentences
from bert_jax.errors import UserError
from bert_jax.heads import base

SUMMARY_SENTENCES = 3
_METRICS = ("rouge1", "rouge2", "rougeL")


class BertForExtractiveSummary(nn.Module):
  """[B, L] BertSum rows and [B, S] [CLS] positions -> [B, S] sentence logits."""

  config: model_lib.BertConfig

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL=None, attention_mask_BxL=None,
               position_ids_BxL=None, packing_ids_BxL=None, *, cls_positions_BxS,
               deterministic: bool = True):
    cfg = self.config
    out = model_lib.BertModel(cfg, add_pooling_layer=False, name="bert")(
        input_ids_BxL, token_type_ids_BxL, attention_mask_BxL, position_ids_BxL,
        packing_ids_BxL, deterministic=deterministic)
    cls_BxSxE = jnp.take_along_axis(out.sequence_output, cls_positions_BxS[..., None], axis=1)
    cls_BxSxE = dropout_lib.Dropout(cfg.hidden_dropout_rate)(cls_BxSxE, deterministic=deterministic)
    logits_BxSx1 = model_lib.dense(1, ("embed", None), cfg, "summary_classifier")(cls_BxSxE)
    return logits_BxSx1[..., 0].astype(jnp.float32)


class ExtractiveSummary(base.Head):
  """BertSumExt on (article, highlights) examples."""

  name = "summary"
  description = "extractive-summary"
  hf_prefix = "summary_classifier."
  param_key = "summary_classifier"
  architecture = None  # no Hugging Face class has it: `convert --to=hf` refuses
  loss_terms = (("summary_loss_sum", "summary_sentences"),)
  main_metric = "rouge2"

  @classmethod
  def rows(cls, config, num_labels):
    return base.dense_rows("summary_classifier", ("summary_classifier",), 1, config.hidden_size)

  # --- Training. ---

  def __init__(self, spec):
    super().__init__(spec)
    self._lead3_logged = False

  def build_model(self, bert_config) -> BertForExtractiveSummary:
    return BertForExtractiveSummary(bert_config)

  def init_inputs(self, config) -> dict[str, jax.Array]:
    return dict(super().init_inputs(config), cls_positions=jnp.zeros((1, 1), jnp.int32))

  def init(self, model, rng, inputs):
    return model.init({"params": rng}, inputs["input_ids"], inputs["token_type_ids"],
                      inputs["attention_mask"], cls_positions_BxS=inputs["cls_positions"])

  def sums(self, model, params, batch, rng) -> dict:
    logits_BxS = base.apply_model(model, params, batch, rng,
                                  cls_positions_BxS=batch["cls_positions"])
    labels_BxS = batch["sentence_labels"].astype(jnp.float32)
    w_BxS = batch["sentence_mask"].astype(jnp.float32) * base.example_weights(batch)[:, None]
    bce_BxS = optax.sigmoid_binary_cross_entropy(logits_BxS, labels_BxS)
    correct_BxS = ((logits_BxS > 0) == (labels_BxS > 0.5)).astype(jnp.float32)
    return dict(summary_loss_sum=jnp.sum(bce_BxS * w_BxS), summary_sentences=jnp.sum(w_BxS),
                summary_correct=jnp.sum(correct_BxS * w_BxS))

  def denominators(self, batch) -> dict:
    w_BxS = batch["sentence_mask"].astype(jnp.float32) * base.example_weights(batch)[:, None]
    return dict(summary_sentences=jnp.sum(w_BxS))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    if "summary_correct" not in sums:
      return {}
    return {"sentence_accuracy": base.ratio(sums, "summary_correct", "summary_sentences")}

  def predictions(self, model, params, batch) -> dict:
    logits_BxS = base.apply_model(model, params, batch, None,
                                  cls_positions_BxS=batch["cls_positions"])
    return dict(scores=logits_BxS, feature_index=batch["feature_index"],
                weights=base.example_weights(batch))

  def score(self, gathered, eval_items) -> dict[str, float]:
    found = eval_items.real_rows(gathered)
    if found is None:
      return {}
    keep, _, examples, local = found
    chosen, lead = [], []
    for k, scores in zip(local, gathered["scores"][keep]):
      sentences, reference, article = examples[k]  # kept ones, reference, all
      picked = summaries.select(sentences, scores[:len(sentences)], SUMMARY_SENTENCES)
      chosen.append((reference, " ".join(sentences[i] for i in picked)))
      lead.append((reference, " ".join(article[:SUMMARY_SENTENCES])))
    out = mean_rouge(chosen)
    if not self._lead3_logged:  # a constant of the evaluation set: once per process
      self._lead3_logged = True
      baseline = mean_rouge(lead)
      logging.info("Lead-3 baseline over %d articles: %s", len(lead),
                   ", ".join(f"{k} {v:.4f}" for k, v in baseline.items()))
      out.update({f"lead3_{k}": v for k, v in baseline.items()})
    return out

  # --- Prediction. ---

  @classmethod
  def read_inputs(cls, source: str) -> list[list[str]]:
    return [list(ex.sentences) for ex in summaries.read_jsonl(source, require_reference=False)]

  @classmethod
  def command_line_inputs(cls, args):
    if args.get("text") is None:
      raise UserError("a summary model needs --text=ARTICLE (or --input=FILE.jsonl with "
                      "'article')")
    sentences = split_sentences(args["text"])
    if not sentences:
      raise UserError("--text: the article is empty")
    return [sentences]

  @classmethod
  def predict(cls, pre, inputs, options) -> list[dict]:
    if cls.name not in pre.heads:
      raise UserError(f"this model has no extractive-summary head (heads: {list(pre.heads)})")
    k = options.get("top_k") or SUMMARY_SENTENCES
    if k < 1:
      raise UserError(f"--top_k={k}: must be >= 1")
    length = base.max_length(pre, options.get("max_seq_length"))
    encoded, scores = sentence_scores(pre, inputs, length, options.get("batch_size") or 8)
    if encoded.stats.truncated and options.get("warn"):
      options["warn"](f"{encoded.stats.truncated} of {len(inputs)} articles are longer than "
                      f"{length} tokens: only their first sentences that fit are scored")
    out = []
    for sentences, s in zip(encoded.kept(inputs), scores):
      picked = summaries.select(sentences, s, k)
      out.append({"summary": " ".join(sentences[i] for i in picked),
                  "sentences": [{"index": int(i), "text": sentences[i],
                                 "score": float(1 / (1 + np.exp(-s[i])))} for i in picked]})
    return out

  @classmethod
  def shown_inputs(cls, inputs) -> list[str]:
    return [" ".join(s)[:100] for s in inputs]

  @classmethod
  def show(cls, result, options) -> str:
    return "".join(f"{s['index']}\t{s['score']:.4f}\t{s['text']}\n" for s in result["sentences"])

  @classmethod
  def tsv_field(cls, result) -> str:
    return result["summary"].replace("\t", " ")


def mean_rouge(pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
  """Mean ROUGE F-measures over (reference, prediction) pairs."""
  scores = [summaries.rouge(ref, pred) for ref, pred in pairs]
  return {k: float(np.mean([s[k] for s in scores])) for k in _METRICS}


@functools.lru_cache(maxsize=8)
def _forward(config: model_lib.BertConfig):
  module = BertForExtractiveSummary(config)

  @jax.jit
  def forward(params, batch):
    ids, types, mask = base.padded_inputs(batch)
    every_BxL = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
    # A score at every position; the host reads each sentence's [CLS].
    return {"tokens": module.apply({"params": params}, ids, types, mask,
                                   cls_positions_BxS=every_BxL)}

  return forward


def sentence_scores(pre, articles: Sequence[Sequence[str]], length: int, batch_size: int
                    ) -> tuple[summaries.Encoded, list[np.ndarray]]:
  """The encoded articles and each one's logits over its kept sentences, in input order
  (rows through the one inference runner)."""
  encoded = summaries.encode(pre.tokenizer, articles, length)
  n = encoded.lengths
  out = base.run_rows(pre, _forward(pre.config),
                      [encoded.input_ids[i, :n[i]] for i in range(len(n))],
                      [encoded.token_type_ids[i, :n[i]] for i in range(len(n))], length,
                      batch_size)
  return encoded, [o["tokens"][encoded.cls_positions[i, :encoded.num_sentences[i]]]
                   for i, o in enumerate(out)]
