"""BERT (Devlin et al. 2018) as functional Flax linen modules.

Design choices, and why:
- One frozen `BertConfig` holds every hyper-parameter, so an eval variant is
  `config.replace(...)` and a config can be hashed into a jit cache.
- Parameters are float32 and carry logical axis names (`vocab`, `embed`,
  `heads`, `kv`, `mlp`, `layers`); activations get logical constraints. Sharding
  is then configuration only (see `bert_jax/sharding.py`).
- Compute dtype is `config.dtype`; "auto" (`resolve_dtype`) is bfloat16 on
  GPU/TPU and float32 on CPU. Softmax and LayerNorm statistics stay in float32
  and logits are returned in float32.
- The attention kernel is chosen once per call of `BertModel`
  (`attention.select_implementation`: platform, dtype, length, dropout).
- Post-LN residual blocks, exact (erf) GELU and LayerNorm eps 1e-12, as BERT.
- Architecture switches (`BertConfig`'s second block; defaults are BERT, bit for bit) make
  the same modules a ModernBERT (Warner et al. 2024): RoPE with a base per layer type, a gated
  feed-forward (GeGLU/SwiGLU), pre-LN with the final norm it needs, no biases, a sliding-window
  attention pattern (global every Nth layer), no token types, an untied decoder and
  ModernBERT's pooler (pool -> dense -> act -> norm). One model, so every trainer, head,
  sharding rule and tool serves both families. `scan_layers` takes alternating layers
  too: the pattern is a scanned input (per layer: local?, attention norm?) and local
  layers then see a dense band mask.
- The parameter tree mirrors the Hugging Face module names closely enough that
  `bert_jax/formats/convert.py` is a table of renames, but q/k/v kernels are stored per
  head ([embed, heads, kv]) so that head-sharding is a logical rule.
- The heads on this encoder (MLM, NSP, classifiers, QA, ...) live in
  `bert_jax/heads/`, one file each.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp

from bert_jax import attention as attention_lib
from bert_jax import dropout as dropout_lib
from bert_jax.errors import UserError

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=512),
    "mini": dict(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=1024),
    "small": dict(num_layers=4, hidden_size=512, num_heads=8, intermediate_size=2048),
    "medium": dict(num_layers=8, hidden_size=512, num_heads=8, intermediate_size=2048),
    "base": dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072),
    "large": dict(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096),
}

ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
}

# Values of the architecture switches (the first is BERT's).
POSITION_EMBEDDINGS = ("learned", "rope")
# mlp: act(x W1) W2. glu: (act(x W1) * x Wg) W2, GeGLU with gelu, SwiGLU with silu.
FEED_FORWARDS = ("mlp", "glu")
NORM_PLACEMENTS = ("post", "pre")
# What the pooler makes of the pooled vector: BERT's tanh(dense) or ModernBERT's
# norm(act(dense)) ("head").
POOLERS = ("tanh", "head")
POOLINGS = ("cls", "mean")

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(name: str, platform: Optional[str] = None) -> str:
  """A compute dtype name, with "auto" made concrete: bfloat16 on GPU/TPU, float32 on CPU.

  `platform` defaults to `jax.default_backend()` (which initialises the backend:
  call it after `jax.distributed.initialize`).
  """
  if name not in DTYPES:
    raise UserError(f"dtype={name!r} is not one of {', '.join(DTYPES)}")
  if name != "auto":
    return name
  platform = platform or jax.default_backend()
  return "bfloat16" if platform in ("gpu", "tpu") else "float32"


def default_attention_dropout(platform: Optional[str] = None) -> float:
  """BERT's 0.1 on CPU; 0.0 on GPU/TPU so the fused attention kernels run in training.

  See bert_jax/attention.py's docstring and BENCHMARKS.md for the measured cost.
  """
  platform = platform or jax.default_backend()
  return 0.0 if platform in ("gpu", "tpu") else 0.1


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyper-parameters of the encoder; defaults are BERT-base uncased."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  hidden_dropout_rate: float = 0.1
  # None = `default_attention_dropout()` of the platform the run is set up on (`for_platform`).
  attention_dropout_rate: Optional[float] = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pad_token_id: int = 0
  # Compute dtype of activations and matmuls ("auto": `resolve_dtype`); parameters stay
  # `param_dtype`.
  dtype: str = "float32"
  param_dtype: str = "float32"
  # One of attention.IMPLEMENTATIONS: 'auto' (per platform and shape), 'xla', 'cudnn', 'splash'.
  attention_impl: str = "auto"
  # The MLM decoder pads the vocabulary to a multiple of this (1 = no padding).
  vocab_pad_multiple: int = 128
  # Stack the layers with nn.scan: one compiled layer, faster compiles for deep models.
  scan_layers: bool = False
  # Rematerialisation of each layer in the backward pass: one of REMAT_POLICIES.
  remat_policy: str = "none"

  # --- Architecture switches (defaults: BERT; configs/modernbert_base.py: ModernBERT). ---
  # POSITION_EMBEDDINGS: a learned table added to the embeddings, or rotary (q/k rotated).
  position_embedding: str = "learned"
  # RoPE base of the global layers and of the sliding-window layers.
  rope_theta: float = 10000.0
  rope_local_theta: float = 10000.0
  # FEED_FORWARDS: the feed-forward block (`hidden_act` is the activation of either).
  feed_forward: str = "mlp"
  # NORM_PLACEMENTS: post-LN (BERT) or pre-LN with a final norm after the stack.
  norm_placement: str = "post"
  # Pre-LN: whether layer 0 normalises its attention input (ModernBERT's does not: the
  # embedding norm just did).
  first_layer_attn_norm: bool = True
  # Biases of the encoder's dense layers (attention and feed-forward) and of the norms.
  use_bias: bool = True
  norm_bias: bool = True
  # Sliding-window attention: 0 = every layer global; W > 0 = a local layer sees keys within
  # W // 2 positions either side (Hugging Face's `local_attention`); layer i is global when
  # i % global_every == 0.
  local_window: int = 0
  global_every: int = 1
  # MLM decoder tied to the word embeddings (BERT, ModernBERT) or its own matrix.
  tie_decoder: bool = True
  # POOLERS and POOLINGS: the pooled output the sequence heads read.
  pooler: str = "tanh"
  pooling: str = "cls"
  # Bias of the pooler's dense layer ("head" pooler: Hugging Face's `classifier_bias`).
  pooler_bias: bool = True
  # Apply the pooler's dense -> act -> norm to every token too (ModernBERT's token
  # classification and QA models have this prediction head before their classifier).
  token_head: bool = False

  def __post_init__(self):
    # A frozen config is the same on every machine: "auto" dtype and None attention dropout
    # stay as they are until `for_platform` makes them concrete (once, in the run's setup).
    if self.dtype not in DTYPES:
      raise UserError(f"dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")
    if self.vocab_pad_multiple < 1:
      raise UserError(f"vocab_pad_multiple={self.vocab_pad_multiple} must be >= 1")
    if self.hidden_size % self.num_heads:
      raise UserError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
    if self.hidden_act not in ACTIVATIONS:
      raise UserError(f"hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
    if self.attention_impl not in attention_lib.IMPLEMENTATIONS:
      raise UserError(f"attention_impl={self.attention_impl!r} is not one of "
                       f"{attention_lib.IMPLEMENTATIONS}")
    if self.remat_policy not in REMAT_POLICIES:
      raise UserError(f"remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")
    for key, allowed in (("position_embedding", POSITION_EMBEDDINGS),
                         ("feed_forward", FEED_FORWARDS), ("norm_placement", NORM_PLACEMENTS),
                         ("pooler", POOLERS), ("pooling", POOLINGS)):
      if getattr(self, key) not in allowed:
        raise UserError(f"{key}={getattr(self, key)!r} is not one of {allowed}")
    if self.position_embedding == "rope" and self.head_dim % 2:
      raise UserError(f"position_embedding='rope' needs an even head size, not {self.head_dim}")
    if self.local_window < 0 or self.global_every < 1:
      raise UserError(f"local_window={self.local_window} must be >= 0 and "
                       f"global_every={self.global_every} >= 1")
    if self.type_vocab_size < 0:
      raise UserError(f"type_vocab_size={self.type_vocab_size} must be >= 0 (0 = no token types)")
  @property
  def layer_windows(self) -> tuple[int, ...]:
    """Per layer, its sliding window (0 = global attention)."""
    return tuple(self.local_window if self.local_window and i % self.global_every else 0
                 for i in range(self.num_layers))

  @property
  def first_layer_skips_attn_norm(self) -> bool:
    return self.norm_placement == "pre" and not self.first_layer_attn_norm

  @property
  def layers_alike(self) -> bool:
    """Whether every layer is the same function (else a scanned stack takes per-layer flags)."""
    return len(set(self.layer_windows)) == 1 and not self.first_layer_skips_attn_norm

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self) -> Any:
    if self.dtype == "auto":
      raise UserError("BertConfig.dtype='auto' must be made concrete first (config.for_platform)")
    return jnp.dtype(self.dtype)

  def for_platform(self, platform: Optional[str] = None) -> "BertConfig":
    """This config with the platform's defaults made concrete: "auto" dtype
    (`resolve_dtype`) and None attention dropout (`default_attention_dropout`)."""
    platform = platform or jax.default_backend()
    return self.replace(
        dtype=resolve_dtype(self.dtype, platform),
        attention_dropout_rate=(default_attention_dropout(platform)
                                if self.attention_dropout_rate is None
                                else self.attention_dropout_rate))

  def replace(self, **changes: Any) -> "BertConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> "BertConfig":
    """A named size (tiny, mini, small, medium, base, large) with overrides."""
    if name not in PRESETS:
      raise UserError(f"unknown model size {name!r}; expected one of {sorted(PRESETS)}")
    return cls(**{**PRESETS[name], **overrides})

  # Hugging Face `config.json` <-> BertConfig.
  _HF_KEYS = dict(vocab_size="vocab_size", hidden_size="hidden_size",
                  num_layers="num_hidden_layers", num_heads="num_attention_heads",
                  intermediate_size="intermediate_size",
                  max_position_embeddings="max_position_embeddings",
                  type_vocab_size="type_vocab_size", hidden_act="hidden_act",
                  hidden_dropout_rate="hidden_dropout_prob",
                  attention_dropout_rate="attention_probs_dropout_prob",
                  layer_norm_eps="layer_norm_eps", initializer_range="initializer_range",
                  pad_token_id="pad_token_id")

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any], **overrides: Any) -> "BertConfig":
    """From a Hugging Face `config.json` or a Google `bert_config.json` dict."""
    kwargs = {ours: hf[theirs] for ours, theirs in cls._HF_KEYS.items() if theirs in hf}
    missing = [theirs for theirs in ("vocab_size", "hidden_size", "num_hidden_layers",
                                     "num_attention_heads", "intermediate_size")
               if theirs not in hf]
    if missing:
      raise UserError(f"BERT config is missing keys {missing}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise UserError(f"position_embedding_type={hf['position_embedding_type']!r} is not "
                       "supported (only 'absolute', as BERT)")
    return cls(**{**kwargs, **overrides})

  def to_hf_dict(self) -> dict[str, Any]:
    hf = {theirs: getattr(self, ours) for ours, theirs in self._HF_KEYS.items()}
    hf.update(architectures=["BertForPreTraining"], model_type="bert",
              position_embedding_type="absolute", torch_dtype="float32", use_cache=True)
    return hf


class _FlatInitPartitioned(nn.LogicallyPartitioned):
  """LogicallyPartitioned that skips its sharding constraint while DenseGeneral's init holds
  the kernel flattened to 2-D (a rank-3 constraint on it fails under a mesh)."""

  def unbox(self, apply_constraint=True):
    if apply_constraint and jnp.ndim(self.value) != len(self.names):
      return self.value
    return super().unbox(apply_constraint)


def _partitioned(init, names):
  return lambda *args, **kwargs: _FlatInitPartitioned(init(*args, **kwargs), names)


def dense(features, axes, config: BertConfig, name: str, **kwargs) -> nn.Module:
  """Dense/DenseGeneral with BERT's init and logical axis names on its parameters.

  The heads (`bert_jax/heads/`) build their layers with it: always with a bias.
  """
  init = nn.initializers.normal(stddev=config.initializer_range)
  bias_axes = axes[-1:] if isinstance(features, int) else axes[-len(features):]
  return nn.DenseGeneral(
      features=features,
      dtype=config.compute_dtype,
      param_dtype=jnp.dtype(config.param_dtype),
      kernel_init=_partitioned(init, axes),
      bias_init=_partitioned(nn.initializers.zeros, bias_axes),
      name=name, **kwargs)


def _dense(features, axes, config: BertConfig, name: str, **kwargs):
  """An encoder layer: `dense` with a bias iff `config.use_bias`.

  Without a bias the input's leading (batch, length) axes are merged first: XLA's CPU
  backend ran the gradient of a bias-less [B, L, E] dense followed by GELU about 2x
  slower than the same on [B * L, E] (measured: 126 vs 49 ms), which made bias-less
  (ModernBERT) layers ~1.6x slower per layer on CPU. The result is the same matmul.
  """
  layer = dense(features, axes, config, name, use_bias=config.use_bias, **kwargs)
  if config.use_bias:
    return layer
  axis = kwargs.get("axis", -1)
  contracted = len(axis) if isinstance(axis, tuple) else 1

  def apply(x):
    lead = x.shape[:-contracted]
    y = layer(x.reshape((-1,) + x.shape[len(lead):]))
    return y.reshape(lead + y.shape[1:])

  return apply


class LayerNorm(nn.Module):
  """LayerNorm with float32 statistics whatever the compute dtype."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    features = x.shape[-1]
    param_dtype = jnp.dtype(cfg.param_dtype)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (features,), param_dtype)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + cfg.layer_norm_eps)
    y = y * scale.astype(jnp.float32)
    if cfg.norm_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        (features,), param_dtype)
      y = y + bias.astype(jnp.float32)
    return y.astype(cfg.compute_dtype)


