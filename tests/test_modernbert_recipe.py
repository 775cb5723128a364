"""The ModernBERT pretraining recipe: the warmup-stable-decay schedule, and
configs/modern_tiny.py pretraining MLM-only at 30% on prepared packed rows, its model
exported to transformers' ModernBertForMaskedLM with the same logits."""

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax import optim
from bert_jax.errors import UserError

from conftest import load_config, prepare_sample_data, read_rows


def _schedule_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      schedule="wsd", learning_rate=1.0, warmup_steps=10, num_train_steps=100,
      end_learning_rate_ratio=0.0, wsd_decay_fraction=0.2, schedule_power=1.0))
  c.update(overrides)
  return c


def test_warmup_stable_decay():
  schedule = optim.make_schedule(_schedule_config())
  # Hu et al. 2024 (MiniCPM), WSD: warmup W, stable to T - D, decay over the last D steps.
  want = [s / 10 if s < 10 else 1.0 if s < 80 else 1.0 - (s - 80) / 20 for s in range(101)]
  np.testing.assert_allclose([float(schedule(s)) for s in range(101)], want, atol=1e-6)
  with pytest.raises(UserError, match="wsd_decay_fraction"):
    c = _schedule_config()
    del c["wsd_decay_fraction"]
    optim.make_schedule(c)
  with pytest.raises(UserError, match=r"wsd_decay_fraction=1.5 must be in \[0, 1\]"):
    optim.make_schedule(_schedule_config(wsd_decay_fraction=1.5))


@pytest.mark.slow
def test_modern_tiny_pretrains_mlm_only_and_exports_to_transformers(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  from bert_jax.heads import pretraining  # pylint: disable=g-import-not-at-top
  c = load_config("modern_tiny.py")
  c.model.update(hidden_size=32, intermediate_size=48, num_heads=2, local_window=8)
  c.update(train_data=prepare_sample_data(tmp_path, num_lines=3000, num_shards=1,
                                             mode="packed"), max_seq_length=32,
           max_predictions_per_seq=10, batch_size=8, num_train_steps=12, warmup_steps=2,
           learning_rate=3e-3, log_every_steps=3, eval_every_steps=12,
           checkpoint_every_steps=12, num_eval_batches=2)
  workdir = str(tmp_path / "run")
  assert train.train_and_evaluate(c, workdir)["step"] == 12
  rows = read_rows(workdir)
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses[-1] < losses[0] and "nsp_accuracy" not in rows[-2]
  assert any("eval_mlm_accuracy" in r for r in rows)
  doc = json.loads((tmp_path / "run" / "bert_jax_config.json").read_text())
  assert doc["heads"] == ["mlm"] and doc["model"]["position_embedding"] == "rope"
  convert.convert(workdir, str(tmp_path / "hf"), "hf")
  hf = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert hf["model_type"] == "modernbert" and hf["layer_types"] == [
      "full_attention", "sliding_attention", "sliding_attention"]
  ours = convert.from_pretrained(workdir, with_tokenizer=False)
  theirs = transformers.ModernBertForMaskedLM.from_pretrained(
      str(tmp_path / "hf"), attn_implementation="eager").eval()
  ids = np.random.RandomState(0).randint(5, 300, size=(2, 32))
  mask = np.ones_like(ids)
  mask[1, 20:] = 0
  got = pretraining.BertForPreTraining(ours.config, with_nsp=False).apply(
      {"params": ours.params}, jnp.asarray(ids), None, jnp.asarray(mask))["mlm_logits"]
  with torch.no_grad():
    want = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(got)[real], want.numpy()[real], atol=1e-5, rtol=1e-5)
