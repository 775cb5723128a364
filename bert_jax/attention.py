"""Attention kernels behind one function, and the masks BERT needs.

Why one function: the encoder layer should not care which kernel runs.
- `xla`: plain einsums with a dense [B, 1, L, L] mask. Every backend; the only
  kernel with dropout on the attention probabilities.
- `cudnn`: the fused cuDNN flash kernel (GPU, bf16/fp16). Padding goes in as
  key lengths (`key_value_seq_lengths` of `jax.nn.dot_product_attention`), not as
  a dense mask, so the kernel skips padded keys (a mask that is not right-padded has
  its keys gathered real-first: `real_keys_first`; no branch). Packed rows: JAX 0.10.2's public
  `jax.nn.dot_product_attention` has no segment ids, but its cuDNN layer
  (`jax._src.cudnn.fused_attention_stablehlo.dot_product_attention`) takes
  per-segment `q_offsets`/`kv_offsets` + lengths (cuDNN "packed layout", Hopper or
  newer); we use it there and fall back to the public kernel with a dense mask
  (a bias inside cuDNN) on older GPUs or if the private API moves.
- `splash`: the Pallas TPU splash-attention kernel, with segment ids for padding
  and packed rows. On CPU it runs in Pallas interpret mode (slow; for tests).
- `auto` (the default): `select_implementation` picks cudnn on GPU for bf16/fp16
  and supported head sizes, splash on a single TPU chip when the length is a
  multiple of 128, xla otherwise.

Attention dropout: BERT trains with 0.1 on the attention probabilities; neither
fused kernel has it here, so any call that trains with attention dropout runs
on xla (with a one-time warning when a fused kernel was asked for by name).
The per-platform default (configs/default.py, `model.attention_dropout_rate`
unset): 0.1 on CPU (xla anyway, the paper's recipe), 0.0 on GPU/TPU so the fused
kernels run in training. On the tiny CPU pretraining run in BENCHMARKS.md
("Attention dropout") dropping it changed held-out MLM accuracy by less than the
run-to-run noise; set `--config.model.attention_dropout_rate=0.1` to train
exactly as the paper (at xla speed).

Sliding windows (`local_window=W`, ModernBERT's local layers): a query sees the keys
within W // 2 positions either side (Hugging Face's `local_attention`). xla: a band
ANDed into the mask. splash: its `LocalMask`. cuDNN in this jax has only left
(causal) windows, so local layers fall back to xla with a one-time warning. A scanned
stack of alternating layers (one compiled layer for both kinds) passes the band as a
dense mask instead: cuDNN takes it as a mask, splash falls back to xla.

Padding semantics are those of BERT / Hugging Face: padding keys are masked,
padding queries still attend (their outputs are never used). Kernels may differ
at padding query positions only; every real position agrees.
"""

from __future__ import annotations

import functools
from typing import Optional, Union

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import dropout as dropout_lib
from bert_jax.errors import UserError

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")

# Finite large negative: fully masked rows (padding queries in packed rows)
# then give a uniform distribution instead of NaN.
_MASK_VALUE = -1e9


@flax.struct.dataclass
class AttentionMask:
  """Which keys each query may see, kept in the compact form the kernels want.

  key_mask_BxL: True for real tokens (padding-only rows), or None.
  segment_ids_BxL: packed rows: 1, 2, ... per sequence, 0 for padding, or None.
    Takes precedence over `key_mask_BxL`.
  """

  key_mask_BxL: Optional[jax.Array] = None
  segment_ids_BxL: Optional[jax.Array] = None

  @property
  def is_empty(self) -> bool:
    return self.key_mask_BxL is None and self.segment_ids_BxL is None

  def dense(self, length: int) -> Optional[jax.Array]:
    return make_attention_mask(self.key_mask_BxL, self.segment_ids_BxL, length)


def attention_mask(attention_mask_BxL: Optional[jax.Array], packing_ids_BxL: Optional[jax.Array],
                   length: int) -> AttentionMask:
  """The model's padding/packing inputs as an `AttentionMask` (shapes validated)."""
  for name, x in (("attention_mask", attention_mask_BxL), ("packing_ids", packing_ids_BxL)):
    if x is not None and x.shape[-1] != length:
      raise ValueError(f"{name} has length {x.shape[-1]}, expected {length}")
  if packing_ids_BxL is not None:
    return AttentionMask(segment_ids_BxL=packing_ids_BxL.astype(jnp.int32))
  if attention_mask_BxL is not None:
    return AttentionMask(key_mask_BxL=attention_mask_BxL.astype(bool))
  return AttentionMask()


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


