"""How long an inference row may be: the model's position table, capped at 512.

Why a module of its own: every inference tool (fill-mask, embeddings, each head's
predict, span tasks) truncates to the same limit and words the same errors for a
`--max_seq_length` that does not fit.
"""

from __future__ import annotations

from typing import Optional

from bert_jax import model as model_lib
from bert_jax.errors import UserError

MAX_INFERENCE_LENGTH = 512


def default_max_length(config: model_lib.BertConfig, requested: Optional[int] = None) -> int:
  """The model's own limit capped at 512, or `requested` if it fits the position table."""
  if requested is None:
    return min(config.max_position_embeddings, MAX_INFERENCE_LENGTH)
  if requested < 2:
    raise UserError(f"--max_seq_length={requested}: needs room for [CLS] and [SEP]")
  if requested > config.max_position_embeddings:
    raise UserError(f"--max_seq_length={requested} exceeds the model's position table "
                    f"(max_position_embeddings={config.max_position_embeddings})")
  return requested
