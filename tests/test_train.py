"""Train step and loop on a tiny model: learning, accumulation, non-finite handling, init."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import optim
from bert_jax import platform as platform_lib
from bert_jax.data import synthetic
from bert_jax import train
from bert_jax import heads
from bert_jax.tasks import pretraining

from conftest import read_rows, tiny_config


def test_loop_learns_and_writes_metrics_and_model_files(tmp_path):
  c = tiny_config(num_train_steps=12, eval_every_steps=6, checkpoint_every_steps=6,
                  log_every_steps=3)
  result = train.train_and_evaluate(c, str(tmp_path), data=synthetic.synthetic_data(c))
  rows = read_rows(tmp_path)
  train_rows = [r for r in rows if "loss" in r]
  eval_rows = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
  assert [r["step"] for r in eval_rows] == [6, 12]
  assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.05
  for key in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "grad_norm",
              "learning_rate", "seq_per_sec", "tokens_per_sec", "mfu"):
    assert key in train_rows[-1], key
  assert train_rows[-1]["mfu"] > 0  # CPU: the measured matmul peak
  for key in ("eval_loss", "eval_mlm_accuracy", "eval_nsp_accuracy"):
    assert key in eval_rows[-1]
  assert result["step"] == 12 and not result["preempted"]
  assert os.path.isdir(tmp_path / "tensorboard")
  meta = json.loads((tmp_path / "bert_jax_config.json").read_text())
  assert meta["format"] == "bert_jax" and meta["heads"] == ["mlm", "nsp"]
  assert meta["model"]["vocab_size"] == 128 and meta["model"]["hidden_size"] == 32
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["12", "6"]


def _step_setup(grad_accum_steps, nonfinite="stop", nsp=True):
  c = tiny_config(grad_accum_steps=grad_accum_steps, nonfinite=nonfinite)
  data, spec = synthetic.synthetic_data(c, nsp=nsp)
  task = heads.for_spec(spec)
  model = task.build_model(train.model_config(c, 128))
  tx, schedule = optim.make_optimizer(c)
  batch = next(data.train)
  ids = jnp.asarray(batch["input_ids"])
  params = model.init(jax.random.PRNGKey(0), ids, masked_positions_BxP=jnp.asarray(
      batch["masked_positions"]))["params"]
  params = jax.tree_util.tree_map(lambda x: getattr(x, "value", x), params,
                                  is_leaf=lambda x: hasattr(x, "value"))
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params))
  step = jax.jit(train.make_train_step(task, model, tx, schedule,
                                       grad_accum_steps=grad_accum_steps, nonfinite=nonfinite))
  return step, state, batch


def test_gradient_accumulation_matches_one_big_batch():
  step1, state, batch = _step_setup(1)
  step4, _, _ = _step_setup(4)
  rng = jax.random.PRNGKey(1)
  s1, m1 = step1(state, batch, rng)
  s4, m4 = step4(state, batch, rng)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
  assert float(m1["mlm_weight"]) == float(m4["mlm_weight"]) == float(
      batch["masked_weights"].sum())
  for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s4.params)):
    np.testing.assert_allclose(a, b, atol=2e-6)


def test_auto_grad_accum_steps_per_platform_and_shape():
  auto = train.auto_grad_accum_steps
  assert auto(32, 128, "cpu") == 8  # micro-batches of 4 rows (512 tokens)
  assert auto(64, 64, "cpu") == 8  # 8 rows of 64
  assert auto(6, 128, "cpu") == 2  # 3 rows: the fewest that fit
  assert auto(7, 128, "cpu") == 7  # only 1-row micro-batches divide 7
  assert auto(4, 512, "cpu") == 4
  assert auto(8, 32, "cpu") == 1  # the whole batch is under 512 tokens
  assert auto(256, 128, "gpu") == auto(256, 128, "tpu") == 1


def test_auto_grad_accumulation_matches_one_big_batch(monkeypatch):
  """grad_accum_steps=0 splits the tiny test batch (8 x 32) into 4 micro-batches of 2 rows
  once the CPU token budget is 64, and updates exactly like the whole batch."""
  monkeypatch.setattr(platform_lib, "CPU_BATCH_TOKENS", 64)
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  step1, state, batch = _step_setup(1)
  step0, _, _ = _step_setup(0)
  rng = jax.random.PRNGKey(1)
  s1, m1 = step1(state, batch, rng)
  traced = jax.make_jaxpr(step0)(state, batch, rng)
  assert "scan" in str(traced) and "length=4" in str(traced)
  s0, m0 = step0(state, batch, rng)
  np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s0.params)):
    np.testing.assert_allclose(a, b, atol=2e-6)


def test_nonfinite_skip_keeps_state_and_counts_step():
  step, state, batch = _step_setup(1, nonfinite="skip")
  bad = dict(batch, masked_weights=batch["masked_weights"] * np.float32("nan"))
  new, metrics = step(state, bad, jax.random.PRNGKey(1))
  assert float(metrics["nonfinite"]) == 1.0
  assert int(new.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves((state.params, state.opt_state)),
                  jax.tree_util.tree_leaves((new.params, new.opt_state))):
    np.testing.assert_array_equal(a, b)


class _PoisonedIterator(synthetic.SyntheticIterator):
  """Synthetic batches with NaN weights at batch index `bad`."""

  def __init__(self, bad, **kw):
    super().__init__(**kw)
    self.bad = bad

  def __next__(self):
    index = self.index
    batch = super().__next__()
    if index == self.bad:
      batch["masked_weights"] = batch["masked_weights"] * np.float32("nan")
    return batch


def test_nonfinite_stop_names_step_and_keeps_last_good_checkpoint(tmp_path):
  c = tiny_config(num_train_steps=8, checkpoint_every_steps=2)
  data, spec = synthetic.synthetic_data(c)
  data.train = _PoisonedIterator(4, vocab_size=128, seq_len=32, max_predictions=5,
                                 global_batch_size=8)
  with pytest.raises(train.NonFiniteError, match="at step 5.*last good checkpoint is step 4"):
    train.train_and_evaluate(c, str(tmp_path), data=(data, spec))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_model_config_takes_vocab_from_data_and_checks_length():
  c = tiny_config()
  cfg = train.model_config(c, 777)
  assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers) == (777, 32, 2)
  c.max_seq_length = 64
  with pytest.raises(train.UserError, match="max_position_embeddings"):
    train.model_config(c, 777)


def write_vocab(directory, size=128):
  """A WordPiece vocab.txt of `size` tokens (ids match the synthetic data's specials)."""
  os.makedirs(directory, exist_ok=True)
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(size - 5)]
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(tokens) + "\n")
  return str(directory)


