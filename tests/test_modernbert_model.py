"""The ModernBERT switches of the one model: sliding-window attention (xla band, splash's
LocalMask, the kernel fallback), RoPE, scan_layers with the switches, and the one-line
refusals. Parity with transformers' ModernBERT is in tests/test_modernbert.py; the BERT
defaults stay pinned by tests/test_model.py and tests/test_convert.py."""

import functools

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import attention
from bert_jax import model as model_lib
from bert_jax.errors import UserError

MODERN = dict(vocab_size=50, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=48,
              type_vocab_size=0, position_embedding="rope", feed_forward="glu",
              norm_placement="pre", use_bias=False, norm_bias=False, layer_norm_eps=1e-5,
              pooler="head", hidden_dropout_rate=0.0, attention_dropout_rate=0.0)


def _qkv(batch=2, length=40, heads=2, dim=8, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  return [jax.random.normal(k, (batch, length, heads, dim)) for k in keys]


def _reference(q, k, v, allowed_BxLxL):
  """Softmax attention over the allowed keys, in float64 numpy."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(allowed_BxLxL[:, None], logits, -1e30)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v)


def test_xla_window_sees_half_the_window_either_side():
  q, k, v = _qkv()
  key_mask = np.ones((2, 40), bool)
  key_mask[1, 30:] = False
  pos = np.arange(40)
  allowed = (np.abs(pos[:, None] - pos[None, :]) <= 5)[None] & key_mask[:, None, :]
  got = attention.dot_product_attention(
      q, k, v, attention.attention_mask(jnp.asarray(key_mask), None, 40),
      implementation="xla", local_window=10)
  want = _reference(q, k, v, allowed)
  np.testing.assert_allclose(np.asarray(got)[key_mask], want[key_mask], atol=1e-5)
  full = attention.dot_product_attention(q, k, v, implementation="xla")
  assert not np.allclose(np.asarray(full), np.asarray(got), atol=1e-3)


@pytest.mark.parametrize("requested,platform,dtype,want", [
    ("cudnn", "gpu", jnp.bfloat16, "xla"),  # no two-sided windows in jax's cuDNN path
    ("auto", "gpu", jnp.bfloat16, "xla"),
    ("splash", "tpu", jnp.bfloat16, "splash"),
    ("auto", "tpu", jnp.bfloat16, "splash"),
    ("xla", "cpu", jnp.float32, "xla"),
])
def test_window_kernel_selection_falls_back(requested, platform, dtype, want):
  got = attention.select_implementation(requested, platform=platform, dtype=dtype, length=256,
                                        head_dim=64, dropout=False, local_window=128)
  assert got == want
  # Global layers of the same stack keep the fused kernel.
  if platform == "gpu":
    assert attention.select_implementation(requested, platform=platform, dtype=dtype,
                                           length=256, head_dim=64, dropout=False) == "cudnn"


def test_window_fallback_warns_once(monkeypatch):
  seen = []
  monkeypatch.setattr(attention.logging, "warning", seen.append)
  attention._warn_once.cache_clear()
  for _ in range(3):
    attention.select_implementation("cudnn", platform="gpu", dtype=jnp.bfloat16, length=256,
                                    head_dim=64, dropout=False, local_window=128)
  assert len(seen) == 1 and "sliding-window" in seen[0] and "cuDNN" in seen[0]


def test_splash_interpret_mode_window_matches_xla():
  q, k, v = _qkv(length=128, dim=16)
  key_mask = np.ones((2, 128), bool)
  key_mask[1, 90:] = False
  mask = attention.attention_mask(jnp.asarray(key_mask), None, 128)
  run = functools.partial(attention.dot_product_attention, q, k, v, mask, local_window=32)
  want, got = run(implementation="xla"), run(implementation="splash")
  np.testing.assert_allclose(np.asarray(got)[key_mask], np.asarray(want)[key_mask], atol=2e-5)


def test_rope_rotates_pairs_by_position_times_frequency():
  cos, sin = model_lib.rope_tables(jnp.arange(5)[None], head_dim=4, theta=100.0)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 5, 1, 4).astype(np.float32))
  got = np.asarray(model_lib.apply_rope(x, cos, sin))[0, :, 0]
  x = np.asarray(x)[0, :, 0]
  for t in range(5):
    for i, freq in enumerate((1.0, 100.0 ** -0.5)):  # pairs (i, i + D/2)
      a = t * freq
      np.testing.assert_allclose(got[t, i], x[t, i] * np.cos(a) - x[t, i + 2] * np.sin(a),
                                 atol=1e-6)
      np.testing.assert_allclose(got[t, i + 2], x[t, i + 2] * np.cos(a) + x[t, i] * np.sin(a),
                                 atol=1e-6)


def _run(config, params=None, length=12):  # length 12 > the windows of 4
  ids = jnp.asarray(np.random.RandomState(1).randint(1, 50, size=(2, length)))
  mask = jnp.ones_like(ids).at[1, 8:].set(0)
  module = model_lib.BertModel(config)
  params = params or nn.unbox(module.init(jax.random.PRNGKey(0), ids, None, mask)["params"])
  return params, module.apply({"params": params}, ids, None, mask).sequence_output


@pytest.mark.parametrize("pattern", [
    {},
    dict(local_window=4, global_every=3, first_layer_attn_norm=False),  # ModernBERT's
    dict(local_window=4, global_every=2),
], ids=["alike", "modernbert", "every2"])
def test_scan_layers_equals_the_loop_with_the_switches(pattern):
  config = model_lib.BertConfig(**MODERN, **pattern)
  params, want = _run(config)
  scanned = config.replace(scan_layers=True)
  stacked = model_lib.to_layout(params, scanned)
  _, got = _run(scanned, stacked)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  # The stacked layout converts back to the loop's exactly (layer 0's identity norm dropped).
  back = model_lib.to_layout(stacked, config)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A scanned init has the same tree as the stacked loop params.
  init, _ = _run(scanned)
  assert jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(stacked)


def test_switch_params_and_refusals():
  params, _ = _run(model_lib.BertConfig(**MODERN, first_layer_attn_norm=False))
  layer0, layer1 = params["encoder"]["layer_0"], params["encoder"]["layer_1"]
  assert "attention_layer_norm" not in layer0 and "attention_layer_norm" in layer1
  assert "gate" in layer0 and "bias" not in layer0["intermediate"]
  assert "final_norm" in params and "position_embeddings" not in params["embeddings"]
  assert "token_type_embeddings" not in params["embeddings"]
  with pytest.raises(UserError, match="feed_forward='swish'"):
    model_lib.BertConfig(feed_forward="swish")


def test_default_config_keeps_the_bert_parameter_tree():
  params, _ = _run(model_lib.BertConfig(vocab_size=50, hidden_size=32, num_layers=1,
                                        num_heads=2, intermediate_size=48))
  flat = sorted("/".join(k) for k in flax.traverse_util.flatten_dict(params))
  assert flat == sorted([
      "embeddings/layer_norm/bias", "embeddings/layer_norm/scale",
      "embeddings/position_embeddings/embedding", "embeddings/token_type_embeddings/embedding",
      "embeddings/word_embeddings/embedding", "pooler/bias", "pooler/kernel"] + [
          f"encoder/layer_0/{name}" for name in (
              "attention/key/bias", "attention/key/kernel", "attention/output/bias",
              "attention/output/kernel", "attention/query/bias", "attention/query/kernel",
              "attention/value/bias", "attention/value/kernel", "attention_layer_norm/bias",
              "attention_layer_norm/scale", "intermediate/bias", "intermediate/kernel",
              "output/bias", "output/kernel", "output_layer_norm/bias",
              "output_layer_norm/scale")])


def test_modernbert_base_config_has_transformers_parameter_count():
  import sys, os  # pylint: disable=g-import-not-at-top,multiple-imports
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import modernbert_base  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import initialize  # pylint: disable=g-import-not-at-top
  c = modernbert_base.get_config()
  c.dtype = "float32"
  config = initialize.model_config(c, vocab_size=50368)
  ids = jnp.zeros((1, 16), jnp.int32)
  shapes = jax.eval_shape(lambda: model_lib.BertModel(config, add_pooling_layer=False).init(
      jax.random.PRNGKey(0), ids))
  with torch.device("meta"):  # answerdotai/ModernBERT-base's config is the default one
    theirs = transformers.ModernBertModel(transformers.ModernBertConfig())
  assert model_lib.count_params(shapes) == sum(p.numel() for p in theirs.parameters())