# The public kernel name `_cudnn_attention` asks jax for; tests set "xla" to run the
# cuDNN path's mask handling (lengths, fallbacks) on CPU.
_CUDNN = "cudnn"


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
  logging.warning(message)


# ----------------------------------------------------------------- selection


def select_implementation(requested: str, *, platform: str, dtype, length: int, head_dim: int,
                          dropout: bool, num_devices: int = 1, local_window: int = 0) -> str:
  """The kernel that will actually run (pure: platform and shapes are arguments).

  `auto` never warns; a kernel asked for by name that cannot serve the call
  falls back to xla with a one-time warning saying why. `auto` takes splash on
  one TPU chip only: the Pallas call has no partitioning rule here (no
  shard_map wrapper yet), so on a sharded mesh XLA would have to gather its
  inputs; cuDNN's call partitions over the batch by itself. A sliding-window layer
  (`local_window` > 0) that its kernel cannot serve falls back to xla, with a warning
  once (also under `auto`: the stack chose that kernel for its global layers).
  """
  if requested not in IMPLEMENTATIONS:
    raise UserError(f"attention_impl={requested!r} is not one of {IMPLEMENTATIONS}")
  dtype = jnp.dtype(dtype)
  why_not = {
      "cudnn": _cudnn_unsupported(platform, dtype, head_dim, dropout),
      "splash": _splash_unsupported(platform, length, dropout),
  }
  if local_window:
    chosen = select_implementation(requested, platform=platform, dtype=dtype, length=length,
                                   head_dim=head_dim, dropout=dropout, num_devices=num_devices)
    why = _window_unsupported(chosen)
    if why is not None:
      _warn_once(f"sliding-window attention: {why}; using the XLA kernel for those layers.")
      return "xla"
    return chosen
  if requested == "auto":
    if platform == "gpu" and why_not["cudnn"] is None:
      return "cudnn"
    if platform == "tpu" and why_not["splash"] is None and num_devices == 1:
      return "splash"
    return "xla"
  if requested != "xla" and why_not[requested] is not None:
    _warn_once(f"attention_impl={requested!r}: {why_not[requested]}; using the XLA kernel.")
    return "xla"
  return requested


def _cudnn_unsupported(platform: str, dtype, head_dim: int, dropout: bool) -> Optional[str]:
  if platform != "gpu":
    return "cuDNN attention needs a GPU"
  if dtype not in (jnp.bfloat16, jnp.float16):
    return f"cuDNN attention needs bf16/fp16 inputs, not {dtype}"
  if head_dim % 8 or head_dim > 128:
    return f"cuDNN flash attention needs head_dim <= 128 and a multiple of 8, not {head_dim}"
  if dropout:
    return ("cuDNN attention has no attention-probability dropout here (training with "
            "attention_dropout_rate > 0; set it to 0 to use the fused kernel)")
  return None


def _window_unsupported(implementation: str) -> Optional[str]:
  # jax 0.10.2's `jax.nn.dot_product_attention(implementation="cudnn")` raises for a right
  # window without a causal mask; splash's LocalMask and the xla band take both sides.
  if implementation == "cudnn":
    return "cuDNN in this jax supports only causal (left) windows, not two-sided ones"
  return None


