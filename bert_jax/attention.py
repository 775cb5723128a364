"""Attention kernels behind one function, and the masks BERT needs.

Why one function: the encoder layer should not care whether attention runs as
plain XLA einsums (every backend, supports dropout on the probabilities) or as
the fused cuDNN kernel behind `jax.nn.dot_product_attention` (GPU only, no
attention dropout). The choice is configuration (`BertConfig.attention_impl`);
where the fused kernel cannot serve a call, we fall back to XLA and say so once
in the log rather than failing or silently changing numerics.
"""

from __future__ import annotations

import functools
from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp

from bert_jax.errors import UserError

IMPLEMENTATIONS = ("xla", "cudnn")

# Finite large negative: fully masked rows (padding queries in packed rows)
# then give a uniform distribution instead of NaN.
_MASK_VALUE = -1e9


def make_attention_mask(
    attention_mask_BxL: Optional[jax.Array],
    packing_ids_BxL: Optional[jax.Array],
    length: int,
) -> Optional[jax.Array]:
  """Boolean mask [B, 1, Lq, Lk]: True where a query may attend to a key.

  Args:
    attention_mask_BxL: 1 for real tokens, 0 for padding (keys only, as in the
      original BERT and Hugging Face: padding queries still attend to real keys).
    packing_ids_BxL: for packed rows, the index (1, 2, ...) of the sequence each
      token belongs to, 0 for padding; tokens attend only within their own
      sequence. Takes precedence over `attention_mask_BxL`.
    length: sequence length, used only to validate shapes.
  """
  if packing_ids_BxL is not None:
    if packing_ids_BxL.shape[-1] != length:
      raise ValueError(f"packing_ids has length {packing_ids_BxL.shape[-1]}, expected {length}")
    same_BxLxL = packing_ids_BxL[:, :, None] == packing_ids_BxL[:, None, :]
    key_real_Bx1xL = (packing_ids_BxL > 0)[:, None, :]
    mask_BxLxL = same_BxLxL & key_real_Bx1xL
    # Padding queries (id 0) would see nothing: let them see themselves so the
    # softmax stays well defined; their outputs are never used.
    eye_LxL = jnp.eye(length, dtype=bool)[None]
    mask_BxLxL = mask_BxLxL | (eye_LxL & (packing_ids_BxL == 0)[:, :, None])
    return mask_BxLxL[:, None, :, :]
  if attention_mask_BxL is None:
    return None
  if attention_mask_BxL.shape[-1] != length:
    raise ValueError(f"attention_mask has length {attention_mask_BxL.shape[-1]}, expected {length}")
  key_real_BxL = attention_mask_BxL.astype(bool)
  return jnp.broadcast_to(key_real_BxL[:, None, None, :],
                          (key_real_BxL.shape[0], 1, length, length))


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
  logging.warning(message)


def _xla_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask_Bx1xLxL, dropout_rng,
                   dropout_rate, deterministic):
  head_dim = q_BxLxHxD.shape[-1]
  q_BxLxHxD = q_BxLxHxD / jnp.sqrt(head_dim).astype(q_BxLxHxD.dtype)
  logits_BxHxLxL = jnp.einsum("bqhd,bkhd->bhqk", q_BxLxHxD, k_BxLxHxD)
  # Softmax statistics in float32 whatever the compute dtype.
  logits_BxHxLxL = logits_BxHxLxL.astype(jnp.float32)
  if mask_Bx1xLxL is not None:
    logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL, _MASK_VALUE)
  probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs_BxHxLxL.shape)
    probs_BxHxLxL = jnp.where(keep, probs_BxHxLxL / (1.0 - dropout_rate), 0.0)
  probs_BxHxLxL = probs_BxHxLxL.astype(v_BxLxHxD.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs_BxHxLxL, v_BxLxHxD)


def _cudnn_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask_Bx1xLxL):
  on_gpu = jax.default_backend() == "gpu"
  if not on_gpu:
    _warn_once("attention_impl='cudnn' needs a GPU; using XLA's dot_product_attention.")
  elif q_BxLxHxD.dtype not in (jnp.bfloat16, jnp.float16):
    _warn_once("cuDNN attention needs bf16/fp16 inputs; using XLA's dot_product_attention "
               f"for dtype {q_BxLxHxD.dtype}.")
    on_gpu = False
  return jax.nn.dot_product_attention(
      q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask=mask_Bx1xLxL,
      implementation="cudnn" if on_gpu else "xla")


def dot_product_attention(
    q_BxLxHxD: jax.Array,
    k_BxLxHxD: jax.Array,
    v_BxLxHxD: jax.Array,
    mask_Bx1xLxL: Optional[jax.Array] = None,
    *,
    implementation: str = "xla",
    dropout_rng: Optional[jax.Array] = None,
    dropout_rate: float = 0.0,
    deterministic: bool = True,
) -> jax.Array:
  """Scaled dot-product attention, [B, L, H, D] in and out."""
  if implementation not in IMPLEMENTATIONS:
    raise UserError(f"attention_impl={implementation!r} is not one of {IMPLEMENTATIONS}")
  uses_dropout = not deterministic and dropout_rate > 0.0
  if implementation == "cudnn" and uses_dropout:
    _warn_once("cuDNN attention has no attention-probability dropout; using the XLA kernel "
               "while training with attention_dropout_rate > 0 (set it to 0 to use cuDNN).")
    implementation = "xla"
  if implementation == "cudnn":
    return _cudnn_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask_Bx1xLxL)
  return _xla_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask_Bx1xLxL, dropout_rng,
                        dropout_rate, deterministic)
