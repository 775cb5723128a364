"""Token classification (NER, tagging) as a task of the trainer.

Data: `config.task=conll` reads CoNLL files (`train_file`, `validation_file`,
`test_file`); `config.task=conll2003` reads tfds `conll2003` (train/dev/test).
The label set is the init checkpoint's when it is a tagging model (so a tagger
is fine-tuned further with its own labels; a label outside them is an error),
else the training data's. Rows are windows of whole words with the label on
each word's first piece (`bert_jax.data.readers.conll`).

Metrics: the loss and token accuracy (`eval_accuracy`, over labelled words) are
sums in the step; entity precision/recall/F1 (seqeval's default mode,
`tasks.entities`) need whole sentences, so the eval step returns each row's
predicted ids and `score` puts them back on the words. Main metric: f1.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.data.readers import conll
from bert_jax.data import finetune_pipeline
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.model import BertForTokenClassification
from bert_jax.tasks import base
from bert_jax.tasks import entities


class TaggingTask(base.EncoderTask):
  """BertForTokenClassification on word-labelled sentences."""

  heads = ("token_classifier",)
  loss_terms = (("tag_loss_sum", "tag_count"),)
  main_metric = "f1"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.name = config.task
    self.labels: list[str] = []
    self.max_seq_length = int(config.max_seq_length)
    # Evaluation sets: feature ids are unique over all sets, so `score` knows which set it sees.
    self._eval = base.FeatureSets()  # features of the evaluation sets, and their sentences
    self._tfds_labels: Optional[list[str]] = None

  def bind(self, meta: dict) -> None:
    self.labels = list(meta["labels"])

  def build_model(self, bert_config) -> BertForTokenClassification:
    return BertForTokenClassification(bert_config, num_labels=len(self.labels))

  def _weights(self, batch: base.Batch) -> jax.Array:
    w_B = batch["example_weights"].astype(jnp.float32)
    return (batch["label_ids"] >= 0).astype(jnp.float32) * w_B[:, None]

  def sums(self, model, params, batch: base.Batch, rng: Optional[jax.Array]) -> dict:
    logits_BxLxC = base.apply_model(model, params, batch, rng)
    labels_BxL = jnp.maximum(batch["label_ids"], 0)
    w_BxL = self._weights(batch)
    xent_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxC, labels_BxL)
    correct_BxL = (jnp.argmax(logits_BxLxC, -1) == labels_BxL).astype(jnp.float32)
    return dict(tag_loss_sum=jnp.sum(xent_BxL * w_BxL), tag_count=jnp.sum(w_BxL),
                tag_correct=jnp.sum(correct_BxL * w_BxL))

  def denominators(self, batch: base.Batch) -> dict:
    return dict(tag_count=jnp.sum(self._weights(batch)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    return {"accuracy": base.ratio(sums, "tag_correct", "tag_count")} if "tag_count" in sums else {}

  def predictions(self, model, params, batch) -> dict:
    logits_BxLxC = base.apply_model(model, params, batch, None)
    pred_BxL = jnp.argmax(logits_BxLxC, -1).astype(jnp.int32)
    pad = self.max_seq_length - pred_BxL.shape[1]  # length buckets: one width for the host
    return dict(pred_ids=jnp.pad(pred_BxL, ((0, 0), (0, pad))),
                feature_index=batch["feature_index"],
                weights=batch["example_weights"].astype(jnp.float32))

  def score(self, gathered: dict[str, np.ndarray]) -> dict[str, float]:
    keep = gathered["weights"] > 0
    index = gathered["feature_index"][keep].astype(np.int64)
    if not len(index):
      return {}
    features, sentences, local = self._eval.lookup(index)
    words = conll.word_predictions(features, sentences, local, gathered["pred_ids"][keep])
    # Only sentences this pass reached (config.num_eval_batches may cap a pass).
    seen = sorted(set(features.sentence_index[local].tolist()))
    predicted = [[self.labels[i] if i >= 0 else "O" for i in words[k]] for k in seen]
    return entities.precision_recall_f1([sentences[k].labels for k in seen], predicted)

  def model_info(self) -> dict:
    return {"name": self.name, "kind": "tagging", "labels": list(self.labels),
            "num_labels": len(self.labels), "max_seq_length": self.max_seq_length}

  # --- Data. ---

  def _read(self, config, split: str) -> Optional[list[conll.Sentence]]:
    if self.name == "conll":
      path = config.get(f"{split}_file", "")
      # A test file may be unlabelled (then it is only predicted after training).
      return conll.read_conll(path, require_labels=split != "test") if path else None
    tfds_split = {"train": "train", "validation": "dev", "test": "test"}[split]
    sentences, names = conll.read_conll2003_tfds(tfds_split, config.get("tfds_data_dir") or None,
                                                 self.name)
    self._tfds_labels = names
    return sentences

  def resolve_labels(self, config, train: list[conll.Sentence]) -> list[str]:
    """The init checkpoint's labels when it is a tagger (its head is kept), else the data's."""
    path = config.get("init_checkpoint") or ""
    task = (convert.read_model_task(path) if path else None) or {}
    labels = task.get("labels") if task.get("kind") == "tagging" else None
    if labels and not all(l == f"LABEL_{i}" for i, l in enumerate(labels)):
      return list(labels)
    return self._tfds_labels or conll.label_list(train)

  def make_data(self, config: ml_collections.ConfigDict) -> base.Data:
    if self.name == "conll" and not config.get("train_file"):
      raise UserError("config.task=conll needs config.train_file (a CoNLL file: a token and its "
                      "label per line, a blank line between sentences)")
    tokenizer, tokenizer_dir = self.load_tokenizer(config)
    train = self._read(config, "train")
    labels = self.resolve_labels(config, train)
    label_to_id = {l: i for i, l in enumerate(labels)}
    source = config.get("train_file") or f"{self.name}:train"
    train_features = conll.encode(train, tokenizer, label_to_id, self.max_seq_length, source)
    evals, self._eval = {}, base.FeatureSets()
    for split, infix in (("validation", ""), ("test", "test")):
      sentences = self._read(config, split)
      if sentences is None or not all(all(s.labels) for s in sentences):
        continue
      source = config.get(f"{split}_file") or f"{self.name}:{split}"
      features = conll.encode(sentences, tokenizer, label_to_id, self.max_seq_length, source)
      evals[infix] = features.encoded(self.max_seq_length, self._eval.add(features, sentences))
    stream, eval_sets = finetune_pipeline.make_streams(
        config, train_features.encoded(self.max_seq_length), evals)
    meta = dict(vocab_size=tokenizer.vocab_size, max_seq_length=self.max_seq_length,
                labels=labels, num_train_examples=len(train_features))
    return base.Data(meta=meta, train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir)