def window_mask(length: int, local_window: int) -> jax.Array:
  """[1, 1, L, L] True where |query - key| <= local_window // 2."""
  positions = jnp.arange(length)
  return (jnp.abs(positions[:, None] - positions[None, :]) <= local_window // 2)[None, None]


def _splash_unsupported(platform: str, length: int, dropout: bool) -> Optional[str]:
  if platform == "gpu":
    return "the splash kernel is a Pallas TPU kernel"
  if length % 128:
    return f"the splash kernel needs a sequence length that is a multiple of 128, not {length}"
  if dropout:
    return ("the splash kernel has no attention-probability dropout (training with "
            "attention_dropout_rate > 0; set it to 0 to use the fused kernel)")
  return None


# ------------------------------------------------------------------- kernels


def _xla_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask_Bx1xLxL, dropout_rng,
                   dropout_rate, deterministic, return_weights=False):
  head_dim = q_BxLxHxD.shape[-1]
  q_BxLxHxD = q_BxLxHxD / jnp.sqrt(head_dim).astype(q_BxLxHxD.dtype)
  logits_BxHxLxL = jnp.einsum("bqhd,bkhd->bhqk", q_BxLxHxD, k_BxLxHxD)
  # Softmax statistics in float32 whatever the compute dtype.
  logits_BxHxLxL = logits_BxHxLxL.astype(jnp.float32)
  if mask_Bx1xLxL is not None:
    logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL, _MASK_VALUE)
  probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1)
  weights_BxHxLxL = probs_BxHxLxL
  if not deterministic and dropout_rate > 0.0:
    probs_BxHxLxL = dropout_lib.dropout(probs_BxHxLxL, dropout_rate, dropout_rng)
  probs_BxHxLxL = probs_BxHxLxL.astype(v_BxLxHxD.dtype)
  ctx_BxLxHxD = jnp.einsum("bhqk,bkhd->bqhd", probs_BxHxLxL, v_BxLxHxD)
  return (ctx_BxLxHxD, weights_BxHxLxL) if return_weights else ctx_BxLxHxD


