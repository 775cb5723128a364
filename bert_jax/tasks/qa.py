"""Extractive question answering (SQuAD) as a task of the trainer.

Data: `config.task=squad_json` reads SQuAD v1.1/v2.0 JSON files (`train_file`,
`validation_file`); `squad/v1.1` and `squad/v2.0` read tfds (train/validation).
Rows are BERT's windows (`bert_jax.data.readers.squad`: `doc_stride`,
`max_query_length`). The loss is BERT's: the mean of the start and end
cross-entropies over all positions ([CLS] = no answer in this window).

Metrics: the official exact match and F1 (`eval_exact_match`, `eval_f1`, in
[0, 1]) need answers chosen over all windows of a question and read back from
the context, so the eval step returns each row's start/end logits and `score`
runs BERT's n-best selection (`tasks.squad_eval`). Main metric: f1.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.data import finetune_pipeline
from bert_jax.data.readers import squad
from bert_jax.errors import UserError
from bert_jax.model import BertForQuestionAnswering
from bert_jax.tasks import base
from bert_jax.tasks import squad_eval

_NEG = -1e9  # logits of padding positions beyond a length bucket


class QATask(base.EncoderTask):
  """BertForQuestionAnswering on SQuAD-style questions."""

  heads = ("qa",)
  loss_terms = (("qa_loss_sum", "qa_count"),)
  main_metric = "f1"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.name = config.task
    self.max_seq_length = int(config.max_seq_length)
    self.doc_stride = int(config.get("doc_stride", 128))
    self.max_query_length = int(config.get("max_query_length", 64))
    self.max_answer_length = int(config.get("max_answer_length", 30))
    self.n_best = int(config.get("n_best_size", 20))
    self.threshold = float(config.get("null_score_diff_threshold", 0.0))
    self.version_2 = self.name.endswith("2.0")  # or any unanswerable question in the data
    self._eval = base.FeatureSets()  # windows of the evaluation sets, and their questions

  def bind(self, meta: dict) -> None:
    self.version_2 = bool(meta.get("version_2", self.version_2))

  def build_model(self, bert_config) -> BertForQuestionAnswering:
    return BertForQuestionAnswering(bert_config)

  def sums(self, model, params, batch: base.Batch, rng: Optional[jax.Array]) -> dict:
    out = base.apply_model(model, params, batch, rng)
    w_B = batch["example_weights"].astype(jnp.float32)
    start_B = optax.softmax_cross_entropy_with_integer_labels(out["start_logits"],
                                                              batch["start_positions"])
    end_B = optax.softmax_cross_entropy_with_integer_labels(out["end_logits"],
                                                            batch["end_positions"])
    exact_B = ((jnp.argmax(out["start_logits"], -1) == batch["start_positions"])
               & (jnp.argmax(out["end_logits"], -1) == batch["end_positions"]))
    return dict(qa_loss_sum=jnp.sum(0.5 * (start_B + end_B) * w_B), qa_count=jnp.sum(w_B),
                qa_span_correct=jnp.sum(exact_B.astype(jnp.float32) * w_B))

  def denominators(self, batch: base.Batch) -> dict:
    return dict(qa_count=jnp.sum(batch["example_weights"].astype(jnp.float32)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    if "qa_count" not in sums:
      return {}
    return {"span_accuracy": base.ratio(sums, "qa_span_correct", "qa_count")}

  def predictions(self, model, params, batch) -> dict:
    out = base.apply_model(model, params, batch, None)
    pad = ((0, 0), (0, self.max_seq_length - out["start_logits"].shape[1]))
    return dict(start_logits=jnp.pad(out["start_logits"], pad, constant_values=_NEG),
                end_logits=jnp.pad(out["end_logits"], pad, constant_values=_NEG),
                feature_index=batch["feature_index"],
                weights=batch["example_weights"].astype(jnp.float32))

  def score(self, gathered: dict[str, np.ndarray]) -> dict[str, float]:
    keep = gathered["weights"] > 0
    index = gathered["feature_index"][keep].astype(np.int64)
    if not len(index):
      return {}
    features, examples, local = self._eval.lookup(index)
    answers = squad_eval.best_answers(
        examples, features, local, gathered["start_logits"][keep],
        gathered["end_logits"][keep], n_best=self.n_best,
        max_answer_length=self.max_answer_length, version_2=self.version_2,
        null_score_diff_threshold=self.threshold)
    # Only questions this pass reached (config.num_eval_batches may cap a pass).
    seen = sorted(set(features.example_index[local].tolist()))
    return squad_eval.score([examples[k] for k in seen], answers)

  def model_info(self) -> dict:
    return {"name": self.name, "kind": "qa", "version_2": self.version_2,
            "max_seq_length": self.max_seq_length, "doc_stride": self.doc_stride,
            "max_query_length": self.max_query_length,
            "max_answer_length": self.max_answer_length,
            "null_score_diff_threshold": self.threshold}

  # --- Data. ---

  def _read(self, config, split: str, training: bool) -> Optional[list[squad.QAExample]]:
    if self.name == "squad_json":
      path = config.get(f"{split}_file", "")
      if not path:
        return None
      examples, stats = squad.read_squad_json(path)
      source = path
    else:
      if split == "test":
        return None
      examples, stats = squad.read_squad_tfds(self.name, split,
                                              config.get("tfds_data_dir") or None)
      source = f"{self.name}:{split}"
    if any(ex.is_impossible or not ex.answers for ex in examples):
      self.version_2 = True
    return squad.check_examples(examples, stats, source, training)

  def make_data(self, config: ml_collections.ConfigDict) -> base.Data:
    if self.name == "squad_json" and not config.get("train_file"):
      raise UserError("config.task=squad_json needs config.train_file (SQuAD v1.1/v2.0 JSON)")
    tokenizer, tokenizer_dir = self.load_tokenizer(config)
    args = (tokenizer, self.max_seq_length, self.doc_stride, self.max_query_length)
    train = self._read(config, "train", training=True)
    train_features = squad.encode(train, *args, source=config.get("train_file") or self.name)
    evals, self._eval = {}, base.FeatureSets()
    for split, infix in (("validation", ""), ("test", "test")):
      examples = self._read(config, split, training=False)
      if examples is None or (split == "test" and not any(ex.answers for ex in examples)):
        continue  # an unanswered test file is only predicted after training
      features = squad.encode(examples, *args, source=config.get(f"{split}_file") or self.name)
      evals[infix] = features.encoded(self.max_seq_length, self._eval.add(features, examples))
    stream, eval_sets = finetune_pipeline.make_streams(
        config, train_features.encoded(self.max_seq_length), evals)
    meta = dict(vocab_size=tokenizer.vocab_size, max_seq_length=self.max_seq_length,
                version_2=self.version_2, num_train_examples=len(train_features))
    return base.Data(meta=meta, train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir)
