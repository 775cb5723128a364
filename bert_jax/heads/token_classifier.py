"""Token classification (NER, tagging): a linear classifier on every token's output.

Training reads the label of each word on its first piece (`data.readers.conll`).
The loss and token accuracy (`eval_accuracy`, over labelled words) are sums in
the step; entity precision/recall/F1 (seqeval's default mode,
`heads.entities`) need whole sentences, so the eval step returns each row's
predicted ids and `score` puts them back on the words. Main metric: f1.

Prediction is word-level, as the model was trained, and follows the Hugging
Face token-classification pipeline with `aggregation_strategy="first"`: each
word takes the argmax of its first piece's softmax and that probability as its
score; words are grouped into entities (`entities.group_words`) with the
character span of the entity in the input text. A text longer than the model's
rows is tagged in windows of whole words.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import dropout as dropout_lib
from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.heads import base
from bert_jax.heads import entities as entities_lib


class BertForTokenClassification(nn.Module):
  """Per-token linear classifier on the sequence output (NER, tagging)."""

  config: model_lib.BertConfig
  num_labels: int = 2

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL=None, attention_mask_BxL=None,
               position_ids_BxL=None, packing_ids_BxL=None, *, deterministic: bool = True,
               unpack_rows_GxS=None, unpack_positions_GxSxT=None):
    cfg = self.config
    out = model_lib.BertModel(cfg, add_pooling_layer=False, name="bert")(
        input_ids_BxL, token_type_ids_BxL, attention_mask_BxL, position_ids_BxL,
        packing_ids_BxL, deterministic=deterministic, unpack_rows_GxS=unpack_rows_GxS,
        unpack_positions_GxSxT=unpack_positions_GxSxT)
    x_BxLxE = dropout_lib.Dropout(cfg.hidden_dropout_rate)(out.sequence_output,
                                                  deterministic=deterministic)
    return model_lib.dense(self.num_labels, ("embed", None), cfg, "classifier")(
        x_BxLxE).astype(jnp.float32)


class TokenClassifier(base.Head):
  """BertForTokenClassification on word-labelled sentences."""

  name = "token_classifier"
  description = "token-classification"
  hf_prefix = "classifier."
  param_key = "classifier"
  labelled = True
  architecture = "BertForTokenClassification"
  loss_terms = (("tag_loss_sum", "tag_count"),)
  main_metric = "f1"

  @classmethod
  def rows(cls, config, num_labels):
    return base.dense_rows("classifier", ("classifier",), num_labels, config.hidden_size)

  @classmethod
  def modern_rows(cls, config, num_labels):
    """ModernBertForTokenClassification's own tensors (`head.*`: the encoder's token head)."""
    return cls.rows(config, num_labels)

  @classmethod
  def hf_kind(cls, hf, num_labels):
    return "tagging"

  # --- Training. ---

  def build_model(self, bert_config) -> BertForTokenClassification:
    return BertForTokenClassification(bert_config, num_labels=self.spec.num_labels)

  def _weights(self, batch) -> jax.Array:
    w_B = batch["example_weights"].astype(jnp.float32)
    return (batch["label_ids"] >= 0).astype(jnp.float32) * w_B[:, None]

  def sums(self, model, params, batch, rng) -> dict:
    logits_BxLxC = base.apply_model(model, params, batch, rng)
    labels_BxL = jnp.maximum(batch["label_ids"], 0)
    w_BxL = self._weights(batch)
    xent_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxC, labels_BxL)
    correct_BxL = (jnp.argmax(logits_BxLxC, -1) == labels_BxL).astype(jnp.float32)
    return dict(tag_loss_sum=jnp.sum(xent_BxL * w_BxL), tag_count=jnp.sum(w_BxL),
                tag_correct=jnp.sum(correct_BxL * w_BxL))

  def denominators(self, batch) -> dict:
    return dict(tag_count=jnp.sum(self._weights(batch)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    return {"accuracy": base.ratio(sums, "tag_correct", "tag_count")} if "tag_count" in sums else {}

  def predictions(self, model, params, batch) -> dict:
    logits_BxLxC = base.apply_model(model, params, batch, None)
    pred_BxL = jnp.argmax(logits_BxLxC, -1).astype(jnp.int32)
    pad = self.spec.max_seq_length - pred_BxL.shape[1]  # length buckets: one width for the host
    return dict(pred_ids=jnp.pad(pred_BxL, ((0, 0), (0, pad))),
                feature_index=batch["feature_index"],
                weights=batch["example_weights"].astype(jnp.float32))

  def score(self, gathered, eval_items) -> dict[str, float]:
    from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top
    found = eval_items.real_rows(gathered)
    if found is None:
      return {}
    keep, features, sentences, local = found
    words = conll.word_predictions(features, sentences, local, gathered["pred_ids"][keep])
    # Only sentences this pass reached (config.num_eval_batches may cap a pass).
    seen = sorted(set(features.sentence_index[local].tolist()))
    labels = self.spec.labels
    predicted = [[labels[i] if i >= 0 else "O" for i in words[k]] for k in seen]
    return entities_lib.precision_recall_f1([sentences[k].labels for k in seen], predicted)

  # --- Prediction. ---

  @classmethod
  def read_inputs(cls, source: str):
    """('texts', texts) from JSONL with `text`, or ('words', word lists) from a CoNLL file
    (labels optional: a token per line, a blank line between sentences)."""
    from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top
    if source.endswith(".jsonl"):
      return "texts", [r["text"] for r in base.jsonl_rows(source, ("text",))]
    return "words", [s.words for s in conll.read_conll(source, require_labels=False)]

  @classmethod
  def command_line_inputs(cls, args):
    if args.get("text") is None:
      raise UserError("give exactly one of --text or --input=FILE (.conll or .jsonl)")
    return "texts", [args["text"]]

  @classmethod
  def predict(cls, pre, inputs, options) -> list[dict]:
    form, values = inputs
    if form == "texts":
      return [{"entities": e} for e in tag(pre, values, options.get("max_seq_length"))]
    tagged = tag_words(pre, values, options.get("max_seq_length"))
    return [{"words": list(words), "labels": [l for l, _ in t], "scores": [p for _, p in t]}
            for words, t in zip(values, tagged)]

  @classmethod
  def shown_inputs(cls, inputs) -> list[str]:
    form, values = inputs
    return list(values) if form == "texts" else [" ".join(words) for words in values]

  @classmethod
  def show(cls, result, options) -> str:
    if "entities" in result:
      return "".join(f"{e['word']}\t{e['label']}\t{e['start']}\t{e['end']}\t{e['score']:.4f}\n"
                     for e in result["entities"])
    return "".join(f"{w}\t{l}\n" for w, l in zip(result["words"], result["labels"]))

  @classmethod
  def tsv_field(cls, result) -> str:
    if "entities" in result:
      return " ".join(f"{e['word']}/{e['label']}" for e in result["entities"])
    return " ".join(result["labels"])


@functools.lru_cache(maxsize=8)
def _forward(config: model_lib.BertConfig, num_labels: int):
  module = BertForTokenClassification(config, num_labels=num_labels)

  @jax.jit
  def forward(params, batch):
    logits_BxLxC = module.apply({"params": params}, *base.packed_rows(batch))
    return {"tokens": jax.nn.softmax(logits_BxLxC, axis=-1)}

  return forward


def _probabilities(pre, rows, max_length: int) -> list[np.ndarray]:
  out = base.run_rows(pre, _forward(pre.config, pre.num_labels or 0), [ids for ids, _ in rows],
                      [types for _, types in rows], max_length, pack=True)
  return [o["tokens"] for o in out]


def _check(pre) -> None:
  if TokenClassifier.name not in pre.heads:
    raise UserError(f"this model has no token-classification head (heads: {list(pre.heads)})")


def tag(pre, texts: Sequence[str], max_seq_length: Optional[int] = None) -> list[list[dict]]:
  """Entities of each text: [{word, label, start, end, score}] (char offsets in the text)."""
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  _check(pre)
  labels = base.label_names(pre)
  max_length = inference.default_max_length(
      pre.config, max_seq_length or int((pre.task or {}).get("max_seq_length") or 0) or None)
  tok = pre.tokenizer
  enc = tok.encode_batch(list(texts), padding="none", return_offsets=True)
  rows, plan = [], []  # plan[t] = [(row, first piece index in the text's pieces), ...]
  words_of = []
  for ids, offsets in zip(enc["input_ids"], enc["offsets"]):
    pieces = np.asarray(ids[1:-1], np.int32)
    offs = np.asarray(offsets[1:-1], np.int32).reshape(-1, 2)
    first = tok.word_start_mask(pieces).astype(bool)
    first[:1] = True  # a text's first piece starts a word (byte-level BPE marks it as no start)
    starts = np.nonzero(first)[0] if len(pieces) else np.zeros(0, int)
    words_of.append((pieces, offs, starts))
    # Windows of whole words, each at most max_length - 2 pieces (a longer word is cut).
    bounds = list(starts) + [len(pieces)]
    windows, begin = [], 0
    for k in range(1, len(bounds)):
      if bounds[k] - bounds[begin] > max_length - 2 and k - 1 > begin:
        windows.append((begin, k - 1))
        begin = k - 1
    windows.append((begin, len(bounds) - 1))
    text_rows = []
    for a, b in windows:
      lo, hi = bounds[a], min(bounds[b], bounds[a] + max_length - 2)
      row_ids = np.concatenate([[tok.cls_id], pieces[lo:hi], [tok.sep_id]]).astype(np.int32)
      text_rows.append((len(rows), lo, a, b))
      rows.append((row_ids, np.zeros_like(row_ids)))
    plan.append(text_rows)
  probs = _probabilities(pre, rows, max_length) if rows else []
  results = []
  for text, (pieces, offs, starts), text_rows in zip(texts, words_of, plan):
    word_labels, word_scores = [], []
    for row, lo, a, b in text_rows:
      for w in range(a, b):
        p = probs[row][1 + starts[w] - lo]
        word_labels.append(labels[int(np.argmax(p))])
        word_scores.append(float(np.max(p)))
    ends = list(starts[1:]) + [len(pieces)]
    found = []
    for kind, first, last, score in entities_lib.group_words(word_labels, word_scores):
      start, end = int(offs[starts[first], 0]), int(offs[ends[last] - 1, 1])
      found.append({"word": text[start:end], "label": kind, "start": start, "end": end,
                    "score": score})
    results.append(found)
  return results


def tag_words(pre, sentences: Sequence[Sequence[str]],
              max_seq_length: Optional[int] = None) -> list[list[tuple[str, float]]]:
  """(label, score) of every word of pre-split sentences (CoNLL input), as in training."""
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top
  _check(pre)
  labels = base.label_names(pre)
  max_length = inference.default_max_length(
      pre.config, max_seq_length or int((pre.task or {}).get("max_seq_length") or 0) or None)
  items = [conll.Sentence(list(words), [""] * len(words)) for words in sentences]
  features = conll.encode(items, pre.tokenizer, None, max_length, "input")
  probs = _probabilities(pre, [(ids, np.zeros_like(ids)) for ids in features.input_ids],
                         max_length)
  out: list[list[tuple[str, float]]] = [[("O", 0.0)] * len(s) for s in sentences]
  for f, p in enumerate(probs):
    si, w0 = int(features.sentence_index[f]), int(features.first_word[f])
    for k, pos in enumerate(features.positions[f]):
      out[si][w0 + k] = (labels[int(np.argmax(p[pos]))], float(np.max(p[pos])))
  return out
