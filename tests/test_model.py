"""Model structure and numerics that do not need a reference checkpoint.

Parity against transformers with real files lives in test_convert.py; here we
pin what the model itself promises: sizes, axis names, layouts that must agree
(scan vs loop, remat vs none, packed vs separate rows), dtypes, and errors.
"""

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import model as model_lib
from bert_jax.heads import classifier, pretraining, token_classifier

TINY = model_lib.BertConfig(vocab_size=101, hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=48, max_position_embeddings=40)


def _inputs(batch=3, length=16, vocab=101, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, vocab, (batch, length)).astype(np.int32)
  types = rng.randint(0, 2, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), np.int32)
  mask[-1, 10:] = 0
  return ids, types, mask


def _init(module, length=16):
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))
  return nn.unbox(variables["params"]), variables["params"]


@pytest.mark.parametrize("size,expected_millions", [("base", 110.1), ("large", 336.2)])
def test_preset_parameter_counts_match_the_paper(size, expected_millions):
  # BERT-base is "110M" and BERT-large "340M" in the paper; the exact counts of
  # BertModel with the pooler (as Hugging Face counts them) are 109.48M / 335.14M
  # plus the MLM transform + bias and the NSP head.
  config = model_lib.BertConfig.preset(size)
  shapes = jax.eval_shape(lambda: pretraining.BertForPreTraining(config).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  encoder = model_lib.count_params(nn.unbox(shapes["params"])["bert"])
  total = model_lib.count_params(nn.unbox(shapes["params"]))
  hf_bert_model = {"base": 109_482_240, "large": 335_141_888}[size]
  assert encoder == hf_bert_model
  assert abs(total / 1e6 - expected_millions) < 0.1


def test_every_parameter_has_logical_axis_names():
  _, boxed = _init(pretraining.BertForPreTraining(TINY))
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  names = {name for leaf in leaves for name in leaf.names if name}
  assert {"vocab", "embed", "heads", "kv", "mlp"} <= names
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim


def test_scanned_layers_carry_the_layers_axis():
  config = TINY.replace(scan_layers=True)
  _, boxed = _init(pretraining.BertForPreTraining(config))
  kernel = boxed["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"]
  assert kernel.names == ("layers", "embed", "heads", "kv")
  assert kernel.value.shape == (2, 32, 4, 8)


@pytest.mark.parametrize("scan,remat", [(True, "none"), (False, "full"), (True, "dots")])
def test_scan_and_remat_give_the_same_outputs_and_gradients(scan, remat):
  params, _ = _init(pretraining.BertForPreTraining(TINY))
  ids, types, mask = _inputs()
  variant = TINY.replace(scan_layers=scan, remat_policy=remat)
  variant_params = model_lib.to_layout(params, variant)

  def loss(p, config):
    out = pretraining.BertForPreTraining(config).apply({"params": p}, ids, types, mask)
    return jnp.mean(out["mlm_logits"] ** 2) + jnp.mean(out["nsp_logits"] ** 2)

  ref_loss, ref_grads = jax.value_and_grad(loss)(params, TINY)
  var_loss, var_grads = jax.value_and_grad(loss)(variant_params, variant)
  np.testing.assert_allclose(var_loss, ref_loss, rtol=1e-6)
  var_grads = model_lib.to_layout(var_grads, TINY)
  for a, b in zip(jax.tree_util.tree_leaves(ref_grads), jax.tree_util.tree_leaves(var_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_layout_round_trip_is_exact():
  params, _ = _init(pretraining.BertForPreTraining(TINY))
  scanned = model_lib.to_layout(params, TINY.replace(scan_layers=True))
  assert set(scanned["bert"]["encoder"]) == {"layers"}
  back = model_lib.to_layout(scanned, TINY)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_packed_rows_equal_separate_rows():
  params, _ = _init(model_lib.BertModel(TINY))
  ids, _, _ = _inputs(batch=2, length=12)
  first, second = ids[0, :7], ids[1, :5]
  row = np.concatenate([first, second, np.zeros(4, np.int32)])[None]
  packing = np.array([[1] * 7 + [2] * 5 + [0] * 4], np.int32)
  positions = np.array([list(range(7)) + list(range(5)) + [0] * 4], np.int32)
  bert = model_lib.BertModel(TINY)
  packed = bert.apply({"params": params}, row, None, None, positions, packing).sequence_output
  alone_a = bert.apply({"params": params}, first[None]).sequence_output
  alone_b = bert.apply({"params": params}, second[None]).sequence_output
  np.testing.assert_allclose(packed[0, :7], alone_a[0], atol=1e-6)
  np.testing.assert_allclose(packed[0, 7:12], alone_b[0], atol=1e-6)
  assert np.all(np.isfinite(packed))


def test_padding_does_not_change_real_token_outputs():
  params, _ = _init(model_lib.BertModel(TINY))
  ids, types, _ = _inputs(batch=1, length=16)
  bert = model_lib.BertModel(TINY)
  short = bert.apply({"params": params}, ids[:, :9], types[:, :9])
  padded_ids = ids.copy()
  padded_ids[:, 9:] = 0
  mask = np.zeros_like(ids)
  mask[:, :9] = 1
  padded = bert.apply({"params": params}, padded_ids, types, mask)
  np.testing.assert_allclose(padded.sequence_output[:, :9], short.sequence_output, atol=1e-6)
  np.testing.assert_allclose(padded.pooled_output, short.pooled_output, atol=1e-6)


PRE_LN_MEAN = TINY.replace(norm_placement="pre", first_layer_attn_norm=False, pooler="head",
                           pooling="mean", feed_forward="glu", position_embedding="rope")


@pytest.mark.parametrize("config,with_nsp", [
    (TINY, True), (TINY, False), (TINY.replace(scan_layers=True), True),
    (TINY.replace(remat_policy="full"), True), (PRE_LN_MEAN, True), (PRE_LN_MEAN, False)])
def test_masked_positions_gather_matches_full_logits_and_gradients(config, with_nsp):
  """With masked positions the last layer computes only them (and [CLS]); logits, NSP and
  every gradient equal the full forward's, read at the same positions."""
  module = pretraining.BertForPreTraining(config, with_nsp=with_nsp)
  params, _ = _init(module)
  ids, types, mask = _inputs()
  positions = np.array([[0, 3, 5], [1, 1, 9], [15, 2, 4]], np.int32)

  def run(p, positions, full):
    return module.apply({"params": p}, ids, types, mask, None, None, positions,
                        output_hidden_states=full)  # hidden states: every position computed

  def loss(p, full):
    out = run(p, positions, full)
    nsp = jnp.mean(out["nsp_logits"] ** 2) if with_nsp else 0.0
    return jnp.mean(out["mlm_logits"] ** 2) + nsp

  flops = [jax.jit(lambda p, full=full: run(p, positions, full)["mlm_logits"]).lower(params)
           .compile().cost_analysis()["flops"] for full in (False, True)]
  # A scanned stack gathers after its last layer; mean pooling needs every position.
  fallback = config.scan_layers or (with_nsp and config.pooling == "mean")
  assert (flops[0] == flops[1]) if fallback else (flops[0] < 0.9 * flops[1]), flops
  every = np.asarray(run(params, None, False)["mlm_logits"])
  sparse, full = run(params, positions, False), run(params, positions, True)
  assert sparse["mlm_logits"].shape == (3, 3, config.vocab_size)
  assert sparse["sequence_output"].shape == (3, 3, config.hidden_size)
  np.testing.assert_allclose(sparse["mlm_logits"], np.take_along_axis(every, positions[..., None], 1),
                             atol=1e-5)
  for key in ("mlm_logits", "sequence_output") + (("nsp_logits",) if with_nsp else ()):
    np.testing.assert_allclose(sparse[key], full[key], atol=1e-5)
  sparse_grads = jax.grad(loss)(params, False)
  full_grads = jax.grad(loss)(params, True)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(full_grads),
                          jax.tree_util.tree_leaves(sparse_grads)):
    assert np.abs(a).max() > 0 or "pooler" in jax.tree_util.keystr(path), path
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def test_mlm_decoder_is_tied_to_word_embeddings():
  module = pretraining.BertForPreTraining(TINY, with_nsp=False)
  params, _ = _init(module)
  assert "nsp" not in params and "pooler" not in params["bert"]
  ids, types, mask = _inputs()

  def logit_sum(word_table):
    p = flax.core.copy(params, {})
    p = jax.tree_util.tree_map(lambda x: x, p)
    p["bert"]["embeddings"]["word_embeddings"]["embedding"] = word_table
    return module.apply({"params": p}, ids, types, mask)["mlm_logits"].sum()

  table = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  grad = jax.grad(logit_sum)(table)
  # Every vocabulary row gets gradient through the tied decoder, even ids never in the input.
  unused = sorted(set(range(TINY.vocab_size)) - set(ids.ravel().tolist()))
  assert np.all(np.abs(np.asarray(grad)[unused]).sum(-1) > 0)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  config = TINY.replace(dtype="bfloat16")
  module = pretraining.BertForPreTraining(config)
  params, _ = _init(module)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  ids, types, mask = _inputs()
  out = module.apply({"params": params}, ids, types, mask)
  assert out["sequence_output"].dtype == jnp.bfloat16
  assert out["mlm_logits"].dtype == jnp.float32
  ref = pretraining.BertForPreTraining(TINY).apply({"params": params}, ids, types, mask)
  np.testing.assert_allclose(out["mlm_logits"], ref["mlm_logits"], atol=0.1)


def test_vocab_padding_leaves_logits_loss_and_gradients_unchanged():
  ids, types, mask = _inputs()
  positions = np.array([[0, 3, 5], [1, 1, 9], [15, 2, 4]], np.int32)
  labels = np.array([[7, 100, 5], [99, 6, 8], [50, 51, 0]], np.int32)
  padded = pretraining.BertForPreTraining(TINY.replace(vocab_pad_multiple=128))
  plain = pretraining.BertForPreTraining(TINY.replace(vocab_pad_multiple=1))
  params, _ = _init(padded)
  # The stored table stays at the true vocabulary: checkpoints and conversions are unchanged.
  assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (101, 32)
  assert params["mlm"]["output_bias"].shape == (101,)
  assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
      jnp.shape, _init(plain)[0])

  def loss(module, params):
    logits = module.apply({"params": params}, ids, types, mask, None, None,
                          positions)["mlm_logits"]
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_probs, labels[..., None], -1).mean(), logits

  (loss_a, logits_a), grads_a = jax.value_and_grad(loss, argnums=1, has_aux=True)(padded, params)
  (loss_b, logits_b), grads_b = jax.value_and_grad(loss, argnums=1, has_aux=True)(plain, params)
  assert logits_a.shape == logits_b.shape == (3, 3, 101)
  np.testing.assert_allclose(logits_a, logits_b, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  np.testing.assert_array_equal(np.argmax(logits_a, -1), np.argmax(logits_b, -1))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         grads_a, grads_b)


