"""Dropout from 16-bit draws (bert_jax/dropout.py): the rate, the scale and independence.

The references are the binomial law of inverted dropout at the quantised rate
(6554/65536 for 0.1) and `flax.linen.Dropout`'s interface and identities.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import dropout as dropout_lib

P = 6554 / 65536  # 0.1 quantised to 1/65536


def _draw(shape, rate=0.1, seed=0):
  x = jnp.ones(shape, jnp.float32)
  return np.asarray(dropout_lib.dropout(x, rate, jax.random.key(seed)))


def test_drop_rate_and_scale_are_inverted_dropout_at_the_quantised_rate():
  out = _draw((1000, 1000))
  dropped = out == 0
  n = out.size
  sigma = np.sqrt(P * (1 - P) / n)
  assert abs(dropped.mean() - P) < 5 * sigma, dropped.mean()
  # Kept values are scaled by the exact inverse of the keep probability: E[out] = x.
  np.testing.assert_array_equal(np.unique(out[~dropped]), np.float32(65536 / (65536 - 6554)))
  assert abs(out.mean() - 1.0) < 5 * sigma / (1 - P)


def test_the_two_halves_of_a_draw_are_independent():
  # Elements 2k and 2k+1 share one 32-bit draw (its low and high halves).
  dropped = _draw((2000, 512)) == 0
  even, odd = dropped[:, 0::2], dropped[:, 1::2]
  n = even.size
  both = (even & odd).mean()
  assert abs(both - P * P) < 5 * np.sqrt(P * P * (1 - P * P) / n), both
  # And neighbouring rows (different draws) too.
  rows = (dropped[0::2] & dropped[1::2]).mean()
  assert abs(rows - P * P) < 5 * np.sqrt(P * P * (1 - P * P) / n), rows


def test_odd_shapes_keys_and_edge_rates():
  out = _draw((3, 5, 7))
  assert out.shape == (3, 5, 7)
  np.testing.assert_array_equal(out, _draw((3, 5, 7)))  # a key gives one mask
  assert not np.array_equal(_draw((64, 65), seed=1), _draw((64, 65), seed=2))
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(dropout_lib.dropout(x, 0.0, jax.random.key(0)), x)
  np.testing.assert_array_equal(dropout_lib.dropout(x, 1.0, jax.random.key(0)), 0 * x)
  half = _draw((400, 400), rate=0.5) == 0
  assert abs(half.mean() - 0.5) < 5 * np.sqrt(0.25 / half.size)
  bf16 = dropout_lib.dropout(jnp.ones((8, 8), jnp.bfloat16), 0.1, jax.random.key(0))
  assert bf16.dtype == jnp.bfloat16


@pytest.mark.parametrize("deterministic", [True, False])
def test_module_follows_flax_dropout(deterministic):
  x = jnp.ones((16, 32))
  rngs = {"dropout": jax.random.key(3)}
  ours = dropout_lib.Dropout(0.1).apply({}, x, deterministic, rngs=rngs)
  theirs = nn.Dropout(0.1).apply({}, x, deterministic, rngs=rngs)
  if deterministic:  # identity, as flax's
    np.testing.assert_array_equal(ours, x)
    np.testing.assert_array_equal(theirs, x)
  else:  # the same support {0, 1/(1-p)} as flax's (a different draw)
    for out, scale in ((ours, 65536 / 58982), (theirs, 1 / 0.9)):
      values = np.unique(np.asarray(out))
      np.testing.assert_allclose(values, [0.0, scale], rtol=1e-6)
