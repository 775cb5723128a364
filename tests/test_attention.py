"""Attention kernels agree with each other and with a plain numpy reference."""

import functools

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


def _padding(lengths, length):
  return (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32)


@pytest.mark.parametrize("impl", ["xla", "cudnn", "auto"])
def test_implementations_match_numpy(impl):
  q, k, v = _qkv()
  key_mask = _padding([10, 6], 10)
  mask = attention.make_attention_mask(jnp.asarray(key_mask), None, 10)
  want = _numpy_attention(q, k, v, np.asarray(mask))
  for given in (mask, attention.attention_mask(jnp.asarray(key_mask), None, 10)):
    out = attention.dot_product_attention(q, k, v, given, implementation=impl)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_xla_and_cudnn_agree_with_packing_mask():
  q, k, v = _qkv()
  packing = jnp.array([[1] * 4 + [2] * 4 + [0] * 2, [1] * 10])
  mask = attention.make_attention_mask(None, packing, 10)
  xla = attention.dot_product_attention(q, k, v, mask, implementation="xla")
  cudnn = attention.dot_product_attention(q, k, v, mask, implementation="cudnn")
  np.testing.assert_allclose(xla, cudnn, atol=1e-5)
  assert np.all(np.isfinite(xla))


@pytest.mark.parametrize("requested,platform,dtype,length,head_dim,dropout,want,devices", [
    ("auto", "gpu", jnp.bfloat16, 128, 64, False, "cudnn", 1),
    ("auto", "gpu", jnp.float16, 512, 64, False, "cudnn", 1),
    ("auto", "gpu", jnp.float32, 128, 64, False, "xla", 1),      # cuDNN flash needs bf16/fp16
    ("auto", "gpu", jnp.bfloat16, 128, 64, True, "xla", 1),      # training with attention dropout
    ("auto", "gpu", jnp.bfloat16, 128, 60, False, "xla", 1),     # head_dim not a multiple of 8
    ("auto", "tpu", jnp.bfloat16, 512, 64, False, "splash", 1),
    ("auto", "tpu", jnp.bfloat16, 512, 64, False, "xla", 8),  # no partitioning rule yet
    ("auto", "tpu", jnp.float32, 128, 64, False, "splash", 1),
    ("auto", "tpu", jnp.bfloat16, 100, 64, False, "xla", 1),     # length not a multiple of 128
    ("auto", "tpu", jnp.bfloat16, 128, 64, True, "xla", 1),
    ("auto", "cpu", jnp.bfloat16, 128, 64, False, "xla", 1),
    ("auto", "cpu", jnp.float32, 128, 64, False, "xla", 1),
    ("cudnn", "cpu", jnp.bfloat16, 128, 64, False, "xla", 1),
    ("cudnn", "gpu", jnp.bfloat16, 128, 64, False, "cudnn", 1),
    ("cudnn", "gpu", jnp.bfloat16, 128, 64, True, "xla", 1),
    ("splash", "gpu", jnp.bfloat16, 128, 64, False, "xla", 1),
    ("splash", "cpu", jnp.float32, 128, 64, False, "splash", 1),  # interpret mode
    ("splash", "cpu", jnp.float32, 64, 64, False, "xla", 1),
    ("xla", "gpu", jnp.bfloat16, 128, 64, False, "xla", 1),
    ("auto", "gpu", jnp.bfloat16, 128, 64, False, "cudnn", 8),
])
def test_select_implementation(requested, platform, dtype, length, head_dim, dropout, want,
                               devices):
  got = attention.select_implementation(requested, platform=platform, dtype=dtype, length=length,
                                        head_dim=head_dim, dropout=dropout, num_devices=devices)
  assert got == want


def test_key_value_lengths_equal_the_dense_mask_in_jax_xla_kernel():
  q, k, v = _qkv(batch=3, length=12)
  lengths = np.array([12, 7, 1], np.int32)
  key_mask = _padding(lengths, 12)
  dense = attention.dot_product_attention(
      q, k, v, attention.make_attention_mask(jnp.asarray(key_mask), None, 12),
      implementation="xla")
  by_lengths = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=jnp.asarray(lengths),
                                            implementation="xla")
  np.testing.assert_allclose(by_lengths, dense, atol=1e-6)
  order, got_lengths = attention.real_keys_first(jnp.asarray(key_mask))
  np.testing.assert_array_equal(got_lengths, lengths)
  np.testing.assert_array_equal(order, np.broadcast_to(np.arange(12), (3, 12)))  # identity
  order, got_lengths = attention.real_keys_first(jnp.asarray([[1, 0, 1, 0], [0, 0, 1, 1]]))
  np.testing.assert_array_equal(order, [[0, 2, 1, 3], [2, 3, 0, 1]])  # stable, real first
  inverse = attention.inverse_order(order)
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(order), np.asarray(inverse), 1),
                                np.broadcast_to(np.arange(4), (2, 4)))
  np.testing.assert_array_equal(got_lengths, [2, 2])


