"""MLM+NSP pretraining data: a directory written by `launch/prepare_data.py`.

Its `meta.json` says whether rows carry NSP pairs (`mode: nsp`) or packed
documents (no NSP head). Evaluation is one exact pass over the prepared eval
split (capped by `config.num_eval_batches` when that is > 0), padding rows
weighing 0.
"""

from __future__ import annotations

import functools
import os

from absl import logging
import ml_collections

from bert_jax.data.contract import Data, Spec
from bert_jax.errors import UserError

HEAD = "pretraining"


def spec_of(config: ml_collections.ConfigDict, meta: dict) -> Spec:
  """The Spec of pretraining on data whose meta.json (or synthetic meta) is `meta`."""
  return Spec(task="pretraining", head=HEAD, kind="pretraining",
              max_seq_length=int(config.max_seq_length), vocab_size=int(meta["vocab_size"]),
              options={"mode": meta.get("mode", "nsp")})


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
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
  data = Data(train=train, eval_sets=eval_sets, tokenizer_dir=tok if os.path.isdir(tok) else None)
  return data, spec_of(config, meta)