def real_keys_first(key_mask_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(order [B, L], lengths [B] int32): an order of each row's keys with the real ones first.

  Why: cuDNN's fast padding kernel takes key lengths, which describe a mask only when the
  real keys are a prefix of the row. Attention is a sum over keys, so gathering k and v in
  `order` (real keys first, each part in its own order) makes any mask a prefix of
  `lengths` keys, exactly; for the right-padded rows of every bert_jax pipeline the order is
  the identity. This replaced a `lax.cond` on "is every row right-padded", which on a GPU
  stopped the host at each layer (forward and backward) to read the predicate.
  """
  key_mask_BxL = key_mask_BxL.astype(bool)
  order_BxL = jnp.argsort(~key_mask_BxL, axis=-1, stable=True).astype(jnp.int32)
  return order_BxL, jnp.sum(key_mask_BxL, axis=-1, dtype=jnp.int32)


def inverse_order(order_BxL: jax.Array) -> jax.Array:
  """The permutation that undoes `order` in each row: inverse[b, order[b, i]] = i."""
  return jnp.argsort(order_BxL, axis=-1).astype(jnp.int32)


@jax.custom_vjp
def gather_keys(x_BxLxHxD: jax.Array, order_BxL: jax.Array) -> jax.Array:
  """x[b, order[b, i]] for every row: the keys (or values) in `order`.

  A permutation's gradient is the inverse permutation's gather; written out so that the
  backward pass is a gather, not the scatter-add XLA would make of take_along_axis."""
  return jnp.take_along_axis(x_BxLxHxD, order_BxL[:, :, None, None], axis=1)


def _gather_keys_fwd(x_BxLxHxD, order_BxL):
  return gather_keys(x_BxLxHxD, order_BxL), order_BxL


def _gather_keys_bwd(order_BxL, g_BxLxHxD):
  inverse_BxL = inverse_order(order_BxL)
  return (jnp.take_along_axis(g_BxLxHxD, inverse_BxL[:, :, None, None], axis=1),
          np.zeros(order_BxL.shape, jax.dtypes.float0))


gather_keys.defvjp(_gather_keys_fwd, _gather_keys_bwd)


def packed_segments(segment_ids_BxL: jax.Array, max_segments: int
                    ) -> tuple[jax.Array, jax.Array]:
  """Packed rows as cuDNN's ragged layout: (lengths [B, M], offsets [B, M + 1]).

  Segment m of row b starts at offsets[b, m] and has lengths[b, m] tokens;
  missing segments are -1 (the convention of jax's cuDNN wrapper). A segment is
  a maximal run of equal non-zero ids; padding (id 0) belongs to none.
  """
  ids_BxL = segment_ids_BxL.astype(jnp.int32)
  batch, length = ids_BxL.shape
  real_BxL = ids_BxL > 0
  previous_BxL = jnp.pad(ids_BxL[:, :-1], ((0, 0), (1, 0)))
  starts_BxL = real_BxL & (ids_BxL != previous_BxL)
  index_BxL = jnp.cumsum(starts_BxL, axis=-1) - 1  # segment index of each token
  count_B = jnp.sum(starts_BxL, axis=-1)
  rows_BxL = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, length))
  # Tokens outside any segment are scattered to a dropped overflow column.
  column_BxL = jnp.where(real_BxL, index_BxL, max_segments)
  lengths_BxM = jnp.zeros((batch, max_segments + 1), jnp.int32).at[rows_BxL, column_BxL].add(
      1, mode="drop")[:, :max_segments]
  start_col_BxL = jnp.where(starts_BxL, index_BxL, max_segments + 1)
  positions_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  offsets_BxM1 = jnp.zeros((batch, max_segments + 2), jnp.int32).at[
      rows_BxL, start_col_BxL].set(positions_BxL, mode="drop")[:, :max_segments + 1]
  segment_M1 = jnp.arange(max_segments + 1)
  lengths_BxM = jnp.where(segment_M1[None, :max_segments] < count_B[:, None], lengths_BxM, -1)
  offsets_BxM1 = jnp.where(segment_M1[None, :] < count_B[:, None], offsets_BxM1, -1)
  return lengths_BxM, offsets_BxM1


def _cudnn_packed_api():
  """jax's private cuDNN entry point with packed-layout support, or None."""
  try:
    from jax._src.cudnn import fused_attention_stablehlo as fused  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if not hasattr(fused, "MaskType") or "q_offsets" not in fused.dot_product_attention.__code__.co_varnames:
    return None
  return fused


def _is_hopper_or_newer() -> bool:
  try:
    capability = getattr(jax.devices()[0], "compute_capability", "0")
    return float(capability) >= 9.0
  except (ValueError, RuntimeError):
    return False


def _cudnn_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask: AttentionMask,
                     max_segments: Optional[int]):
  length = q_BxLxHxD.shape[1]
  public = functools.partial(jax.nn.dot_product_attention, implementation=_CUDNN)
  if mask.segment_ids_BxL is not None:
    fused = _cudnn_packed_api()
    if fused is None or not _is_hopper_or_newer():
      _warn_once("cuDNN packed-row attention needs jax's packed-layout API and a Hopper+ GPU; "
                 "using cuDNN with a dense mask.")
      return public(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask=mask.dense(length))
    lengths_BxM, offsets_BxM1 = packed_segments(mask.segment_ids_BxL, max_segments or length)
    out_BxLxHxD = fused.dot_product_attention(
        q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, None, None, lengths_BxM, lengths_BxM,
        offsets_BxM1, offsets_BxM1, scale=1.0 / np.sqrt(q_BxLxHxD.shape[-1]),
        mask_type=fused.MaskType.PADDING)
    # Padding tokens belong to no segment: the kernel leaves their rows undefined.
    real_BxLx1x1 = (mask.segment_ids_BxL > 0)[:, :, None, None]
    return jnp.where(real_BxLx1x1, out_BxLxHxD, jnp.zeros_like(out_BxLxHxD))
  if mask.key_mask_BxL is not None:
    order_BxL, lengths_B = real_keys_first(mask.key_mask_BxL)
    k_BxLxHxD = gather_keys(k_BxLxHxD, order_BxL)
    v_BxLxHxD = gather_keys(v_BxLxHxD, order_BxL)
    # Key lengths only (query lengths default to L): padding queries still attend, as BERT.
    return public(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, key_value_seq_lengths=lengths_B)
  return public(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD)


@functools.lru_cache(maxsize=None)
def _splash_kernel(length: int, num_heads: int, interpret: bool, local_window: int = 0):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask  # pylint: disable=g-import-not-at-top
  block = 128
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  if local_window:
    half = local_window // 2
    one = splash_mask.LocalMask((length, length), window_size=(half, half), offset=0)
  else:
    one = splash_mask.FullMask((length, length))
  heads = splash_mask.MultiHeadMask([one] * num_heads)
  kernel = splash.make_splash_mha(heads, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)
  return kernel, splash.SegmentIds


def _splash_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask: AttentionMask, interpret: bool,
                      local_window: int = 0):
  _, length, heads, head_dim = q_BxLxHxD.shape
  if length % 128:
    raise UserError(f"splash attention needs a length that is a multiple of 128, not {length}")
  kernel, segment_ids_cls = _splash_kernel(length, heads, interpret, local_window)
  # Padding as segments: real tokens are segment 1, padding segment 0. Padding
  # queries then see padding keys only, which changes nothing at real positions.
  segments_BxL = mask.segment_ids_BxL
  if segments_BxL is None and mask.key_mask_BxL is not None:
    segments_BxL = mask.key_mask_BxL.astype(jnp.int32)
  q_BxHxLxD, k_BxHxLxD, v_BxHxLxD = (jnp.swapaxes(x, 1, 2)
                                     for x in (q_BxLxHxD, k_BxLxHxD, v_BxLxHxD))
  q_BxHxLxD = q_BxHxLxD * jnp.asarray(head_dim ** -0.5, q_BxHxLxD.dtype)
  if segments_BxL is None:
    out_BxHxLxD = jax.vmap(kernel)(q_BxHxLxD, k_BxHxLxD, v_BxHxLxD)
  else:
    out_BxHxLxD = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=segment_ids_cls(s, s)))(
        q_BxHxLxD, k_BxHxLxD, v_BxHxLxD, segments_BxL.astype(jnp.int32))
  return jnp.swapaxes(out_BxHxLxD, 1, 2).astype(q_BxLxHxD.dtype)


