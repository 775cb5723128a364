"""Attention kernels agree with each other and with a plain numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import attention


def _qkv(batch=2, length=10, heads=3, dim=8, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randn(batch, length, heads, dim).astype(np.float32) for _ in range(3)]


def _numpy_attention(q, k, v, mask):
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask, logits, -np.inf) if mask is not None else logits
  logits = logits - logits.max(-1, keepdims=True)
  probs = np.exp(logits)
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v)


def test_padding_mask_masks_keys_only():
  mask = attention.make_attention_mask(jnp.array([[1, 1, 0]]), None, 3)
  assert mask.shape == (1, 1, 3, 3)
  np.testing.assert_array_equal(mask[0, 0], [[1, 1, 0]] * 3)


def test_packing_mask_is_block_diagonal_and_pads_see_themselves():
  mask = attention.make_attention_mask(None, jnp.array([[1, 1, 2, 0]]), 4)
  np.testing.assert_array_equal(mask[0, 0], [[1, 1, 0, 0], [1, 1, 0, 0],
                                             [0, 0, 1, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("impl", ["xla", "cudnn"])
def test_implementations_match_numpy(impl):
  q, k, v = _qkv()
  lengths = np.array([10, 6])
  key_mask = (np.arange(10)[None] < lengths[:, None]).astype(np.int32)
  mask = attention.make_attention_mask(jnp.asarray(key_mask), None, 10)
  out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
  np.testing.assert_allclose(out, _numpy_attention(q, k, v, np.asarray(mask)), atol=1e-5)


def test_xla_and_cudnn_agree_with_packing_mask():
  q, k, v = _qkv()
  packing = jnp.array([[1] * 4 + [2] * 4 + [0] * 2, [1] * 10])
  mask = attention.make_attention_mask(None, packing, 10)
  xla = attention.dot_product_attention(q, k, v, mask, implementation="xla")
  cudnn = attention.dot_product_attention(q, k, v, mask, implementation="cudnn")
  np.testing.assert_allclose(xla, cudnn, atol=1e-5)
  assert np.all(np.isfinite(xla))


def test_attention_dropout_is_unbiased_and_deterministic_per_key():
  q, k, v = _qkv(batch=4, length=32)
  clean = attention.dot_product_attention(q, k, v)
  runs = [attention.dot_product_attention(q, k, v, dropout_rng=jax.random.PRNGKey(i),
                                          dropout_rate=0.3, deterministic=False)
          for i in range(40)]
  assert not np.allclose(runs[0], clean)
  # Inverted dropout keeps the expectation: the mean of many runs approaches the clean output.
  assert np.abs(np.mean(runs, 0) - clean).mean() < 0.2 * np.abs(runs[0] - clean).mean()
  again = attention.dot_product_attention(q, k, v, dropout_rng=jax.random.PRNGKey(0),
                                          dropout_rate=0.3, deterministic=False)
  np.testing.assert_array_equal(again, runs[0])


def test_unknown_implementation_is_named():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match="'splash'"):
    attention.dot_product_attention(q, k, v, implementation="splash")
