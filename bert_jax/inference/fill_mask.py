"""Fill-mask: the masked-LM head's top-k tokens for every [MASK] of a text.

Why through the runner: the same bucketing and compile reuse as every other
inference tool (one compiled shape per length bucket serves many texts). The
forward returns the MLM probabilities at every position and the host reads the
masked ones; for one text of a bucket's length this costs a [L, V] softmax,
little next to the encoder.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from bert_jax import model as model_lib
from bert_jax.heads import pretraining
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained
from bert_jax.inference import limits
from bert_jax.inference import runner


@functools.lru_cache(maxsize=8)
def _mlm_forward(config: model_lib.BertConfig, with_nsp: bool) -> Callable:
  """jit(params, batch) -> {"tokens": MLM probabilities [B, L, V]}; one per model config."""
  module = pretraining.BertForPreTraining(config, with_nsp=with_nsp)

  @jax.jit
  def forward(params, batch):
    logits_BxLxV = module.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                                None, batch["position_ids"], batch["packing_ids"])["mlm_logits"]
    return {"tokens": jax.nn.softmax(logits_BxLxV, axis=-1)}

  return forward


def truncation(pre: Pretrained, text: str) -> Optional[tuple[int, int]]:
  """(tokens of `text`, the limit) when fill-mask cuts `text` at the model's length, else None."""
  limit = limits.default_max_length(pre.config)
  full = len(pre.tokenizer.encode(text)["input_ids"])
  return (full, limit) if full > limit else None


def fill_masks(pre: Pretrained, texts: Sequence[str], top_k: int = 5) -> list[list[list[dict]]]:
  """Per text, per [MASK], its top-k predictions [{token, token_id, score}], best first."""
  if pretraining.MaskedLM.name not in pre.heads:
    raise UserError(f"this model has no masked-LM head (heads: {list(pre.heads) or 'none'}); "
                    "fill-mask needs a BertForPreTraining / BertForMaskedLM checkpoint")
  if top_k < 1:
    raise UserError(f"--top_k={top_k}: must be >= 1")
  tok = pre.tokenizer
  max_length = limits.default_max_length(pre.config)
  enc = tok.encode_batch(list(texts), max_length=max_length, padding="none")
  masks = [np.flatnonzero(np.asarray(ids) == tok.mask_id) for ids in enc["input_ids"]]
  for text, positions in zip(texts, masks):
    if not positions.size:
      raise UserError(f"the text has no {tok.convert_ids_to_tokens(tok.mask_id)[0]} token "
                      f"(after truncation): {text[:60]!r}")
  outputs = runner.run(_mlm_forward(pre.config, pretraining.NextSentence.name in pre.heads), pre.params,
                       enc["input_ids"], enc["token_type_ids"], max_length=max_length,
                       pad_id=tok.pad_id)
  results = []
  for out, positions in zip(outputs, masks):
    per_mask = []
    for probs_V in out["tokens"][positions]:
      best = np.argsort(-probs_V, kind="stable")[:min(top_k, probs_V.shape[-1])]
      per_mask.append([{"token": t, "token_id": int(i), "score": float(probs_V[i])}
                       for t, i in zip(tok.convert_ids_to_tokens(best), best)])
    results.append(per_mask)
  return results


def fill_mask(pre: Pretrained, text: str, top_k: int = 5) -> list[list[dict]]:
  """Top-k predictions for every [MASK] in `text`: per mask, [{token, token_id, score}]."""
  return fill_masks(pre, [text], top_k)[0]