@pytest.mark.parametrize("key_mask", [
    [[1] * 12, [1] * 7 + [0] * 5, [1] + [0] * 11],        # right padding: key lengths
    [[1] * 12, [0, 1] * 6, [1] * 3 + [0] * 2 + [1] * 7],  # holes: keys gathered real-first
])
def test_cudnn_padding_path_gives_xla_numbers(monkeypatch, key_mask):
  # Runs _cudnn_attention's mask handling with jax's XLA kernel standing in for cuDNN:
  # outputs and gradients equal the dense-mask kernel's, and the program has no branch (a
  # lax.cond there made the GPU host wait at every layer).
  monkeypatch.setattr(attention, "_CUDNN", "xla")
  q, k, v = _qkv(batch=3, length=12)
  key_mask = jnp.asarray(key_mask)
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), q.dtype)

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent)

  dense = lambda q, k, v: attention.dot_product_attention(
      q, k, v, attention.make_attention_mask(key_mask, None, 12), implementation="xla")
  cudnn_path = lambda q, k, v: attention._cudnn_attention(  # pylint: disable=protected-access
      q, k, v, attention.attention_mask(key_mask, None, 12), None)
  np.testing.assert_allclose(jax.jit(cudnn_path)(q, k, v), dense(q, k, v), atol=1e-6)
  got = jax.jit(jax.grad(loss(cudnn_path), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-5)
  program = str(jax.make_jaxpr(jax.grad(loss(cudnn_path), argnums=(0, 1, 2)))(q, k, v))
  assert "cond[" not in program and "while[" not in program


def test_packed_segments_describe_the_packing_mask():
  ids = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1] * 8, [1, 2, 3, 4, 5, 6, 7, 8],
                   [0] * 8])
  lengths, offsets = attention.packed_segments(ids, max_segments=8)
  assert lengths.shape == (4, 8) and offsets.shape == (4, 9)
  np.testing.assert_array_equal(lengths[0], [3, 2, 1] + [-1] * 5)
  np.testing.assert_array_equal(offsets[0], [0, 3, 5] + [-1] * 6)
  np.testing.assert_array_equal(lengths[1], [8] + [-1] * 7)
  np.testing.assert_array_equal(offsets[2], list(range(8)) + [-1])
  np.testing.assert_array_equal(lengths[3], [-1] * 8)
  # Rebuild "query i sees key j" from the segments: it equals the dense packing mask on
  # every real query (padding queries belong to no segment).
  dense = np.asarray(attention.make_attention_mask(None, ids, 8))[:, 0]
  for b in range(4):
    seg = np.full(8, -1)
    for m in range(8):
      if lengths[b, m] >= 0:
        seg[offsets[b, m]:offsets[b, m] + lengths[b, m]] = m
    rebuilt = (seg[:, None] == seg[None, :]) & (seg[None, :] >= 0)
    real = np.asarray(ids[b]) > 0
    np.testing.assert_array_equal(rebuilt[real], dense[b][real])


def _splash_case(kind):
  length = 128
  if kind == "padding":
    key_mask = _padding([128, 77], length)
    return attention.attention_mask(jnp.asarray(key_mask), None, length), key_mask.astype(bool)
  ids = np.zeros((2, length), np.int32)
  ids[0, :50], ids[0, 50:90], ids[0, 90:120] = 1, 2, 3
  ids[1, :] = 1
  return attention.attention_mask(None, jnp.asarray(ids), length), ids > 0


@pytest.mark.parametrize("kind", ["padding", "packed"])
def test_splash_interpret_mode_matches_xla(kind):
  q, k, v = _qkv(batch=2, length=128, heads=2, dim=16)
  mask, real_BxL = _splash_case(kind)

  def loss(impl, q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
    return jnp.sum(jnp.where(real_BxL[:, :, None, None], out, 0.0) ** 2), out

  (_, want), want_grads = jax.value_and_grad(functools.partial(loss, "xla"), argnums=(0, 1, 2),
                                             has_aux=True)(q, k, v)
  (_, got), got_grads = jax.value_and_grad(functools.partial(loss, "splash"), argnums=(0, 1, 2),
                                           has_aux=True)(q, k, v)
  np.testing.assert_allclose(np.asarray(got)[real_BxL], np.asarray(want)[real_BxL], atol=2e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g)[real_BxL], np.asarray(w)[real_BxL], atol=1e-4)


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
  with pytest.raises(ValueError, match="'flash'"):
    attention.dot_product_attention(q, k, v, implementation="flash")
