"""Extractive-summary data (BertSum): local JSONL files or tfds `cnn_dailymail`.

`config.task=extractive_summary` reads `config.train_file` / `validation_file` /
`test_file` (JSONL `{"article", "highlights" or "summary"}`); `cnn_dailymail`
(or `cnn_dailymail/<version>`) reads tfds train/validation. Each article is one
BertSum row (`bert_jax.data.readers.summaries`); its sentence labels are the
greedy ROUGE oracle's over the sentences that fit in `max_seq_length`. How many
articles were truncated is logged per split. Evaluation sets carry their
articles' sentences and references for the head's ROUGE (`heads/summary.py`).
"""

from __future__ import annotations

from typing import Optional

from absl import logging
import ml_collections
import numpy as np

from bert_jax.data import finetune_pipeline
from bert_jax.data.contract import Data, FeatureSets, Spec
from bert_jax.data.readers import summaries as reader
from bert_jax.errors import UserError
from bert_jax.tasks import base

HEAD = "summary"


def _read(config, split: str, training: bool) -> Optional[list[reader.SummaryExample]]:
  if config.task == "extractive_summary":
    path = config[f"{split}_file"]
    return reader.read_jsonl(path, require_reference=training) if path else None
  if split == "test":
    return None
  return reader.read_tfds(config.task, split, config.tfds_data_dir or None)


def encode(tokenizer, examples, max_seq_length: int, source: str
           ) -> tuple[finetune_pipeline.Encoded, list[tuple[list[str], str, list[str]]]]:
  """Rows of `examples` with oracle labels, and each one's (kept sentences, reference, all
  sentences: Lead-3 reads the article, whatever fits in a row)."""
  enc = reader.encode(tokenizer, [ex.sentences for ex in examples], max_seq_length)
  kept = enc.kept([ex.sentences for ex in examples])
  n, width = enc.cls_positions.shape
  labels = np.zeros((n, width), np.int32)
  for a, (sentences, ex) in enumerate(zip(kept, examples)):
    labels[a, reader.oracle(sentences, ex.reference)] = 1
  mask = (np.arange(width) < enc.num_sentences[:, None]).astype(np.int32)
  s = enc.stats
  logging.info("%s: %d articles, %d truncated to max_seq_length=%d (%d sentences dropped)",
               source, s.articles, s.truncated, max_seq_length, s.dropped_sentences)
  rows = finetune_pipeline.Encoded(
      {"input_ids": enc.input_ids, "token_type_ids": enc.token_type_ids},
      {"cls_positions": enc.cls_positions, "sentence_labels": labels, "sentence_mask": mask},
      enc.lengths)
  return rows, [(k, ex.reference, list(ex.sentences)) for k, ex in zip(kept, examples)]


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
  if config.export_hf:  # said before training, not after it
    raise UserError("config.export_hf=True: no Hugging Face class has an extractive-summary "
                    "head; use WORKDIR/best (a bert_jax model dir every tool reads)")
  if config.task == "extractive_summary" and not config.train_file:
    raise UserError("config.task=extractive_summary needs config.train_file (JSONL with "
                    "'article' and 'highlights' or 'summary')")
  base.check_files(config)
  tokenizer, tokenizer_dir = base.load_tokenizer(config)
  length = int(config.max_seq_length)
  train = _read(config, "train", training=True)
  train_rows, _ = encode(tokenizer, train, length, config.train_file or f"{config.task}:train")
  evals, items = {}, FeatureSets()
  for split, infix in (("validation", ""), ("test", "test")):
    examples = _read(config, split, training=False)
    if not examples or any(ex.reference is None for ex in examples):
      continue  # a test file without references is only predicted after training
    source = config[f"{split}_file"] or f"{config.task}:{split}"
    rows, pairs = encode(tokenizer, examples, length, source)
    first = items.add(pairs, pairs)  # row ids are numbered across all evaluation sets
    rows.row_fields["feature_index"] = np.arange(first, first + len(rows), dtype=np.int32)
    evals[infix] = rows
  stream, eval_sets = finetune_pipeline.make_streams(config, train_rows, evals,
                                                     packable=False)
  spec = Spec(task=config.task, head=HEAD, kind="extractive_summary", max_seq_length=length,
              vocab_size=tokenizer.vocab_size, num_train_examples=len(train))
  return Data(train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir,
              eval_items=items), spec
