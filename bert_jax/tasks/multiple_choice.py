"""Multiple-choice data (SWAG-style): local JSONL files, one example per line.

Each choice is encoded as `[CLS] context [SEP] choice [SEP]` (rows [N, C, L]);
the label is the right choice's index. `config.train_file` /
`validation_file` / `test_file` as for the other local tasks.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from bert_jax.data import finetune_pipeline
from bert_jax.data.contract import Data, Spec
from bert_jax.data.readers import multiple_choice as reader
from bert_jax.errors import UserError
from bert_jax.tasks import base

HEAD = "multiple_choice"


def encode(tokenizer, examples, max_seq_length: int) -> finetune_pipeline.Encoded:
  seq, lengths = reader.encode(tokenizer, [ex.context for ex in examples],
                             [ex.choices for ex in examples], max_seq_length)
  labels = np.asarray([ex.label for ex in examples], np.int32)
  return finetune_pipeline.Encoded(seq, {"labels": labels}, lengths)


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
  if not config.train_file:
    raise UserError("config.task=multiple_choice needs config.train_file (JSONL with "
                    "'context', 'choices' and 'label')")
  base.check_files(config)
  tokenizer, tokenizer_dir = base.load_tokenizer(config)
  length = int(config.max_seq_length)
  train = reader.read_jsonl(config.train_file)
  evals = {}
  if config.validation_file:
    evals[""] = encode(tokenizer, reader.read_jsonl(config.validation_file), length)
  stream, eval_sets = finetune_pipeline.make_streams(config, encode(tokenizer, train, length),
                                                     evals,
                                                     pad_id=tokenizer.pad_id)
  spec = Spec(task=config.task, head=HEAD, kind="multiple_choice", max_seq_length=length,
              vocab_size=tokenizer.vocab_size, num_train_examples=len(train),
              options={"num_choices": len(train[0].choices)})
  return Data(train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir), spec