@pytest.mark.parametrize("name,platform,want", [
    ("auto", "cpu", "float32"), ("auto", "gpu", "bfloat16"), ("auto", "tpu", "bfloat16"),
    ("float32", "gpu", "float32"), ("float16", "tpu", "float16"), ("bfloat16", "cpu", "bfloat16"),
])
def test_resolve_dtype(name, platform, want):
  assert model_lib.resolve_dtype(name, platform) == want


def test_platform_defaults_resolve_once_in_setup():
  assert jax.default_backend() == "cpu"
  config = TINY.replace(dtype="auto", attention_dropout_rate=None)
  assert config.dtype == "auto" and config.attention_dropout_rate is None  # machine-independent
  cpu = config.for_platform()
  assert cpu.dtype == "float32" and cpu.attention_dropout_rate == 0.1
  gpu = config.for_platform("gpu")
  assert gpu.dtype == "bfloat16" and gpu.attention_dropout_rate == 0.0
  assert model_lib.default_attention_dropout("gpu") == 0.0
  assert model_lib.default_attention_dropout("tpu") == 0.0
  with pytest.raises(ValueError, match="'bf16'"):
    model_lib.resolve_dtype("bf16", "cpu")


@pytest.mark.parametrize("packed", [False, True])
def test_splash_kernel_in_the_model_matches_xla(packed):
  config = TINY.replace(max_position_embeddings=128, num_layers=1)
  params, _ = _init(model_lib.BertModel(config), length=128)
  ids, types, _ = _inputs(batch=2, length=128)
  if packed:
    packing = np.zeros((2, 128), np.int32)
    packing[0, :70], packing[0, 70:100], packing[1, :128] = 1, 2, 1
    args, real = (None, None, packing), packing > 0
  else:
    mask = np.ones((2, 128), np.int32)
    mask[1, 90:] = 0
    args, real = (mask, None, None), mask > 0
  outs = {impl: model_lib.BertModel(config.replace(attention_impl=impl)).apply(
      {"params": params}, ids, types, *args).sequence_output for impl in ("xla", "splash")}
  np.testing.assert_allclose(np.asarray(outs["splash"])[real], np.asarray(outs["xla"])[real],
                             atol=1e-5)


