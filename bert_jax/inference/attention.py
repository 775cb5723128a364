"""Attention probabilities of one text, the view a user picks of them, and attention rollout.

Why it is built this way: the fused kernels (cuDNN, splash) never materialise the
[L, L] probabilities, so the viewer runs the encoder on the xla kernel and applies
it with `mutable=["intermediates"]`: `BertSelfAttention` then sows its softmax
output (float32) and one compiled forward returns every layer's probabilities.
Nothing changes for any other caller (training, embeddings, predict), which never
makes that collection mutable.

The arrays are in transformers' `output_attentions=True` order: [layer][head][query][key].

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in
Transformers"): each layer's heads are averaged, the identity is added for the
residual connection and the rows renormalised, and the layers multiplied from the
first to the last: rollout = A_N ... A_2 A_1, where row i is how much of token i's
final representation flows from each input token.

`--word` looks the word up in the text (whole word, case-insensitive, first
occurrence) and takes the mean of its pieces' query rows; its ranking leaves out
[CLS]/[SEP] (where much of BERT's attention parks, Clark et al. 2019) and the
word's own pieces, whose share is reported beside the ranking.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import inference
from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained


@dataclasses.dataclass
class Attention:
  """Every layer's attention probabilities over one encoded text (or pair)."""

  tokens: list[str]
  probs_NxHxLxL: np.ndarray  # float32 [layers, heads, query, key]
  offsets: np.ndarray  # [L, 2] char (start, end) in its own segment, (0, 0) for specials
  token_types: np.ndarray  # [L] 0 = text, 1 = text_pair
  special: np.ndarray  # [L] bool: [CLS] / [SEP]
  truncated: bool = False


def parse_layer(spec: str, num_layers: int) -> Optional[int]:
  """'all' -> None; an integer (negative counts from the end) -> 0..num_layers-1."""
  return _parse_index("layer", spec, num_layers, ("all",))


def parse_head(spec: str, num_heads: int) -> Optional[int | str]:
  """'all' -> None, 'mean' -> 'mean'; an integer (negative from the end) -> 0..num_heads-1."""
  if spec.strip().lower() == "mean":
    return "mean"
  return _parse_index("head", spec, num_heads, ("all", "mean"))


def _parse_index(name: str, spec: str, count: int, words: tuple[str, ...]) -> Optional[int]:
  spec = spec.strip().lower()
  if spec == "all":
    return None
  try:
    index = int(spec)
  except ValueError:
    raise UserError(f"--{name}={spec!r}: expected an integer or {' / '.join(words)}") from None
  if not -count <= index < count:
    raise UserError(f"--{name}={index} is out of range: the model has {count} {name}s "
                    f"(0..{count - 1}, or -{count}..-1)")
  return index % count


@functools.lru_cache(maxsize=4)
def _forward(config: model_lib.BertConfig) -> Callable:
  """jit(params, ids, types, mask) -> probabilities [N, 1, H, L, L]; one per model config."""
  module = model_lib.BertModel(config.replace(attention_impl="xla", scan_layers=False,
                                              remat_policy="none"), add_pooling_layer=False)

  def forward(params, ids_1xL, types_1xL, mask_1xL):
    _, state = module.apply({"params": params}, ids_1xL, types_1xL, mask_1xL,
                            mutable=["intermediates"])
    layers = state["intermediates"]["encoder"]
    return jnp.stack(
        [layers[f"layer_{i}"]["attention"]["attention_probs"][0]
         for i in range(config.num_layers)])

  return jax.jit(forward)


def attention(pre: Pretrained, text: str, text_pair: Optional[str] = None,
              max_seq_length: Optional[int] = None) -> Attention:
  """Runs the encoder once on `text` (and `text_pair`) and returns every layer's probabilities."""
  if not text.strip():
    raise UserError("--text is empty")
  if text_pair is not None and not text_pair.strip():
    raise UserError("--text_pair is empty")
  tok = pre.tokenizer
  max_length = inference.default_max_length(pre.config, max_seq_length)
  enc = tok.encode_batch([text], None if text_pair is None else [text_pair],
                         max_length=max_length, padding="none", return_offsets=True)
  ids = np.asarray(enc["input_ids"][0], np.int32)
  types = np.asarray(enc["token_type_ids"][0], np.int32)
  full = tok.encode_batch([text], None if text_pair is None else [text_pair], padding="none")
  params = {k: v for k, v in pre.params["bert"].items() if k != "pooler"}
  probs = _forward(pre.config)(params, ids[None], types[None], np.ones_like(ids)[None])
  probs_NxHxLxL = np.asarray(probs, np.float32)[:, 0]
  return Attention(tokens=tok.convert_ids_to_tokens(ids), probs_NxHxLxL=probs_NxHxLxL,
                   offsets=np.asarray(enc["offsets"][0], np.int32).reshape(-1, 2),
                   token_types=types,
                   special=np.isin(ids, [tok.cls_id, tok.sep_id]),
                   truncated=len(full["input_ids"][0]) > ids.size)