class BertEmbeddings(nn.Module):
  """Word + learned position + segment (token type) embeddings, LayerNorm, dropout.

  RoPE models have no position table (positions rotate q and k instead) and
  `type_vocab_size=0` none for token types.
  """

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL, position_ids_BxL, deterministic):
    cfg = self.config
    init = nn.initializers.normal(stddev=cfg.initializer_range)
    param_dtype = jnp.dtype(cfg.param_dtype)

    def table(name, rows, row_axis):
      return nn.Embed(rows, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=param_dtype,
                      embedding_init=nn.with_logical_partitioning(init, (row_axis, "embed")),
                      name=name)

    word = table("word_embeddings", cfg.vocab_size, "vocab")
    x_BxLxE = word(input_ids_BxL)
    if cfg.position_embedding == "learned":
      x_BxLxE = x_BxLxE + table("position_embeddings", cfg.max_position_embeddings,
                                None)(position_ids_BxL)
    if cfg.type_vocab_size:
      x_BxLxE = x_BxLxE + table("token_type_embeddings", cfg.type_vocab_size,
                                None)(token_type_ids_BxL)
    x_BxLxE = LayerNorm(cfg, name="layer_norm")(x_BxLxE)
    x_BxLxE = dropout_lib.Dropout(cfg.hidden_dropout_rate)(x_BxLxE, deterministic=deterministic)
    if cfg.tie_decoder:
      return x_BxLxE, word.embedding
    # An untied MLM decoder: the matrix the MLM head multiplies by, [V, E].
    decoder_VxE = self.param("output_embeddings",
                             nn.with_logical_partitioning(init, ("vocab", "embed")),
                             (cfg.vocab_size, cfg.hidden_size), param_dtype)
    return x_BxLxE, decoder_VxE


