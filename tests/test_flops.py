"""The model-FLOPs count behind MFU (metrics.pretraining_flops_per_sequence), against the
matmuls JAX itself differentiates: every dot_general in the jaxpr of the training gradient.

For dense attention the two must agree (up to the pooler, which the count leaves out);
a GLU feed-forward, LoRA's frozen kernels (no weight gradients in the jaxpr) and its
adapters too. Local windows are model FLOPs the XLA kernel does not skip, so they are
checked against the window's key count instead.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from bert_jax import lora as lora_lib
from bert_jax import metrics
from bert_jax import model as model_lib

L = 32


def _dot_flops(jaxpr) -> float:
  """2 x output size x contracted size, summed over every dot_general (sub-jaxprs too)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else _subs(eqn):
      total += _dot_flops(sub) * (eqn.params.get("length", 1) if eqn.primitive.name == "scan"
                                  else 1)
  return total


def _subs(eqn):
  for v in eqn.params.values():
    for x in (v if isinstance(v, (tuple, list)) else (v,)):
      if hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
        yield x.jaxpr
      elif hasattr(x, "eqns"):
        yield x


def _config(**kw):
  return model_lib.BertConfig.preset("tiny", vocab_size=64, max_position_embeddings=64,
                                     hidden_dropout_rate=0.0, attention_dropout_rate=0.0, **kw)


class _Encoder(nn.Module):
  """The encoder under its name in every head (`bert/...`), as LoRA's partition expects."""

  config: model_lib.BertConfig

  @nn.compact
  def __call__(self, ids, deterministic=True):
    return model_lib.BertModel(self.config, name="bert")(ids, deterministic=deterministic)


def _grad_flops(cfg, lora_modules=(), rank=0):
  model = _Encoder(cfg)
  ids = jnp.ones((1, L), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), ids, deterministic=True)["params"])
  if lora_modules:
    settings = lora_lib.Settings(rank=rank, alpha=2.0 * rank, dropout=0.0, targets="")
    wrapped = lora_lib.wrap(model, settings, lora_modules, train=True)
    params = nn.unbox(wrapped.init(jax.random.key(0), ids, deterministic=True)["params"])
    trainable, frozen = lora_lib.LORA.split(params)
    loss = lambda t: jnp.sum(wrapped.apply({"params": lora_lib.LORA.combine(t, frozen)}, ids,
                                           deterministic=True).sequence_output)
    return _dot_flops(jax.make_jaxpr(jax.grad(loss))(trainable).jaxpr), params
  loss = lambda p: jnp.sum(model.apply({"params": p}, ids, deterministic=True).sequence_output)
  return _dot_flops(jax.make_jaxpr(jax.grad(loss))(params).jaxpr), params


def _pooler(cfg):  # the pooler's forward: in the jaxpr, not in the count (nothing reads it here)
  return 2 * cfg.hidden_size * cfg.hidden_size


@pytest.mark.parametrize("kw", [{}, dict(feed_forward="glu", hidden_act="gelu")])
def test_count_equals_the_gradients_matmuls(kw):
  cfg = _config(**kw)
  ours = metrics.pretraining_flops_per_sequence(cfg, L, 0, with_nsp=False)
  jaxpr, _ = _grad_flops(cfg)
  assert ours == pytest.approx(jaxpr - _pooler(cfg), rel=1e-9)


def test_lora_counts_no_weight_gradients_for_frozen_kernels():
  cfg = _config()
  modules = tuple(f"bert/encoder/layer_{i}/{m}" for i in range(cfg.num_layers)
                  for m in ("attention/query", "attention/value", "output"))
  ours = metrics.pretraining_flops_per_sequence(cfg, L, 0, with_nsp=False, lora_rank=4,
                                                lora_modules=modules)
  jaxpr, params = _grad_flops(cfg, modules, rank=4)
  assert any(lora_lib.is_adapter(k) for k in lora_lib._flat(params))  # pylint: disable=protected-access
  # What JAX prunes beyond the frozen kernels' weight gradients: below layer 0 nothing
  # trains, so its input gradients (q/k/v projections, the query/value adapters' A) and its
  # key gradient (k is frozen there) are not computed; the count keeps them.
  e = cfg.hidden_size
  pruned = 3 * 2 * L * e * e + 2 * L * L * e + 2 * (2 * L * 4 * e)
  assert ours - pruned == pytest.approx(jaxpr - _pooler(cfg), rel=1e-9)
  full = metrics.pretraining_flops_per_sequence(cfg, L, 0, with_nsp=False)
  assert ours < full


def test_local_windows_count_their_keys():
  wide = _config(local_window=4 * L, global_every=2)  # a window wider than the row: global
  base = metrics.pretraining_flops_per_sequence(_config(), L, 0, with_nsp=False)
  assert metrics.pretraining_flops_per_sequence(wide, L, 0, with_nsp=False) == base
  cfg = _config(local_window=8, global_every=2)  # layer 1 of 2 is local: 9 keys of 32
  local = metrics.pretraining_flops_per_sequence(cfg, L, 0, with_nsp=False)
  assert base - local == 3 * 2 * 2 * L * (L - 9) * cfg.hidden_size


@pytest.mark.parametrize("with_nsp", [True, False])
def test_pretraining_count_equals_the_gradients_matmuls(with_nsp):
  """MLM (+ NSP): the decoder at the masked positions, and the last layer's attention output
  and feed-forward only there (and at [CLS]): the count is the matmuls JAX runs."""
  from bert_jax.heads import pretraining  # pylint: disable=g-import-not-at-top
  cfg = _config(vocab_pad_multiple=1)
  model = pretraining.BertForPreTraining(cfg, with_nsp=with_nsp)
  ids = jnp.ones((1, L), jnp.int32)
  positions = jnp.asarray([[1, 4, 9, 16, 30]], jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), ids, masked_positions_BxP=positions)["params"])

  def loss(p):
    out = model.apply({"params": p}, ids, masked_positions_BxP=positions)
    return jnp.sum(out["mlm_logits"]) + (jnp.sum(out["nsp_logits"]) if with_nsp else 0.0)

  jaxpr = _dot_flops(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  ours = metrics.pretraining_flops_per_sequence(cfg, L, positions.shape[1], with_nsp=with_nsp)
  assert ours == pytest.approx(jaxpr, rel=1e-9)
  every = metrics.pretraining_flops_per_sequence(cfg, L, 0, with_nsp=False)
  assert ours < every  # 5 of 32 positions in the last layer outweigh the small decoder
