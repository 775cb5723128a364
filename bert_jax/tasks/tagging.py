"""Token classification (NER, tagging) data: CoNLL files and tfds `conll2003`.

`config.task=conll` reads CoNLL files (`train_file`, `validation_file`,
`test_file`); `config.task=conll2003` reads tfds `conll2003` (train/dev/test).
The label set is the init checkpoint's when it is a tagging model (so a tagger
is fine-tuned further with its own labels; a label outside them is an error),
else the training data's. Rows are windows of whole words with the label on
each word's first piece (`bert_jax.data.readers.conll`).
"""

from __future__ import annotations

from typing import Optional

import ml_collections

from bert_jax.data import finetune_pipeline
from bert_jax.data.contract import Data, FeatureSets, Spec
from bert_jax.data.readers import conll
from bert_jax.errors import UserError
from bert_jax.tasks import base

HEAD = "token_classifier"


def _read(config, split: str) -> tuple[Optional[list[conll.Sentence]], Optional[list[str]]]:
  """(sentences or None, tfds label names or None)."""
  if config.task == "conll":
    path = config[f"{split}_file"]
    # A test file may be unlabelled (then it is only predicted after training).
    return (conll.read_conll(path, require_labels=split != "test") if path else None), None
  tfds_split = {"train": "train", "validation": "dev", "test": "test"}[split]
  return conll.read_conll2003_tfds(tfds_split, config.tfds_data_dir or None, config.task)


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
  if config.task == "conll" and not config.train_file:
    raise UserError("config.task=conll needs config.train_file (a CoNLL file: a token and its "
                    "label per line, a blank line between sentences)")
  base.check_files(config)
  tokenizer, tokenizer_dir = base.load_tokenizer(config)
  length = int(config.max_seq_length)
  train, tfds_labels = _read(config, "train")
  labels = (base.checkpoint_labels(config.init_checkpoint, "tagging") or tfds_labels
            or conll.label_list(train))
  label_to_id = {l: i for i, l in enumerate(labels)}
  source = config.train_file or f"{config.task}:train"
  train_features = conll.encode(train, tokenizer, label_to_id, length, source)
  evals, items = {}, FeatureSets()
  for split, infix in (("validation", ""), ("test", "test")):
    sentences, _ = _read(config, split)
    if sentences is None or not all(all(s.labels) for s in sentences):
      continue
    source = config[f"{split}_file"] or f"{config.task}:{split}"
    features = conll.encode(sentences, tokenizer, label_to_id, length, source)
    evals[infix] = features.encoded(length, items.add(features, sentences))
  stream, eval_sets = finetune_pipeline.make_streams(config, train_features.encoded(length),
                                                     evals,
                                                     pad_id=tokenizer.pad_id)
  spec = Spec(task=config.task, head=HEAD, kind="tagging", max_seq_length=length,
              vocab_size=tokenizer.vocab_size, labels=tuple(labels),
              num_train_examples=len(train_features))
  return Data(train=stream, eval_sets=eval_sets, tokenizer_dir=tokenizer_dir,
              eval_items=items), spec