def rope_tables(position_ids_BxL: jax.Array, head_dim: int, theta: float
                ) -> tuple[jax.Array, jax.Array]:
  """(cos, sin) [B, L, D] float32 of rotary embeddings at `position_ids` (Su et al. 2021),
  with the half-split layout of Hugging Face's `rotate_half`."""
  inv_freq_D2 = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs_BxLxD2 = position_ids_BxL.astype(jnp.float32)[..., None] * inv_freq_D2
  angles_BxLxD = jnp.concatenate([freqs_BxLxD2, freqs_BxLxD2], axis=-1)
  return jnp.cos(angles_BxLxD), jnp.sin(angles_BxLxD)


def apply_rope(x_BxLxHxD: jax.Array, cos_BxLxD: jax.Array, sin_BxLxD: jax.Array) -> jax.Array:
  """x * cos + rotate_half(x) * sin, in float32, back in x's dtype."""
  x32 = x_BxLxHxD.astype(jnp.float32)
  half = x32.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos_BxLxD[:, :, None, :] + rotated * sin_BxLxD[:, :, None, :]
  return out.astype(x_BxLxHxD.dtype)


class BertSelfAttention(nn.Module):
  """Multi-head self-attention; the kernel is chosen by `config.attention_impl`.

  `window` > 0: sliding-window attention (keys within window // 2 positions).
  `rope`: (cos, sin) [B, L, D] that rotate q and k, or None (learned positions).
  `is_local`: a traced bool (scanned stacks whose layers alternate): the window of
  `config.local_window` applies iff it is true, through a dense mask.
  """

  config: BertConfig
  window: int = 0

  @nn.compact
  def __call__(self, x_BxLxE, mask: attention_lib.AttentionMask, deterministic, rope=None,
               is_local=None, keep_BxP=None):
    """`keep_BxP`: only these query positions' outputs, [B, P, E] (every key still attends)."""
    cfg = self.config
    heads = (cfg.num_heads, cfg.head_dim)
    qkv_axes = ("embed", "heads", "kv")
    act_axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
    q_BxLxHxD = nn.with_logical_constraint(_dense(heads, qkv_axes, cfg, "query")(x_BxLxE), act_axes)
    k_BxLxHxD = nn.with_logical_constraint(_dense(heads, qkv_axes, cfg, "key")(x_BxLxE), act_axes)
    v_BxLxHxD = nn.with_logical_constraint(_dense(heads, qkv_axes, cfg, "value")(x_BxLxE), act_axes)
    if rope is not None:
      q_BxLxHxD, k_BxLxHxD = (apply_rope(x, *rope) for x in (q_BxLxHxD, k_BxLxHxD))
    use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
    # The attention viewer gets the probabilities by applying with mutable=["intermediates"]
    # (one forward on the xla kernel); every other call runs the kernel exactly as before.
    capture = self.is_mutable_collection("intermediates")
    if is_local is not None:  # one compiled layer for local and global: a dense mask
      length = x_BxLxE.shape[1]
      band_1x1xLxL = attention_lib.window_mask(length, cfg.local_window) | ~is_local
      dense = mask.dense(length)
      mask = band_1x1xLxL if dense is None else dense & band_1x1xLxL
    ctx_BxLxHxD = attention_lib.dot_product_attention(
        q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, mask,
        implementation=cfg.attention_impl,
        dropout_rng=self.make_rng("dropout") if use_dropout else None,
        dropout_rate=cfg.attention_dropout_rate,
        deterministic=deterministic, return_weights=capture, local_window=self.window)
    if capture:
      ctx_BxLxHxD, probs_BxHxLxL = ctx_BxLxHxD
      self.sow("intermediates", "attention_probs", probs_BxHxLxL)
    ctx_BxLxHxD = nn.with_logical_constraint(ctx_BxLxHxD, act_axes)
    if keep_BxP is not None:  # the output projection only where the caller reads
      ctx_BxLxHxD = gather_positions(ctx_BxLxHxD, keep_BxP)
    return _dense(cfg.hidden_size, ("heads", "kv", "embed"), cfg, "output",
                  axis=(-2, -1))(ctx_BxLxHxD)