def test_init_checkpoint_loads_params_and_rejects_shape_mismatch(tmp_path):
  src = tmp_path / "src"
  c = tiny_config(num_train_steps=2)
  data, spec = synthetic.synthetic_data(c)
  data.tokenizer_dir = write_vocab(tmp_path / "vocab")
  train.train_and_evaluate(c, str(src), data=(data, spec))
  assert (src / "tokenizer" / "vocab.txt").exists()
  wrong = tiny_config(num_train_steps=1, init_checkpoint=str(src))
  wrong.model.intermediate_size = 48
  with pytest.raises(train.UserError,
                     match=r"tensor bert/encoder/layer_0/intermediate/\w+ has shape"):
    train.train_and_evaluate(wrong, str(tmp_path / "bad"), data=synthetic.synthetic_data(wrong))
  ok = tiny_config(num_train_steps=1, init_checkpoint=str(src), learning_rate=0.0,
                   warmup_steps=0, schedule="constant")
  data, spec = synthetic.synthetic_data(ok)
  data.tokenizer_dir = str(tmp_path / "vocab")
  train.train_and_evaluate(ok, str(tmp_path / "ok"), data=(data, spec))
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  a = convert.from_pretrained(str(src)).params
  b = convert.from_pretrained(str(tmp_path / "ok")).params
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)  # lr 0: the loaded weights come back unchanged


def test_fresh_leaves_are_the_whole_inits_leaves():
  """What a run from a checkpoint initialises afresh (its head) has the values it would have
  in the whole model's init, with the same sharding."""
  import flax  # pylint: disable=g-import-not-at-top
  c = tiny_config()
  spec = pretraining.spec_of(c, {"vocab_size": 128})
  setup = train._setup(c, heads.for_spec(spec), spec)  # pylint: disable=protected-access
  rng = jax.random.PRNGKey(3)
  whole = flax.traverse_util.flatten_dict(train.fresh_params(setup, rng), sep="/")
  names = sorted(n for n in whole if not n.startswith("bert/encoder/"))[:3] + [
      "bert/pooler/kernel", "nsp/kernel"]
  part = train.fresh_leaves(setup, rng, names)
  assert sorted(part) == sorted(names)
  for name in names:
    np.testing.assert_array_equal(part[name], whole[name])
    assert part[name].sharding == whole[name].sharding


def test_pretraining_eval_is_one_exact_pass_and_a_missing_split_is_named(tmp_path):
  """The eval split is read once, every row (the last batch padded with weight-0 rows); an
  explicitly given eval_data without the split asked for names the splits it has."""
  from bert_jax.data import pretrain_pipeline  # pylint: disable=g-import-not-at-top
  from conftest import prepare_sample_data  # pylint: disable=g-import-not-at-top
  data_dir = prepare_sample_data(tmp_path / "data", num_lines=1500)
  c = tiny_config(train_data=data_dir, eval_data=data_dir, eval_every_steps=2,
                  num_eval_batches=0, eval_batch_size=8)
  data, _ = pretraining.make_data(c)
  batches = list(data.eval_sets[""]())
  data.train.close()
  num_eval = pretrain_pipeline.read_meta(data_dir)["splits"]["eval"]["num_examples"]
  weights = np.concatenate([b["example_weights"] for b in batches])
  assert weights.sum() == num_eval and len(weights) == 8 * -(-num_eval // 8)
  bad = tiny_config(train_data=data_dir, eval_data=data_dir, eval_split="dev", eval_every_steps=2)
  with pytest.raises(train.UserError, match=r"has no split 'dev'; it has \['eval', 'train'\]"):
    pretraining.make_data(bad)
