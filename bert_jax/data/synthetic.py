"""Synthetic MLM+NSP batches that follow the input-pipeline contract.

Why: benchmarks and tests must run without prepared data, and multi-device /
multi-process tests need batches whose global content does not depend on how
many processes read them. Rows are a function of (seed, batch index) only.
"""

from __future__ import annotations

import itertools
from typing import Optional

import jax
import ml_collections
import numpy as np

from bert_jax.data.contract import Data, Spec


class SyntheticIterator:
  """Deterministic random MLM+NSP batches in the input-pipeline contract.

  For benchmarks and tests that must not depend on prepared data: row content
  is a function of (seed, batch index) only, and each process takes its slice
  of the global batch, so any process count sees the same global batch.
  """

  def __init__(self, *, vocab_size: int, seq_len: int, max_predictions: int,
               global_batch_size: int, seed: int = 0, nsp: bool = True,
               process_index: Optional[int] = None, process_count: Optional[int] = None):
    self.vocab_size, self.seq_len, self.max_predictions = vocab_size, seq_len, max_predictions
    self.global_batch_size, self.seed, self.nsp = global_batch_size, seed, nsp
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rs = np.random.default_rng([self.seed, self.index])
    self.index += 1
    b, l, p = self.global_batch_size, self.seq_len, self.max_predictions
    # Zipf-like token frequencies (ids >= 5; 0..4 are specials), so there is something to learn.
    ranks = np.arange(1, self.vocab_size - 4)
    probs = 1.0 / ranks / np.sum(1.0 / ranks)
    ids = 5 + rs.choice(len(ranks), size=(b, l), p=probs).astype(np.int32)
    ids[:, 0] = 2  # [CLS]
    lengths = rs.integers(l // 2, l + 1, size=b)
    attention = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(attention == 1, ids, 0).astype(np.int32)
    types = ((np.arange(l)[None] >= lengths[:, None] // 2) & (attention == 1)).astype(np.int32)
    positions = np.sort(np.stack([rs.choice(np.arange(1, n), size=p, replace=False)
                                  for n in lengths]), axis=1).astype(np.int32)
    num_real = np.maximum(1, (lengths * 0.15).astype(int))
    weights = (np.arange(p)[None] < num_real[:, None]).astype(np.float32)
    positions = np.where(weights > 0, positions, 0).astype(np.int32)
    masked_ids = np.take_along_axis(ids, positions, 1) * (weights > 0)
    rows = np.arange(b)[:, None]
    ids[rows, positions] = np.where(weights > 0, 4, ids[rows, positions])  # [MASK]
    batch = dict(input_ids=ids, token_type_ids=types, attention_mask=attention,
                 masked_positions=positions, masked_ids=masked_ids.astype(np.int32),
                 masked_weights=weights)
    if self.nsp:
      batch["next_sentence_labels"] = rs.integers(0, 2, size=b).astype(np.int32)
    per = b // self.process_count
    return {k: v[self.process_index * per:(self.process_index + 1) * per]
            for k, v in batch.items()}

  def get_state(self) -> dict:
    return {"index": self.index}

  def set_state(self, state: dict) -> None:
    self.index = int(state["index"])


def synthetic_data(config: ml_collections.ConfigDict, vocab_size: int = 128,
                   nsp: bool = True) -> tuple[Data, Spec]:
  """(`Data` of SyntheticIterator batches shaped by the config (eval: a fixed other seed), the
  pretraining `Spec` of such data)."""
  common = dict(vocab_size=vocab_size, seq_len=config.max_seq_length,
                max_predictions=config.max_predictions_per_seq, nsp=nsp)
  spec = Spec(task="pretraining", head="pretraining", kind="pretraining",
              max_seq_length=int(config.max_seq_length), vocab_size=vocab_size,
              options={"mode": "nsp" if nsp else "packed"})
  eval_batches = int(config.num_eval_batches or 0) or 2
  make_eval = lambda: itertools.islice(SyntheticIterator(  # pylint: disable=g-long-lambda
      global_batch_size=config.eval_batch_size or config.batch_size,
      seed=config.seed + 1000003, **common), eval_batches)
  data = Data(train=SyntheticIterator(global_batch_size=config.batch_size, seed=config.seed,
                                      **common),
              eval_sets={"": make_eval})
  return data, spec