def _feed_forward(cfg: BertConfig, x_BxLxE, deterministic):
  """act(x W1) W2, or with `feed_forward='glu'` (act(x W1) * x Wg) W2, as layers of the
  calling block (`intermediate`, `gate`, `output`).

  The gate is its own [embed, mlp] kernel, so the `mlp` axis shards both alike;
  Hugging Face ModernBERT's fused `Wi` is [W1; Wg] (formats/modernbert.py).
  """
  h_BxLxM = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, "intermediate")(x_BxLxE)
  h_BxLxM = ACTIVATIONS[cfg.hidden_act](h_BxLxM)
  if cfg.feed_forward == "glu":
    h_BxLxM = h_BxLxM * _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, "gate")(x_BxLxE)
  h_BxLxM = nn.with_logical_constraint(
      h_BxLxM, ("activation_batch", "activation_length", "activation_mlp"))
  h_BxLxE = _dense(cfg.hidden_size, ("mlp", "embed"), cfg, "output")(h_BxLxM)
  return dropout_lib.Dropout(cfg.hidden_dropout_rate)(h_BxLxE, deterministic=deterministic)


class BertLayer(nn.Module):
  """One transformer block, post-LN (BERT) or pre-LN. With `scanned`, speaks nn.scan's
  (carry, y) protocol.

  The parameter names are the same in both placements: `attention_layer_norm` normalises
  the attention's output sum (post) or its input (pre), `output_layer_norm` the
  feed-forward's.
  """

  config: BertConfig
  scanned: bool = False
  emit_hidden: bool = False
  window: int = 0  # sliding window of this layer (0 = global)
  attn_norm: bool = True  # pre-LN: normalise the attention input

  @nn.compact
  def __call__(self, x_BxLxE, mask, deterministic, rope=None, flags=None, keep_BxP=None):
    """`flags`: in a scanned stack whose layers differ, this layer's (is_local, attn_norm)
    traced bools; `rope` is then both kinds' tables ({"global", "local"}).

    `keep_BxP`: the layer's output only at these positions, [B, P, E]. Keys and values
    still come from every position, so those rows equal the full layer's; what is saved
    is the attention's output projection and the feed-forward of the other positions
    (the last layer of MLM pretraining: ~5/6 of its work at 20 predictions in 128).
    """
    cfg = self.config
    act_axes = ("activation_batch", "activation_length", "activation_embed")
    is_local = attn_norm = None
    if flags is not None:
      is_local, attn_norm = flags
      if rope is not None:
        rope = tuple(jnp.where(is_local, l, g) for l, g in zip(rope["local"], rope["global"]))
    attention = functools.partial(BertSelfAttention(cfg, window=self.window, name="attention"),
                                  is_local=is_local, keep_BxP=keep_BxP)
    if keep_BxP is not None:
      act_axes = ("activation_batch", None, "activation_embed")

    def kept(x_BxLxE):  # the residual stream at the kept positions
      return x_BxLxE if keep_BxP is None else gather_positions(x_BxLxE, keep_BxP)

    if cfg.norm_placement == "pre":
      if attn_norm is not None:  # layer 0's norm exists (stacked) but is skipped
        h_BxLxE = jnp.where(attn_norm, LayerNorm(cfg, name="attention_layer_norm")(x_BxLxE),
                            x_BxLxE)
      elif self.attn_norm:
        h_BxLxE = LayerNorm(cfg, name="attention_layer_norm")(x_BxLxE)
      else:
        h_BxLxE = x_BxLxE
      attn_BxLxE = attention(h_BxLxE, mask, deterministic, rope)
      x_BxLxE = kept(x_BxLxE) + dropout_lib.Dropout(cfg.hidden_dropout_rate)(attn_BxLxE,
                                                               deterministic=deterministic)
      h_BxLxE = LayerNorm(cfg, name="output_layer_norm")(x_BxLxE)
      x_BxLxE = x_BxLxE + _feed_forward(cfg, h_BxLxE, deterministic)
    else:
      attn_BxLxE = attention(x_BxLxE, mask, deterministic, rope)
      attn_BxLxE = dropout_lib.Dropout(cfg.hidden_dropout_rate)(attn_BxLxE, deterministic=deterministic)
      x_BxLxE = LayerNorm(cfg, name="attention_layer_norm")(kept(x_BxLxE) + attn_BxLxE)
      h_BxLxE = _feed_forward(cfg, x_BxLxE, deterministic)
      x_BxLxE = LayerNorm(cfg, name="output_layer_norm")(x_BxLxE + h_BxLxE)
    x_BxLxE = nn.with_logical_constraint(x_BxLxE, act_axes)
    if self.scanned:
      return x_BxLxE, (x_BxLxE if self.emit_hidden else None)
    return x_BxLxE


