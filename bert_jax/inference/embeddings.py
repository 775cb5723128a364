"""Text embeddings: the encoder's hidden states pooled per text, on top of the runner.

Why pooling per segment: the runner hands every batch over as packed rows
(`packing_ids`, `starts`; a padded row is a packed row with one segment), so
cls/mean/max pooling is computed per segment inside the jitted function and only
[B, K, E] vectors leave the device, whether the texts were packed or padded: one
forward, one code path. cls and mean pooling (and per-token output) pack short
texts; max pooling over a packed row would need a [B, K, L, E] intermediate, so
its texts are only bucketed. Pooling is in float32 whatever the compute dtype
("auto": bfloat16 on GPU/TPU, float32 on CPU, where bf16 is not faster).

Mean pooling is sentence-transformers': the sum over real tokens / max(count,
1e-9). The token budget per batch defaults to `platform.batch_tokens` (512 on
CPU, where larger batches fall out of cache: 2048 was ~15% slower).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained
from bert_jax.inference import limits
from bert_jax.inference import runner

POOLINGS = ("cls", "mean", "max", "token")
PACKED_POOLINGS = ("cls", "mean", "token")


@dataclasses.dataclass
class TokenEmbeddings:
  """Ragged per-token output: line i owns rows [lengths[:i].sum(), lengths[:i+1].sum())."""

  vectors: np.ndarray  # [T, E] float32, all real tokens ([CLS], [SEP] included)
  token_ids: np.ndarray  # [T] int32
  offsets: np.ndarray  # [T, 2] int32 char (start, end) in the line, (0, 0) for specials
  lengths: np.ndarray  # [N] int32 tokens per line


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pool_segments(hidden_BxLxE: jax.Array, packing_BxL: jax.Array, starts_BxK: jax.Array,
                  pooling: str) -> jax.Array:
  """[B, K, E]: each segment's cls (its first token), mean or max over its tokens."""
  if pooling == "cls":
    return jnp.take_along_axis(hidden_BxLxE, starts_BxK[:, :, None], axis=1)
  segments_K = jnp.arange(1, starts_BxK.shape[1] + 1, dtype=packing_BxL.dtype)
  member_BxKxL = packing_BxL[:, None, :] == segments_K[None, :, None]
  if pooling == "mean":
    member_BxKxL = member_BxKxL.astype(hidden_BxLxE.dtype)
    sums_BxKxE = jnp.einsum("bkl,ble->bke", member_BxKxL, hidden_BxLxE,
                            precision=jax.lax.Precision.HIGHEST)
    return sums_BxKxE / jnp.maximum(member_BxKxL.sum(-1)[:, :, None], 1e-9)
  if pooling == "max":
    return jnp.where(member_BxKxL[..., None], hidden_BxLxE[:, None], -1e9).max(2)
  raise ValueError(f"unknown pooling {pooling!r}")


def embedding_forward(config: model_lib.BertConfig, pooling: str, normalize: bool,
                      layer: int) -> runner.Forward:
  """jit(params, batch) -> {"segments": [B, K, E]} (or {"tokens": [B, L, E]} for 'token')."""
  module = model_lib.BertModel(config, add_pooling_layer=False)

  @jax.jit
  def forward(params, batch):
    packing_BxL = batch["packing_ids"]
    # One segment a row (a padded batch; K is static): the key-padding mask is the same
    # attention (tests/test_runner.py) and cheaper than the block-diagonal one.
    padded = batch["starts"].shape[1] == 1
    out = module.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                       packing_BxL > 0 if padded else None, batch["position_ids"],
                       None if padded else packing_BxL, output_hidden_states=layer != -1)
    hidden_BxLxE = (out.sequence_output if layer == -1 else out.hidden_states[layer]).astype(
        jnp.float32)
    if pooling == "token":
      return {"tokens": _unit(hidden_BxLxE) if normalize else hidden_BxLxE}
    pooled_BxKxE = pool_segments(hidden_BxLxE, batch["packing_ids"], batch["starts"], pooling)
    return {"segments": _unit(pooled_BxKxE) if normalize else pooled_BxKxE}

  return forward