def select(att: Attention, layer: Optional[int], head: Optional[int | str]) -> np.ndarray:
  """The view asked for, always 4-D [layers, heads, query, key]: one layer and/or one head,
  or the mean over heads (a heads axis of 1)."""
  probs = att.probs_NxHxLxL
  if layer is not None:
    probs = probs[layer:layer + 1]
  if head == "mean":
    probs = probs.mean(axis=1, keepdims=True)
  elif head is not None:
    probs = probs[:, head:head + 1]
  return probs


def rollout(probs_NxHxLxL: np.ndarray) -> np.ndarray:
  """Attention rollout [L, L] (Abnar & Zuidema 2020): see the module docstring."""
  probs = np.asarray(probs_NxHxLxL, np.float64)
  length = probs.shape[-1]
  flow_LxL = np.eye(length)
  for layer_HxLxL in probs:
    mixed_LxL = layer_HxLxL.mean(axis=0) + np.eye(length)
    mixed_LxL /= mixed_LxL.sum(axis=-1, keepdims=True)
    flow_LxL = mixed_LxL @ flow_LxL
  return flow_LxL


@dataclasses.dataclass
class WordAttention:
  """Where one word's pieces look: mean of their query rows, per layer (mean over heads)."""

  word: str
  pieces: list[int]  # token indices of the word
  per_layer_NxL: np.ndarray  # [layers, key]
  overall_L: np.ndarray  # [key]: mean over layers
  ranked: np.ndarray  # key indices that compete (not [CLS]/[SEP], not the word itself)
  occurrences: int


def word_attention(att: Attention, word: str, text: str,
                   text_pair: Optional[str] = None) -> WordAttention:
  """The word's first whole-word occurrence in text (then text_pair), case-insensitive."""
  word = word.strip()
  if not word:
    raise UserError("--word is empty")
  pattern = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.IGNORECASE)
  found = []
  for segment, source in enumerate([text] + ([text_pair] if text_pair is not None else [])):
    found += [(segment, m.start(), m.end()) for m in pattern.finditer(source)]
  if not found:
    where = f"{text!r}" + (f" or the pair {text_pair!r}" if text_pair is not None else "")
    raise UserError(f"--word={word!r} does not occur in the text {where}")
  segment, start, end = found[0]
  starts, ends = att.offsets[:, 0], att.offsets[:, 1]
  pieces = np.flatnonzero((att.token_types == segment) & ~att.special & (ends > starts)
                          & (starts >= start) & (ends <= end))
  if not pieces.size:
    raise UserError(f"--word={word!r}: its tokens were cut off by truncation (max length "
                    f"{len(att.tokens)})")
  per_layer_NxL = att.probs_NxHxLxL[:, :, pieces, :].mean(axis=(1, 2))
  competing = np.ones(len(att.tokens), bool)
  competing[pieces] = False
  competing &= ~att.special
  return WordAttention(word, pieces.tolist(), per_layer_NxL, per_layer_NxL.mean(axis=0),
                       np.flatnonzero(competing), len(found))


def to_json(att: Attention, layer: Optional[int] = None, head: Optional[int | str] = None,
            with_rollout: bool = False) -> dict:
  """{"tokens", "attention": [layers][heads][query][key]} plus what was selected."""
  num_layers, num_heads = att.probs_NxHxLxL.shape[:2]
  out = {"tokens": att.tokens, "attention": select(att, layer, head).tolist(),
         "layers": list(range(num_layers)) if layer is None else [layer],
         "heads": (list(range(num_heads)) if head is None else
                   "mean" if head == "mean" else [head])}
  if with_rollout:
    out["rollout"] = rollout(att.probs_NxHxLxL).tolist()
  return out
