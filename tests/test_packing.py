"""Packed fine-tuning batches equal padded ones: loss, gradients and eval outputs, every head.

The reference is the padded batch of the same examples (the path that equals
transformers, pinned by the conversion tests); dropout is off so both are
deterministic. Packing is also checked as data: every example's tokens are in its
row at its place, positions restart at 0, and groups never share rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import heads as heads_lib
from bert_jax import platform
from bert_jax.data import finetune_pipeline as fp
from bert_jax.data import packing
from bert_jax.data.contract import Spec
from bert_jax.errors import UserError
from bert_jax.heads.base import combine_loss
from bert_jax.model import BertConfig

L = 32  # max_seq_length of the examples
VOCAB = 64


def _config(modern=False):
  extra = {}
  if modern:  # ModernBERT's switches: RoPE, GeGLU, pre-LN, local windows, mean-pooled head
    extra = dict(position_embedding="rope", rope_local_theta=1000.0, feed_forward="glu", hidden_act="gelu",
                 norm_placement="pre", first_layer_attn_norm=False, use_bias=False,
                 norm_bias=False, local_window=8, global_every=2, pooler="head",
                 pooling="mean", type_vocab_size=0)
  return BertConfig.preset("tiny", vocab_size=VOCAB, max_position_embeddings=64,
                           hidden_dropout_rate=0.0, attention_dropout_rate=0.0, **extra)


def _sequences(rng, shape, min_len=3, max_len=L):
  lengths = rng.integers(min_len, max_len + 1, size=shape)
  ids = rng.integers(5, VOCAB, size=shape + (L,)).astype(np.int32)
  types = np.zeros(shape + (L,), np.int32)
  pos = np.arange(L)
  split = np.maximum(lengths // 2, 1)
  types[pos >= split[..., None]] = 1
  real = pos < lengths[..., None]
  ids[~real], types[~real] = 0, 0
  ids[..., 0] = 2  # [CLS]
  return {"input_ids": ids, "token_type_ids": types}, lengths.astype(np.int32), real


def _data(head_name, n, rng):
  if head_name == "multiple_choice":
    seq, lengths, _ = _sequences(rng, (n, 3), max_len=12)
    return fp.Encoded(seq, {"labels": rng.integers(0, 3, n).astype(np.int32)}, lengths)
  seq, lengths, real = _sequences(rng, (n,), max_len=20)
  rows = {}
  if head_name == "classifier":
    rows["labels"] = rng.integers(0, 3, n).astype(np.int32)
  elif head_name == "regression":
    rows["labels"] = rng.normal(size=n).astype(np.float32)
  elif head_name == "token_classifier":
    labels = rng.integers(0, 4, (n, L)).astype(np.int32)
    labels[~real | (rng.random((n, L)) < 0.3)] = -100
    labels[:, 0] = -100
    seq["label_ids"] = labels
    rows["feature_index"] = np.arange(n, dtype=np.int32)
  elif head_name == "qa":
    rows["start_positions"] = (rng.integers(0, 1000, n) % lengths).astype(np.int32)
    rows["end_positions"] = np.minimum(rows["start_positions"] + rng.integers(0, 3, n),
                                       lengths - 1).astype(np.int32)
    rows["feature_index"] = np.arange(n, dtype=np.int32)
  return fp.Encoded(seq, rows, lengths)


_SPECS = {
    "classifier": dict(head="classifier", kind="classification", labels=("a", "b", "c")),
    "regression": dict(head="classifier", kind="regression"),
    "token_classifier": dict(head="token_classifier", kind="tagging",
                             labels=("O", "B-X", "I-X", "B-Y")),
    "qa": dict(head="qa", kind="qa"),
    "multiple_choice": dict(head="multiple_choice", kind="multiple_choice",
                            options={"num_choices": 3}),
}


def _head(name):
  s = _SPECS[name]
  return heads_lib.for_spec(Spec(task="t", head=s["head"], kind=s["kind"], max_seq_length=L,
                                 vocab_size=VOCAB, labels=s.get("labels"),
                                 options=s.get("options", {})))


def _loss_and_grads(head, model, params, batch):
  batch = jax.tree_util.tree_map(jnp.asarray, batch)

  def loss_fn(p):
    return combine_loss(head.sums(model, p, batch, None), head.loss_terms,
                        head.denominators(batch))

  return jax.value_and_grad(loss_fn)(params)


def _init(head, rng_seed=0, modern=False):
  import ml_collections  # pylint: disable=g-import-not-at-top
  model = head.build_model(_config(modern))
  inputs = head.init_inputs(ml_collections.ConfigDict({"max_seq_length": L}))
  params = head.init(model, jax.random.PRNGKey(rng_seed), inputs)["params"]
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return model, nn.unbox(params)


@pytest.mark.parametrize("name,modern", [(n, False) for n in sorted(_SPECS)]
                         + [("classifier", True), ("token_classifier", True)])
@pytest.mark.parametrize("groups", [1, 2])
def test_packed_loss_and_gradients_equal_padded(name, modern, groups):
  rng = np.random.default_rng(7)
  data = _data(name, 8, rng)
  if modern:  # no token types
    data.seq_fields["token_type_ids"][:] = 0
  head = _head(name)
  model, params = _init(head, modern=modern)
  rows = np.arange(8)
  weights = np.ones(8, np.float32)
  length = fp.bucket_length(int(data.lengths.max()), L)
  padded = fp._batch(data, rows, length, weights)
  packed = fp._packed_batch(data, rows, weights, length,
                            fp.Packing(groups=groups, row_length=32), 0, 1)
  assert packed["input_ids"].shape[0] < len(rows) * (3 if name == "multiple_choice" else 1)
  loss_pad, grads_pad = _loss_and_grads(head, model, params, padded)
  loss_pack, grads_pack = _loss_and_grads(head, model, params, packed)
  np.testing.assert_allclose(loss_pack, loss_pad, rtol=1e-5, atol=1e-6)
  flat_pad = jax.tree_util.tree_leaves_with_path(grads_pad)
  flat_pack = dict(jax.tree_util.tree_leaves_with_path(grads_pack))
  for path, g in flat_pad:
    np.testing.assert_allclose(flat_pack[path], g, rtol=1e-5, atol=2e-6,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("name", ["token_classifier", "qa", "regression"])
def test_packed_eval_outputs_equal_padded(name):
  """An eval batch with padding examples (weight 0): sums and per-row predictions agree."""
  rng = np.random.default_rng(3)
  data = _data(name, 6, rng)
  head = _head(name)
  model, params = _init(head, 1)
  rows = np.r_[np.arange(6), 0, 0]
  weights = np.r_[np.ones(6), 0, 0].astype(np.float32)
  length = fp.bucket_length(int(data.lengths.max()), L)
  padded = jax.tree_util.tree_map(jnp.asarray, fp._batch(data, rows, length, weights))
  packed = jax.tree_util.tree_map(jnp.asarray, fp._packed_batch(
      data, rows, weights, length, fp.Packing(groups=2, row_length=48), 0, 1))
  sums_pad, sums_pack = (head.sums(model, params, b, None) for b in (padded, packed))
  for k in sums_pad:
    np.testing.assert_allclose(sums_pack[k], sums_pad[k], rtol=1e-5, atol=1e-5, err_msg=k)
  pred_pad, pred_pack = (head.predictions(model, params, b) for b in (padded, packed))
  real = weights > 0
  for k, v in pred_pad.items():
    if k in ("pred_ids", "start_logits", "end_logits"):
      mask = np.arange(L) < data.lengths[rows][:, None]
      np.testing.assert_allclose(np.where(mask, pred_pack[k], 0)[real],
                                 np.where(mask, v, 0)[real], rtol=1e-5, atol=1e-5, err_msg=k)
    else:
      np.testing.assert_allclose(np.asarray(pred_pack[k])[real], np.asarray(v)[real],
                                 rtol=1e-5, atol=1e-5, err_msg=k)


def test_pack_places_every_sequence_in_its_group():
  rng = np.random.default_rng(0)
  seq, lengths, _ = _sequences(rng, (12,), max_len=20)
  lengths[5] = 0  # a padding example: nothing packed
  out = packing.pack(seq, lengths, groups=3, row_length=32, unpack_length=24)
  rows = out["input_ids"].shape[0] // 3
  for g in range(3):
    for s in range(4):
      i = g * 4 + s
      n = int(lengths[i])
      if not n:
        continue
      row = g * rows + out["unpack_rows"][g, s]
      start = out["unpack_positions"][g, s, 0]
      np.testing.assert_array_equal(out["input_ids"][row, start:start + n],
                                    seq["input_ids"][i, :n])
      np.testing.assert_array_equal(out["token_type_ids"][row, start:start + n],
                                    seq["token_type_ids"][i, :n])
      np.testing.assert_array_equal(out["position_ids"][row, start:start + n], np.arange(n))
      ids = out["packing_ids"][row, start:start + n]
      assert len(set(ids.tolist())) == 1 and ids[0] > 0
  assert int((out["packing_ids"] > 0).sum()) == int(lengths.sum())
  # A host keeping groups [1, 3) gets exactly those rows and entries.
  part = packing.pack(seq, lengths, groups=3, row_length=32, unpack_length=24, keep=(1, 3))
  np.testing.assert_array_equal(part["input_ids"], out["input_ids"][rows:])
  np.testing.assert_array_equal(part["unpack_positions"], out["unpack_positions"][1:])


def test_train_stream_packs_the_same_examples_on_any_number_of_hosts():
  rng = np.random.default_rng(1)
  data = _data("classifier", 40, rng)
  p = fp.Packing(groups=4, row_length=32)
  one = fp.TrainStream(data, global_batch_size=8, seed=3, max_seq_length=L, packing=p)
  two = [fp.TrainStream(data, global_batch_size=8, seed=3, max_seq_length=L, packing=p,
                        process_index=h, process_count=2) for h in range(2)]
  for step in range(3):
    whole = one.batch_at(step)
    halves = [s.batch_at(step) for s in two]
    for k, v in whole.items():
      np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), v, err_msg=k)
    # Fewer tokens computed than the padded batch.
    assert whole["input_ids"].size <= 8 * fp.bucket_length(int(data.lengths.max()), L)


def _plan_cost(chosen, values, weights, shape_cost):
  rows = [min(c for c in chosen if c >= v) for v in values]
  return len(chosen) * shape_cost + sum(w * (r - v) for w, r, v in zip(weights, rows, values))


def test_row_count_plan_is_the_cheapest_split():
  import itertools  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  for _ in range(30):
    needed = rng.choice([3, 4, 5, 6, 8, 10], size=int(rng.integers(1, 60)))
    steps = int(rng.choice([10, 100, 5000]))
    chosen = packing.plan_packing({1: needed}, steps)[1]
    values, counts = np.unique(needed, return_counts=True)
    weights = counts * max(steps, len(needed)) / len(needed)
    shape_cost = packing.COMPILE_STEPS * np.average(values, weights=weights)
    # Brute force over every subset holding the largest count.
    best = min(_plan_cost(set(s) | {values[-1]}, values, weights, shape_cost)
               for k in range(len(values)) for s in itertools.combinations(values[:-1], k))
    assert chosen[-1] == values[-1] and set(chosen) <= set(values)
    np.testing.assert_allclose(_plan_cost(chosen, values, weights, shape_cost), best)
  # A short run compiles one shape; a long one each common count.
  needed = [4] * 15 + [5] * 33 + [6] * 2
  assert packing.plan_packing({1: needed}, 50) == (1, (6,))
  assert packing.plan_packing({1: needed}, 6000) == (1, (4, 5, 6))


@pytest.mark.parametrize("num_steps", [None, 100_000])
def test_train_stream_compiles_the_planned_row_counts(num_steps):
  rng = np.random.default_rng(4)
  data = _data("classifier", 200, rng)
  p = fp.Packing(groups=2, row_length=32)
  stream = fp.TrainStream(data, global_batch_size=16, seed=5, max_seq_length=L, packing=p,
                          num_steps=num_steps)
  rows = [stream.batch_at(s)["input_ids"].shape[0] // 2 for s in range(40)]
  needed = [packing.rows_needed(fp._packed_lengths(data, stream.order.host_rows(s)[0],  # pylint: disable=protected-access
                                                   np.ones(16)), groups=2, row_length=32)
            for s in range(40)]
  if num_steps is None:  # one epoch, 13 steps: one compiled shape, the most any batch needs
    assert set(rows[:13]) == {max(needed[:13])}, (rows, needed)
    assert all(r >= n for r, n in zip(rows, needed))
  else:  # a long run: every batch at the rows it needs
    assert rows == needed and len(set(rows)) > 1
  # A resumed stream (a new one, as after a restart, on 2 hosts) plans and packs alike.
  again = [fp.TrainStream(data, global_batch_size=16, seed=5, max_seq_length=L, packing=p,
                          num_steps=num_steps, process_index=h, process_count=2)
           for h in range(2)]
  for s in (0, 7, 39):
    whole = stream.batch_at(s)
    for k, v in whole.items():
      np.testing.assert_array_equal(
          np.concatenate([h.batch_at(s)[k] for h in again]), v, err_msg=k)


def _train_step(head, model, grad_accum_steps):
  import optax  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  # SGD at rate 1: the update is minus the gradient, so equal updates mean equal gradients.
  schedule = optax.constant_schedule(1.0)
  tx = optax.sgd(schedule)
  return tx, jax.jit(train.make_train_step(head, model, tx, schedule,
                                           grad_accum_steps=grad_accum_steps))


@pytest.mark.parametrize("name", sorted(_SPECS))
@pytest.mark.parametrize("groups", [1, 2])
def test_packed_micro_batches_update_like_the_padded_batch(name, groups):
  """Gradient accumulation over packed rows: 2 micro-batches, each packed in rows of its
  own, give the loss and update of the whole padded batch in one piece."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(11)
  data = _data(name, 8, rng)
  head = _head(name)
  model, params = _init(head, 2)
  rows, weights = np.arange(8), np.ones(8, np.float32)
  length = fp.bucket_length(int(data.lengths.max()), L)
  padded = fp._batch(data, rows, length, weights)
  packed = fp._packed_batch(data, rows, weights, length,
                            fp.Packing(groups=groups, row_length=32), 0, 1, micro_batches=2)
  tx, whole_step = _train_step(head, model, 1)
  _, accumulating_step = _train_step(head, model, 2)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params))
  key = jax.random.PRNGKey(0)
  ref_state, ref = whole_step(state, padded, key)
  traced = str(jax.make_jaxpr(accumulating_step)(state, packed, key))
  assert "scan" in traced and "length=2" in traced
  new_state, out = accumulating_step(state, packed, key)
  np.testing.assert_allclose(out["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
  flat_ref = jax.tree_util.tree_leaves_with_path(ref_state.params)
  flat_new = dict(jax.tree_util.tree_leaves_with_path(new_state.params))
  for path, p in flat_ref:
    np.testing.assert_allclose(flat_new[path], p, rtol=1e-5, atol=2e-6,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("name,groups", [("classifier", 2), ("multiple_choice", 1)])
def test_packed_micro_batches_hold_only_their_own_examples(name, groups):
  """The train step's split of a batch packed for 3 micro-batches: micro-batch i's rows hold
  exactly the examples it takes (every 3rd of each group, from the i-th), each whole."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  n, k = 12, 3
  data = _data(name, n, rng)
  length = fp.bucket_length(int(data.lengths.max()), L)
  packed = fp._packed_batch(data, np.arange(n), np.ones(n, np.float32), length,
                            fp.Packing(groups=groups, row_length=32), 0, 1, micro_batches=k)
  micro = jax.tree_util.tree_map(np.asarray, train._micro_batches(  # pylint: disable=protected-access
      jax.tree_util.tree_map(jnp.asarray, packed), k, None))
  choices = data.lengths.shape[1] if data.lengths.ndim > 1 else 1
  per = n // groups
  for i in range(k):
    rows = micro["input_ids"][i].shape[0] // groups
    for g in range(groups):
      for j in range(per // k):
        example = g * per + j * k + i  # the i-th micro-batch's j-th example of group g
        # Per-example fields are split the same way.
        assert micro["example_weights"][i][g * per // k + j] == 1
        for c in range(choices):
          s = j * choices + c
          row = g * rows + micro["unpack_rows"][i][g, s]
          start = micro["unpack_positions"][i][g, s, 0]
          size = int(data.lengths[example] if choices == 1 else data.lengths[example, c])
          want = data.seq_fields["input_ids"][example]
          want = want if choices == 1 else want[c]
          np.testing.assert_array_equal(micro["input_ids"][i][row, start:start + size],
                                        want[:size])
          np.testing.assert_array_equal(micro["position_ids"][i][row, start:start + size],
                                        np.arange(size))
    # Nothing else in micro-batch i's rows: its real tokens are its examples' tokens.
    mine = [g * per + j * k + i for g in range(groups) for j in range(per // k)]
    assert int((micro["packing_ids"][i] > 0).sum()) == int(data.lengths[mine].sum())


def test_train_stream_packs_micro_batches_alike_on_any_number_of_hosts():
  rng = np.random.default_rng(8)
  data = _data("classifier", 48, rng)
  p = fp.Packing(groups=2, row_length=32)
  kw = dict(global_batch_size=16, seed=1, max_seq_length=L, packing=p, micro_batches=2)
  one = fp.TrainStream(data, **kw)
  two = [fp.TrainStream(data, process_index=h, process_count=2, **kw) for h in range(2)]
  for step in range(3):
    whole = one.batch_at(step)
    halves = [s.batch_at(step) for s in two]
    for key, v in whole.items():
      np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), v, err_msg=key)


def test_auto_packed_micro_batches_keep_short_batches_whole_and_split_long_ones_on_cpu():
  auto = fp.packed_micro_batches
  budget = platform.CPU_PACKED_BATCH_TOKENS
  assert auto(0, 32, 16.0, "cpu") == 1  # GLUE-length: 512 real tokens, one micro-batch
  assert auto(0, 32, 70.0, "cpu") == 4  # QA windows: 2,240 tokens -> 4 x 560
  assert auto(0, 32, budget / 32 + 1, "cpu") == 2  # just over the budget whole
  assert auto(0, 6, 600.0, "cpu") == 6  # 2 x 600 is over: one example a micro-batch
  assert auto(0, 2, 2000.0, "cpu") == 2  # one example a micro-batch even when over it
  assert auto(0, 7, 300.0, "cpu") == 7  # only 1-example micro-batches divide 7
  assert auto(0, 32, 70.0, "gpu") == auto(0, 32, 70.0, "tpu") == 1
  assert auto(2, 32, 70.0, "cpu") == auto(2, 32, 16.0, "gpu") == 2  # asked for: as given
  with pytest.raises(UserError, match=r"grad_accum_steps=-1 must be >= 1"):
    auto(-1, 32, 16.0, "cpu")


def test_streams_of_a_packed_run_choose_micro_batches_from_the_examples_lengths():
  """`make_streams` hands the auto choice to the stream, and the train step reads it back
  there (`train._grad_accum_steps`): long examples split, short ones stay whole."""
  from bert_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != "cpu":
    pytest.skip("the auto choice splits on CPU only")
  config = load_config("finetune.py")
  config.update(dict(max_seq_length=L, pack_length=L, batch_size=64 * jax.device_count(),
                     num_train_steps=4, grad_accum_steps=0))
  for length, expect in ((L, 2), (8, 1)):  # 64 x 32 = 2,048 real tokens a group; 64 x 8 = 512
    data = _data("classifier", 80 * jax.device_count(), np.random.default_rng(3))
    data.lengths[:] = length
    stream, _ = fp.make_streams(config, data, {})
    assert stream.micro_batches == expect
    assert train_lib._grad_accum_steps(config, stream) == expect  # pylint: disable=protected-access