def test_dropout_is_active_only_when_not_deterministic():
  module = pretraining.BertForPreTraining(TINY)
  params, _ = _init(module)
  ids, types, mask = _inputs()
  apply = lambda det, seed: module.apply({"params": params}, ids, types, mask,
                                         deterministic=det,
                                         rngs={"dropout": jax.random.PRNGKey(seed)})
  np.testing.assert_array_equal(apply(True, 0)["mlm_logits"], apply(True, 1)["mlm_logits"])
  assert not np.allclose(apply(False, 0)["mlm_logits"], apply(False, 1)["mlm_logits"])
  np.testing.assert_array_equal(apply(False, 3)["mlm_logits"], apply(False, 3)["mlm_logits"])


def test_classification_heads_shapes():
  ids, types, mask = _inputs()
  seq_cls = classifier.BertForSequenceClassification(TINY, num_labels=3)
  params, _ = _init(seq_cls)
  assert seq_cls.apply({"params": params}, ids, types, mask).shape == (3, 3)
  regression = classifier.BertForSequenceClassification(TINY, num_labels=1)
  params, _ = _init(regression)
  assert regression.apply({"params": params}, ids, types, mask).shape == (3, 1)
  tagger = token_classifier.BertForTokenClassification(TINY, num_labels=5)
  params, _ = _init(tagger)
  assert tagger.apply({"params": params}, ids, types, mask).shape == (3, 16, 5)


