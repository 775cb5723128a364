"""Optimizer recipe: schedules, the weight-decay mask, AdamW/LAMB updates, clipping."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import optim
from bert_jax.errors import UserError


def _config(**overrides):
  c = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=10, num_train_steps=110, schedule="linear",
      schedule_power=1.0, end_learning_rate_ratio=0.0, optimizer="adamw", adam_b1=0.9,
      adam_b2=0.999, adam_eps=1e-6, weight_decay=0.01, max_grad_norm=1.0))
  c.update(overrides)
  return c


def test_linear_warmup_then_linear_decay():
  s = optim.make_schedule(_config())
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 5e-4, 1e-3, 5e-4, 0],
                             atol=1e-9)


def test_cosine_and_polynomial_decay():
  cos = optim.make_schedule(_config(schedule="cosine"))
  np.testing.assert_allclose([cos(10), cos(60), cos(110)], [1e-3, 5e-4, 0], atol=1e-9)
  poly = optim.make_schedule(_config(schedule="polynomial", schedule_power=2.0))
  np.testing.assert_allclose(poly(60), 1e-3 * 0.25, rtol=1e-5)
  const = optim.make_schedule(_config(schedule="constant", warmup_steps=0))
  assert float(const(100)) == pytest.approx(1e-3)


def test_weight_decay_mask_skips_layer_norm_and_biases():
  params = {"embeddings": {"word_embeddings": {"embedding": 0},
                           "layer_norm": {"scale": 0, "bias": 0}},
            "query": {"kernel": 0, "bias": 0}, "mlm": {"output_bias": 0}}
  mask = optim.weight_decay_mask(params)
  assert mask["embeddings"]["word_embeddings"]["embedding"]
  assert mask["query"]["kernel"]
  assert not mask["embeddings"]["layer_norm"]["scale"]
  assert not mask["embeddings"]["layer_norm"]["bias"]
  assert not mask["query"]["bias"]
  assert not mask["mlm"]["output_bias"]


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_zero_gradient_step_decays_only_masked_params(name):
  tx, _ = optim.make_optimizer(_config(optimizer=name, warmup_steps=0, schedule="constant",
                                       weight_decay=0.1))
  params = {"dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}}
  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.all(np.asarray(updates["dense"]["bias"]) == 0)
  kernel_update = np.asarray(updates["dense"]["kernel"])
  if name == "adamw":  # decoupled decay: -lr * wd * p
    np.testing.assert_allclose(kernel_update, -1e-3 * 0.1 * 2.0, rtol=1e-5)
  else:  # LAMB: the trust ratio rescales the decay step to lr * ||p||
    np.testing.assert_allclose(np.linalg.norm(kernel_update), 1e-3 * 4.0, rtol=1e-4)


def test_adamw_first_step_and_clipping():
  tx, _ = optim.make_optimizer(_config(warmup_steps=0, schedule="constant", weight_decay=0.0,
                                       max_grad_norm=1.0))
  params = {"w": jnp.zeros((4,))}
  grads = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # norm 50 -> clipped to norm 1
  updates, state = tx.update(grads, tx.init(params), params)
  # Adam's first step is lr * sign(g) whatever the scale, for non-zero entries.
  np.testing.assert_allclose(np.asarray(updates["w"]), [-1e-3, -1e-3, 0, 0], atol=1e-7)
  # So clipping shows in the moments Adam kept: mu = (1 - b1) * clipped g, nu = (1 - b2) * g^2.
  clipped = np.array([0.6, 0.8, 0.0, 0.0])
  mu = optax.tree_utils.tree_get(state, "mu")
  nu = optax.tree_utils.tree_get(state, "nu")
  np.testing.assert_allclose(np.asarray(mu["w"]), 0.1 * clipped, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(nu["w"]), 1e-3 * clipped**2, rtol=1e-5)
  # And in the next update: a gradient of norm 0.78 (not clipped) against the clipped first
  # one turns w[0]'s momentum around; against the unclipped 30 it would not.
  grads2 = {"w": jnp.array([-0.6, 0.0, 0.3, 0.4])}
  updates2, _ = tx.update(grads2, state, params)
  mu2 = 0.9 * 0.1 * clipped + 0.1 * np.asarray(grads2["w"])
  nu2 = 0.999 * 1e-3 * clipped**2 + 1e-3 * np.asarray(grads2["w"])**2
  expected = -1e-3 * (mu2 / (1 - 0.9**2)) / (np.sqrt(nu2 / (1 - 0.999**2)) + 1e-6)
  np.testing.assert_allclose(np.asarray(updates2["w"]), expected, rtol=1e-4)


def test_unknown_names_are_user_errors():
  with pytest.raises(UserError, match="config.optimizer"):
    optim.make_optimizer(_config(optimizer="sgdd"))
  with pytest.raises(UserError, match="config.schedule"):
    optim.make_schedule(_config(schedule="step"))


def test_run_steps_from_steps_or_epochs_and_a_bad_batch_size_is_named():
  c = ml_collections.ConfigDict(dict(num_train_steps=-1, num_epochs=2.0, batch_size=32))
  assert optim.run_steps(c, 100) == -(-2 * 100 // 32)  # 2 epochs of 100 at batch 32, rounded up
  c.num_train_steps = 5
  assert optim.run_steps(c, 100) == 5
  c.num_train_steps, c.num_epochs = -1, None
  assert optim.run_steps(c, 100) is None
  c.num_epochs, c.batch_size = 1.0, 0
  with pytest.raises(UserError, match="config.batch_size=0 must be >= 1"):
    optim.run_steps(c, 100)
  from bert_jax.data import stream  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="config.batch_size=-4 must be >= 1"):
    stream.GlobalOrder(10, -4, seed=0)