def gather_positions(x_BxLx_: jax.Array, positions_BxP: jax.Array) -> jax.Array:
  """x[b, positions[b, p]] -> [B, P, ...]."""
  idx = positions_BxP.astype(jnp.int32).reshape(positions_BxP.shape + (1,) * (x_BxLx_.ndim - 2))
  return jnp.take_along_axis(x_BxLx_, idx, axis=1)


def _remat_policy(name: str):
  return {"full": None,
          "dots": jax.checkpoint_policies.checkpoint_dots,
          "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]


class BertEncoder(nn.Module):
  """The layer stack: a Python loop (`layer_{i}`) or one `nn.scan` (`layers`, stacked).

  `rope`: {"global": (cos, sin), "local": (cos, sin)} or None; each layer takes the pair
  of its kind.
  """

  config: BertConfig

  @nn.compact
  def __call__(self, x_BxLxE, mask, deterministic, output_hidden_states=False, rope=None,
               keep_BxP=None):
    """`keep_BxP`: the last layer computes only these positions' outputs (a Python-loop
    stack; a scanned one gathers them after its last layer)."""
    cfg = self.config
    windows = cfg.layer_windows
    layer_cls = BertLayer
    if cfg.remat_policy != "none":
      layer_cls = nn.remat(layer_cls, prevent_cse=not cfg.scan_layers,
                           policy=_remat_policy(cfg.remat_policy), static_argnums=(3,))

    def tables(window):
      return None if rope is None else rope["local" if window else "global"]

    if cfg.scan_layers:
      if cfg.layers_alike:
        args, in_axes, window = (tables(windows[0]),), (nn.broadcast,), windows[0]
      else:  # the pattern as a scanned input: per layer (is_local, attn_norm)
        flags = (jnp.asarray([w > 0 for w in windows]),
                 jnp.asarray([i > 0 or not cfg.first_layer_skips_attn_norm
                              for i in range(cfg.num_layers)]))
        args, in_axes, window = (rope, flags), (nn.broadcast, 0), 0
      stack = nn.scan(layer_cls, variable_axes={"params": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast, nn.broadcast) + in_axes, length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x_BxLxE, hidden_NxBxLxE = stack(cfg, scanned=True, emit_hidden=output_hidden_states,
                                      window=window, name="layers")(
                                          x_BxLxE, mask, deterministic, *args)
      hidden = tuple(hidden_NxBxLxE) if output_hidden_states else ()
      if keep_BxP is not None:
        x_BxLxE = gather_positions(x_BxLxE, keep_BxP)
      return x_BxLxE, hidden
    hidden = []
    for i in range(cfg.num_layers):
      attn_norm = cfg.first_layer_attn_norm or i > 0
      keep = keep_BxP if i == cfg.num_layers - 1 else None
      x_BxLxE = layer_cls(cfg, window=windows[i], attn_norm=attn_norm, name=f"layer_{i}")(
          x_BxLxE, mask, deterministic, tables(windows[i]), None, keep)
      hidden.append(x_BxLxE)
    return x_BxLxE, (tuple(hidden) if output_hidden_states else ())


@flax.struct.dataclass
class BertOutput:
  sequence_output: jax.Array  # [B, L, E]
  pooled_output: Optional[jax.Array]  # [B, E]: the pooler's output (BertModel)
  # Embedding output then each layer's output, when asked for: num_layers + 1 of [B, L, E].
  hidden_states: tuple[jax.Array, ...]
  word_embeddings: jax.Array  # [V, E]: the MLM decoder's matrix (the word table when tied)


class BertModel(nn.Module):
  """The bidirectional encoder with its pooler.

  BERT's pooler is tanh(dense([CLS])); `pooler='head'` is ModernBERT's
  norm(act(dense(pooled))) over [CLS] or the mean of the real tokens (`pooling`), and
  with `token_head` the same layers also transform every token (ModernBERT's token
  classification and QA models), so the heads read the encoder's outputs unchanged.
  Pre-LN models end with `final_norm`.
  """

  config: BertConfig
  add_pooling_layer: bool = True

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL=None, attention_mask_BxL=None,
               position_ids_BxL=None, packing_ids_BxL=None, *, deterministic: bool = True,
               output_hidden_states: bool = False, unpack_rows_GxS=None,
               unpack_positions_GxSxT=None, output_positions_BxP=None) -> BertOutput:
    """The encoder over [B, L] rows.

    `unpack_rows_GxS` / `unpack_positions_GxSxT` (packed fine-tuning,
    `bert_jax.data.packing`): the B rows are G equal groups; sequence s of group g
    is at positions `unpack_positions[g, s]` of row `unpack_rows[g, s]` of its group.
    The sequence output (and the pooler's [CLS]) are then read back per sequence:
    `sequence_output` is [G*S, T, E], the padded layout the heads read.

    `output_positions_BxP` (MLM pretraining: the masked positions): `sequence_output`
    is [B, P, E] at those positions only, and the last layer computes no others
    (`BertLayer`'s `keep_BxP`); the pooler still reads [CLS]. With `output_hidden_states`
    or mean pooling every position is computed, then gathered. Not with unpacking.
    """
    cfg = self.config
    batch, length = input_ids_BxL.shape
    if length > cfg.max_position_embeddings:
      raise UserError(f"sequence length {length} exceeds the position table "
                       f"(max_position_embeddings={cfg.max_position_embeddings})")
    if token_type_ids_BxL is None:
      token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
    if position_ids_BxL is None:
      position_ids_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    mask = attention_lib.attention_mask(attention_mask_BxL, packing_ids_BxL, length)
    # One kernel choice for the whole stack (warnings, if any, once).
    impl = attention_lib.select_implementation(
        cfg.attention_impl, platform=jax.default_backend(), dtype=cfg.compute_dtype,
        length=length, head_dim=cfg.head_dim,
        dropout=not deterministic and cfg.attention_dropout_rate > 0.0,
        num_devices=jax.device_count())
    x_BxLxE, word_VxE = BertEmbeddings(cfg, name="embeddings")(
        input_ids_BxL, token_type_ids_BxL, position_ids_BxL, deterministic)
    x_BxLxE = nn.with_logical_constraint(
        x_BxLxE, ("activation_batch", "activation_length", "activation_embed"))
    embedded = x_BxLxE
    rope = None
    if cfg.position_embedding == "rope":
      rope = {"global": rope_tables(position_ids_BxL, cfg.head_dim, cfg.rope_theta),
              "local": rope_tables(position_ids_BxL, cfg.head_dim, cfg.rope_local_theta)}
    # The last layer at the output positions only, unless something reads every position
    # (hidden states, mean pooling): then all are computed and gathered at the end.
    keep_BxP = None
    if output_positions_BxP is not None:
      if unpack_rows_GxS is not None:
        raise ValueError("output_positions_BxP does not go with unpacking")
      reads_every_position = output_hidden_states or (self.add_pooling_layer
                                                      and cfg.pooling != "cls")
      if not reads_every_position:
        keep_BxP = output_positions_BxP
        if self.add_pooling_layer:  # [CLS] first: the pooler reads it
          keep_BxP = jnp.concatenate([jnp.zeros((batch, 1), keep_BxP.dtype), keep_BxP], axis=1)
    x_BxLxE, layers = BertEncoder(cfg.replace(attention_impl=impl), name="encoder")(
        x_BxLxE, mask, deterministic, output_hidden_states, rope, keep_BxP)
    if cfg.norm_placement == "pre":
      x_BxLxE = LayerNorm(cfg, name="final_norm")(x_BxLxE)
      # The last hidden state is the normalised one, as transformers reports it.
      layers = layers[:-1] + (x_BxLxE,) if output_hidden_states else layers
    packed_mean_SxE = None
    if unpack_rows_GxS is not None:
      if self.add_pooling_layer and cfg.pooling == "mean":
        packed_mean_SxE = packed_mean(x_BxLxE, packing_ids_BxL, unpack_rows_GxS,
                                      unpack_positions_GxSxT)
      x_BxLxE = unpack(x_BxLxE, unpack_rows_GxS, unpack_positions_GxSxT)
    pooled_BxE = None
    if self.add_pooling_layer or cfg.token_head:
      pool = self._pooler_layers()
      if self.add_pooling_layer:
        pooled_BxE = pool(packed_mean_SxE if packed_mean_SxE is not None else
                          self._pool(x_BxLxE, attention_mask_BxL, packing_ids_BxL))
      if cfg.token_head:
        x_BxLxE = pool(x_BxLxE)
    hidden = (embedded,) + layers if output_hidden_states else ()
    if keep_BxP is not None and self.add_pooling_layer:
      x_BxLxE = x_BxLxE[:, 1:]  # [CLS], prepended above for the pooler
    elif output_positions_BxP is not None and keep_BxP is None:
      x_BxLxE = gather_positions(x_BxLxE, output_positions_BxP)
    return BertOutput(x_BxLxE, pooled_BxE, hidden, word_VxE)

  def _pooler_layers(self):
    cfg = self.config
    layer = dense(cfg.hidden_size, ("embed", "embed_out"), cfg, "pooler",
                  use_bias=cfg.pooler_bias)
    if cfg.pooler == "tanh":
      return lambda x: jnp.tanh(layer(x))
    norm = LayerNorm(cfg, name="pooler_norm")
    return lambda x: norm(ACTIVATIONS[cfg.hidden_act](layer(x)))

  def _pool(self, x_BxLxE, attention_mask_BxL, packing_ids_BxL):
    if self.config.pooling == "cls":
      return x_BxLxE[:, 0]
    if packing_ids_BxL is not None:
      raise UserError("pooling='mean' over packed rows is not supported: train with "
                       "config.pack=False")
    if attention_mask_BxL is None:
      return jnp.mean(x_BxLxE, axis=1)
    w_BxLx1 = attention_mask_BxL.astype(x_BxLxE.dtype)[:, :, None]
    return jnp.sum(x_BxLxE * w_BxLx1, axis=1) / jnp.sum(w_BxLx1, axis=1)


def packed_mean(x_BxLxE: jax.Array, packing_ids_BxL: jax.Array, rows_GxS: jax.Array,
                positions_GxSxT: jax.Array) -> jax.Array:
  """[G*S, E]: the mean over each packed sequence's own tokens (its row's tokens that share
  the packing id of its first position), for mean pooling on packed rows."""
  groups, per = rows_GxS.shape
  rows_per_group = x_BxLxE.shape[0] // groups
  x_GxRxLxE = x_BxLxE.reshape((groups, rows_per_group) + x_BxLxE.shape[1:])
  ids_GxRxL = packing_ids_BxL.reshape((groups, rows_per_group, -1))

  def one(x_RxLxE, ids_RxL, r_S, p_SxT):
    seg_S = ids_RxL[r_S, p_SxT[:, 0]]
    w_SxL = ((ids_RxL[r_S] == seg_S[:, None]) & (seg_S[:, None] > 0)).astype(x_RxLxE.dtype)
    total_SxE = jnp.einsum("sl,sle->se", w_SxL, x_RxLxE[r_S])
    return total_SxE / jnp.maximum(jnp.sum(w_SxL, axis=1, keepdims=True), 1)

  mean_GxSxE = jax.vmap(one)(x_GxRxLxE, ids_GxRxL, rows_GxS, positions_GxSxT)
  return mean_GxSxE.reshape((groups * per, -1))


def unpack(x_BxLxE: jax.Array, rows_GxS: jax.Array, positions_GxSxT: jax.Array) -> jax.Array:
  """Packed rows [G*R, L, E] -> per-sequence views [G*S, T, E]; each group's gather stays
  within its own rows (one group per batch shard: no data crosses devices)."""
  groups, per = rows_GxS.shape
  rows_per_group = x_BxLxE.shape[0] // groups
  x_GxRxLxE = x_BxLxE.reshape((groups, rows_per_group) + x_BxLxE.shape[1:])
  take = jax.vmap(lambda x_RxLxE, r_S, p_SxT: x_RxLxE[r_S[:, None], p_SxT])
  x_GxSxTxE = take(x_GxRxLxE, rows_GxS, positions_GxSxT)
  return x_GxSxTxE.reshape((groups * per,) + x_GxSxTxE.shape[2:])


# --- Parameter-tree helpers shared by the converter, checkpoints and trainer. ---

def stack_layers(encoder_params: dict, num_layers: int, skips_first_norm: bool = False) -> dict:
  """{'layer_0': t0, ...} -> {'layers': stacked t}: the unrolled layout to nn.scan's.

  `skips_first_norm` (pre-LN without layer 0's attention norm): layer 0 gets an identity
  norm in the stack (scale 1, bias 0), which its scanned flag then skips.
  """
  layers = [encoder_params[f"layer_{i}"] for i in range(num_layers)]
  if skips_first_norm and num_layers > 1:
    identity = {k: (jnp.ones_like(v) if k == "scale" else jnp.zeros_like(v))
                for k, v in layers[1]["attention_layer_norm"].items()}
    layers[0] = {**layers[0], "attention_layer_norm": identity}
  return {"layers": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_layers(encoder_params: dict, num_layers: int, skips_first_norm: bool = False) -> dict:
  """{'layers': stacked t} -> {'layer_0': t0, ...}: nn.scan's layout to the unrolled one."""
  stacked = encoder_params["layers"]
  layers = {f"layer_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
            for i in range(num_layers)}
  if skips_first_norm:
    layers["layer_0"] = {k: v for k, v in layers["layer_0"].items()
                         if k != "attention_layer_norm"}
  return layers


def to_layout(params: dict, config: BertConfig) -> dict:
  """Put the encoder of a parameter tree into the layout `config.scan_layers` expects.

  Works on full model trees (with a top-level 'bert') and on bare encoder trees.
  """
  params = dict(params)
  if "bert" in params:
    params["bert"] = to_layout(params["bert"], config)
    return params
  encoder = params["encoder"]
  skips = config.first_layer_skips_attn_norm
  if config.scan_layers and "layers" not in encoder:
    params["encoder"] = stack_layers(encoder, config.num_layers, skips)
  elif not config.scan_layers and "layers" in encoder:
    params["encoder"] = unstack_layers(encoder, config.num_layers, skips)
  return params


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