def dot_product_attention(
    q_BxLxHxD: jax.Array,
    k_BxLxHxD: jax.Array,
    v_BxLxHxD: jax.Array,
    mask: Union[AttentionMask, jax.Array, None] = None,
    *,
    implementation: str = "auto",
    dropout_rng: Optional[jax.Array] = None,
    dropout_rate: float = 0.0,
    deterministic: bool = True,
    max_segments: Optional[int] = None,
    return_weights: bool = False,
    local_window: int = 0,
) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
  """Scaled dot-product attention, [B, L, H, D] in and out.

  Args:
    mask: an `AttentionMask`, a dense boolean [B, 1, L, L] mask, or None.
    implementation: one of IMPLEMENTATIONS; see `select_implementation`.
    max_segments: most sequences in a packed row (cudnn packed layout; default L).
    return_weights: also return the softmax probabilities [B, H, Lq, Lk] (float32, before
      dropout), for the attention viewer. The fused kernels never materialise them, so this
      always runs the xla kernel.
    local_window: W > 0 = sliding-window attention, keys within W // 2 positions.
  """
  if return_weights:
    implementation = "xla"
  _, length, _, head_dim = q_BxLxHxD.shape
  uses_dropout = not deterministic and dropout_rate > 0.0
  platform = jax.default_backend()
  implementation = select_implementation(implementation, platform=platform,
                                         dtype=q_BxLxHxD.dtype, length=length,
                                         head_dim=head_dim, dropout=uses_dropout,
                                         num_devices=jax.device_count(),
                                         local_window=local_window)
  if mask is not None and not isinstance(mask, AttentionMask):
    dense_Bx1xLxL = mask
    if implementation == "cudnn":  # a scanned stack's band mask comes this way too
      return jax.nn.dot_product_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask=dense_Bx1xLxL,
                                          implementation="cudnn")
    if implementation == "splash":
      _warn_once("splash attention needs padding/segment ids, not a dense mask; using XLA.")
    implementation = "xla"
    mask = None
  else:
    mask = mask if mask is not None else AttentionMask()
    dense_Bx1xLxL = None
  if implementation == "cudnn":
    return _cudnn_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask, max_segments)
  if implementation == "splash":
    return _splash_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask,
                             interpret=platform != "tpu", local_window=local_window)
  if dense_Bx1xLxL is None:
    dense_Bx1xLxL = mask.dense(length)
  if local_window:
    band_1x1xLxL = window_mask(length, local_window)
    dense_Bx1xLxL = band_1x1xLxL if dense_Bx1xLxL is None else dense_Bx1xLxL & band_1x1xLxL
  return _xla_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, dense_Bx1xLxL, dropout_rng,
                        dropout_rate, deterministic, return_weights)
