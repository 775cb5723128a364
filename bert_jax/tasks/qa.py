"""Extractive question answering data (SQuAD): JSON files and tfds `squad`.

`config.task=squad_json` reads SQuAD v1.1/v2.0 JSON files (`train_file`,
`validation_file`); `squad/v1.1` and `squad/v2.0` read tfds (train/validation).
Rows are BERT's windows (`bert_jax.data.readers.squad`: `doc_stride`,
`max_query_length`). A set with unanswerable questions is SQuAD v2.0 (the
evaluation may then predict no answer).
"""

from __future__ import annotations

from typing import Optional

import ml_collections

from bert_jax.data import finetune_pipeline
from bert_jax.data.contract import Data, FeatureSets, Spec
from bert_jax.data.readers import squad
from bert_jax.errors import UserError
from bert_jax.tasks import base

HEAD = "qa"


def _read(config, split: str, training: bool) -> Optional[list[squad.QAExample]]:
  if config.task == "squad_json":
    path = config[f"{split}_file"]
    if not path:
      return None
    examples, stats = squad.read_squad_json(path)
    source = path
  else:
    if split == "test":
      return None
    examples, stats = squad.read_squad_tfds(config.task, split, config.tfds_data_dir or None)
    source = f"{config.task}:{split}"
  return squad.check_examples(examples, stats, source, training)


def _unanswerable(examples) -> bool:
  return any(ex.is_impossible or not ex.answers for ex in examples)


def options(config: ml_collections.ConfigDict) -> dict:
  """The QA settings of the run (`config.qa`: BERT's SQuAD recipe in configs/finetune.py)."""
  q = config.qa
  return {"doc_stride": int(q.doc_stride), "max_query_length": int(q.max_query_length),
          "max_answer_length": int(q.max_answer_length), "n_best_size": int(q.n_best_size),
          "null_score_diff_threshold": float(q.null_score_diff_threshold)}


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
  if config.task == "squad_json" and not config.train_file:
    raise UserError("config.task=squad_json needs config.train_file (SQuAD v1.1/v2.0 JSON)")
  base.check_files(config)
  tokenizer, tokenizer_dir = base.load_tokenizer(config)
  length = int(config.max_seq_length)
  opts = options(config)
  args = (tokenizer, length, opts["doc_stride"], opts["max_query_length"])
  train = _read(config, "train", training=True)
  version_2 = config.task.endswith("2.0") or _unanswerable(train)
  train_features = squad.encode(train, *args, source=config.train_file or config.task)
  evals, items = {}, FeatureSets()
  for split, infix in (("validation", ""), ("test", "test")):
    examples = _read(config, split, training=False)
    if examples is None or (split == "test" and not any(ex.answers for ex in examples)):
      continue  # an unanswered test file is only predicted after training
    version_2 = version_2 or _unanswerable(examples)
    features = squad.encode(examples, *args, source=config[f"{split}_file"] or config.task)
    evals[infix] = features.encoded(length, items.add(features, examples))
  stream, eval_sets = finetune_pipeline.make_streams(config, train_features.encoded(length),
                                                     evals,
                                                     pad_id=tokenizer.pad_id)
  spec = Spec(task=config.task, head=HEAD, kind="qa", max_seq_length=length,
              vocab_size=tokenizer.vocab_size, num_train_examples=len(train_features),
              options={"version_2": version_2, **opts})
  return Data(train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir,
              eval_items=items), spec