class Embedder:
  """Texts -> vectors with one compiled program per batch shape."""

  def __init__(self, pre: Pretrained, pooling: str = "mean", *, normalize: bool = False,
               layer: int = -1, max_seq_length: Optional[int] = None,
               tokens_per_batch: Optional[int] = None, batch_size: Optional[int] = None,
               compile_cost_tokens: int = runner.COMPILE_COST_TOKENS, dtype: str = "auto",
               devices: Optional[Sequence[jax.Device]] = None,
               pack_length: int = runner.PACK_LENGTH):
    """See the module docstring.

    `pack_length`: texts up to this many tokens are packed into rows this long (cls, mean and
    token pooling only, and only when they fill at least one batch of `tokens_per_batch`;
    0 = never).

    `tokens_per_batch`: token budget of a batch; None (or 0) = `platform.batch_tokens` of the
    devices' platform per device.

    `dtype`: compute dtype; "auto" = bfloat16 on GPU/TPU, float32 on CPU (model.resolve_dtype).
    `devices` shards each batch's rows over those devices (data parallel, parameters
    replicated); default: this process's devices of the default backend (`runner.run`).
    """
    if pooling not in POOLINGS:
      raise UserError(f"--pooling={pooling!r}: expected one of {list(POOLINGS)}")
    num_layers = pre.config.num_layers
    if not -(num_layers + 1) <= layer <= num_layers:
      raise UserError(f"--layer={layer}: the model has hidden states 0..{num_layers} "
                      f"(or -{num_layers + 1}..-1)")
    if batch_size is not None and batch_size < 1:
      raise UserError(f"--batch_size={batch_size}: must be >= 1")
    self.pre, self.pooling, self.normalize = pre, pooling, normalize
    self.max_length = limits.default_max_length(pre.config, max_seq_length)
    self.tokens_per_batch, self.batch_size = tokens_per_batch, batch_size
    self.compile_cost_tokens = compile_cost_tokens
    self.pack_length = pack_length if pooling in PACKED_POOLINGS else 0
    self.devices = list(devices) if devices else jax.local_devices()
    self.dtype = model_lib.resolve_dtype(dtype)
    params = {k: v for k, v in pre.params["bert"].items() if k != "pooler"}
    self._params = runner.place_params(params, self.devices)
    self._forward = embedding_forward(pre.config.replace(dtype=self.dtype), pooling, normalize,
                                      layer)

  def embed(self, texts: Sequence[str],
            progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray | TokenEmbeddings:
    """[N, E] float32 (input order), or TokenEmbeddings for pooling='token'."""
    token_mode = self.pooling == "token"
    enc = self.pre.tokenizer.encode_batch(list(texts), max_length=self.max_length, padding="none",
                                          return_offsets=token_mode)
    results = runner.run(
        self._forward, self._params, enc["input_ids"], enc["token_type_ids"],
        max_length=self.max_length, pad_id=self.pre.tokenizer.pad_id,
        pack=self.pack_length > 0, pack_length=self.pack_length or runner.PACK_LENGTH,
        tokens_per_batch=self.tokens_per_batch, batch_size=self.batch_size, devices=self.devices,
        progress=progress, compile_cost_tokens=self.compile_cost_tokens)
    hidden = self.pre.config.hidden_size
    if not token_mode:
      if not results:
        return np.zeros((0, hidden), np.float32)
      return np.stack([r["segments"] for r in results]).astype(np.float32)
    lengths = np.asarray([len(r) for r in enc["input_ids"]], np.int32)
    vectors = (np.concatenate([r["tokens"] for r in results]) if results
               else np.zeros((0, hidden), np.float32))
    flat_ids = [i for r in enc["input_ids"] for i in r]
    flat_offsets = [o for r in enc["offsets"] for o in r]
    return TokenEmbeddings(vectors.astype(np.float32), np.asarray(flat_ids, np.int32),
                           np.asarray(flat_offsets, np.int32).reshape(-1, 2), lengths)