def test_hidden_states_are_embeddings_then_each_layer():
  module = model_lib.BertModel(TINY)
  params, _ = _init(module)
  ids, types, mask = _inputs()
  out = module.apply({"params": params}, ids, types, mask, output_hidden_states=True)
  assert len(out.hidden_states) == TINY.num_layers + 1
  np.testing.assert_array_equal(out.hidden_states[-1], out.sequence_output)
  scanned = TINY.replace(scan_layers=True)
  out_scan = model_lib.BertModel(scanned).apply(
      {"params": model_lib.to_layout(params, scanned)}, ids, types, mask,
      output_hidden_states=True)
  for a, b in zip(out.hidden_states, out_scan.hidden_states):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_sequence_longer_than_position_table_is_an_error():
  module = model_lib.BertModel(TINY)
  params, _ = _init(module)
  with pytest.raises(ValueError, match="max_position_embeddings=40"):
    module.apply({"params": params}, jnp.zeros((1, 41), jnp.int32))


@pytest.mark.parametrize("kwargs,culprit", [
    (dict(hidden_size=30, num_heads=4), "num_heads=4"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(attention_impl="flash"), "attention_impl"),
    (dict(remat_policy="some"), "remat_policy"),
    (dict(dtype="fp8"), "dtype='fp8'"),
    (dict(vocab_pad_multiple=0), "vocab_pad_multiple"),
])
def test_bad_config_values_are_named(kwargs, culprit):
  with pytest.raises(ValueError, match=culprit):
    TINY.replace(**kwargs)


def test_hf_config_round_trip_and_unknown_preset():
  hf = model_lib.BertConfig.preset("mini").to_hf_dict()
  assert hf["num_hidden_layers"] == 4 and hf["hidden_act"] == "gelu"
  assert model_lib.BertConfig.from_hf_dict(hf) == model_lib.BertConfig.preset("mini")
  with pytest.raises(ValueError, match="missing keys"):
    model_lib.BertConfig.from_hf_dict({"vocab_size": 3})
  with pytest.raises(ValueError, match="unknown model size 'huge'"):
    model_lib.BertConfig.preset("huge")
