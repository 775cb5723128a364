"""Hugging Face ModernBERT dirs in and out: hidden states and every head's logits equal
transformers' (float32, eager attention) on random tiny configs written by its own
`save_pretrained`, with inputs longer than the local window and a padded batch."""

import dataclasses
import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.heads import classifier, multiple_choice, pretraining, qa, token_classifier

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position

VOCAB = len(hf_fixtures.VOCAB)
LENGTH = 24  # > the local window of 8 (4 positions either side)


def modern_config(**overrides) -> transformers.ModernBertConfig:
  kwargs = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                num_attention_heads=2, max_position_embeddings=64, local_attention=8,
                global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                cls_token_id=2, sep_token_id=3, attn_implementation="eager")
  kwargs.update(overrides)
  return transformers.ModernBertConfig(**kwargs)


def save_modern(directory, arch="ModernBertForMaskedLM", seed=0, **overrides):
  """A random eval model of `arch` saved by transformers, with a vocab.txt beside it."""
  torch.manual_seed(seed)
  model = getattr(transformers, arch)(modern_config(**overrides))
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():  # weights larger than the init, so outputs are far from 0
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.1 * noise if "norm.weight" in name else 0.1 * noise if p.ndim == 1
              else 0.2 * noise)
  model.eval().save_pretrained(directory)
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(hf_fixtures.VOCAB) + "\n")
  return model


def inputs(batch=3, length=LENGTH, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, VOCAB, size=(batch, length)).astype(np.int64)
  ids[:, 0] = 2
  mask = np.ones_like(ids)
  mask[1, 15:] = 0  # a padded row (padding beyond the window of its last real token)
  mask[2, 9:] = 0
  ids[mask == 0] = 0
  return ids, mask


def torch_out(model, ids, mask, **kwargs):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs)


@pytest.mark.parametrize("overrides", [
    {},
    dict(hidden_activation="silu", classifier_activation="silu"),  # SwiGLU
    dict(tie_word_embeddings=False, norm_bias=True, attention_bias=True, mlp_bias=True,
         classifier_bias=True),
    dict(global_attn_every_n_layers=2, rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 5000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 300.0}}),
], ids=["base", "swiglu", "biases_untied", "every2_theta"])
def test_masked_lm_hidden_states_and_logits(tmp_path, overrides):
  model = save_modern(tmp_path, **overrides)
  pre = convert.from_pretrained(str(tmp_path), with_tokenizer=False)
  assert pre.heads == ("mlm",)
  ids, mask = inputs()
  want = torch_out(model, ids, mask, output_hidden_states=True)
  got = pretraining.BertForPreTraining(pre.config, with_nsp=False).apply(
      {"params": pre.params}, jnp.asarray(ids), None, jnp.asarray(mask),
      output_hidden_states=True)
  real = mask.astype(bool)
  assert len(got["hidden_states"]) == len(want.hidden_states) == 5
  for g, w in zip(got["hidden_states"], want.hidden_states):
    np.testing.assert_allclose(np.asarray(g)[real], w.numpy()[real], atol=1e-5)
  # Logits reach ~3: float32 rounding of the vocabulary matmul is ~1e-5 relative.
  np.testing.assert_allclose(np.asarray(got["mlm_logits"])[real], want.logits.numpy()[real],
                             atol=1e-5, rtol=1e-5)


def test_bare_model(tmp_path):
  model = save_modern(tmp_path, "ModernBertModel")
  pre = convert.from_pretrained(str(tmp_path), with_tokenizer=False)
  assert pre.heads == ()
  ids, mask = inputs()
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  got = model_lib.BertModel(pre.config, add_pooling_layer=False).apply(
      {"params": pre.params["bert"]}, jnp.asarray(ids), None, jnp.asarray(mask))
  want = torch_out(model, ids, mask).last_hidden_state.numpy()
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(got.sequence_output)[real], want[real], atol=1e-5)


@pytest.mark.parametrize("arch,pooling", [
    ("ModernBertForSequenceClassification", "cls"),
    ("ModernBertForSequenceClassification", "mean"),
    ("ModernBertForTokenClassification", "cls"),
    ("ModernBertForQuestionAnswering", "cls"),
])
def test_head_logits(tmp_path, arch, pooling):
  model = save_modern(tmp_path, arch, num_labels=3 if "Token" in arch else 2,
                      classifier_pooling=pooling)
  pre = convert.from_pretrained(str(tmp_path), with_tokenizer=False)
  ids, mask = inputs()
  want = torch_out(model, ids, mask)
  args = (jnp.asarray(ids), None, jnp.asarray(mask))
  if "Sequence" in arch:
    assert pre.heads == ("classifier",) and pre.num_labels == 2
    got = classifier.BertForSequenceClassification(pre.config, num_labels=2).apply(
        {"params": pre.params}, *args)
    np.testing.assert_allclose(np.asarray(got), want.logits.numpy(), atol=1e-5)
    return
  real = mask.astype(bool)
  if "Token" in arch:
    assert pre.heads == ("token_classifier",) and pre.num_labels == 3
    got = token_classifier.BertForTokenClassification(pre.config, num_labels=3).apply(
        {"params": pre.params}, *args)
    np.testing.assert_allclose(np.asarray(got)[real], want.logits.numpy()[real], atol=1e-5)
    return
  assert pre.heads == ("qa",)
  got = qa.BertForQuestionAnswering(pre.config).apply({"params": pre.params}, *args)
  for key in ("start_logits", "end_logits"):
    np.testing.assert_allclose(np.asarray(got[key])[real], getattr(want, key).numpy()[real],
                               atol=1e-5)


def test_multiple_choice_logits(tmp_path):
  model = save_modern(tmp_path, "ModernBertForMultipleChoice")
  pre = convert.from_pretrained(str(tmp_path), with_tokenizer=False)
  assert pre.heads == ("multiple_choice",)
  ids, mask = inputs(batch=4)
  ids, mask = ids.reshape(2, 2, LENGTH), mask.reshape(2, 2, LENGTH)
  want = torch_out(model, ids, mask).logits.numpy()
  got = multiple_choice.BertForMultipleChoice(pre.config).apply(
      {"params": pre.params}, jnp.asarray(ids), None, jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.parametrize("arch", ["ModernBertForMaskedLM", "ModernBertForSequenceClassification",
                                  "ModernBertForQuestionAnswering"])
def test_round_trip_to_hf_is_bit_exact(tmp_path, arch):
  src, out = tmp_path / "src", tmp_path / "out"
  model = save_modern(str(src), arch)
  convert.convert(str(src), str(out), "hf")
  written = safetensors.numpy.load_file(str(out / "model.safetensors"))
  original = safetensors.numpy.load_file(str(src / "model.safetensors"))
  assert sorted(written) == sorted(original)
  for name, x in original.items():
    np.testing.assert_array_equal(written[name], x, err_msg=name)
  ours, theirs = (json.loads((d / "config.json").read_text()) for d in (out, src))
  theirs.pop("transformers_version")
  theirs.pop("id2label", None), theirs.pop("label2id", None)
  ours.pop("id2label", None), ours.pop("label2id", None)
  ours.pop("problem_type", None)
  assert ours == theirs
  loaded = getattr(transformers, arch).from_pretrained(str(out), attn_implementation="eager")
  ids, mask = inputs()
  want, got = torch_out(model, ids, mask), torch_out(loaded.eval(), ids, mask)
  key = "start_logits" if "Question" in arch else "logits"
  np.testing.assert_array_equal(getattr(got, key).numpy(), getattr(want, key).numpy())


def test_unknown_layer_type_is_one_line(tmp_path):
  save_modern(str(tmp_path))
  path = tmp_path / "config.json"
  hf = json.loads(path.read_text())
  hf["layer_types"][1] = "chunked_attention"
  path.write_text(json.dumps(hf))
  with pytest.raises(UserError, match=r"layer_types has unknown values \['chunked_attention'\]"):
    convert.from_pretrained(str(tmp_path), with_tokenizer=False)
  hf["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "full_attention"]
  path.write_text(json.dumps(hf))
  with pytest.raises(UserError, match="not 'global every Nth layer"):
    convert.read_model_config(str(tmp_path))


@pytest.mark.slow
def test_finetune_from_modernbert_and_export_with_labels(tmp_path):
  """A ModernBERT MLM dir is an init_checkpoint like any other: fine-tuned (fresh pooler
  and classifier), its best model exported to Hugging Face with id2label, and
  transformers' ModernBertForSequenceClassification gives the same logits."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.data import sample_pairs  # pylint: disable=g-import-not-at-top
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  save_modern(str(tmp_path / "mlm"))
  paths = {}
  for split, count in (("train", 40), ("validation", 21)):
    paths[split] = tmp_path / f"{split}.jsonl"
    paths[split].write_text("".join(json.dumps(e) + "\n" for e in sample_pairs.examples(
        7 if split == "train" else 8, count)))
  c = load_config("finetune.py")
  c.update(task="local", batch_size=8, eval_batch_size=16, max_seq_length=32,
           num_train_steps=4, warmup_steps=1, learning_rate=1e-3, log_every_steps=1,
           eval_every_steps=4, checkpoint_every_steps=4, schedule="constant",
           init_checkpoint=str(tmp_path / "mlm"), train_file=str(paths["train"]),
           validation_file=str(paths["validation"]))
  workdir = str(tmp_path / "run")
  assert train.train_and_evaluate(c, workdir)["step"] == 4
  best = convert.from_pretrained(os.path.join(workdir, "best"))
  assert best.config.pooler == "head" and best.heads == ("classifier",)
  convert.convert(os.path.join(workdir, "best"), str(tmp_path / "hf"), "hf")
  hf = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert hf["architectures"] == ["ModernBertForSequenceClassification"]
  assert [hf["id2label"][str(i)] for i in range(len(best.labels))] == best.labels
  theirs = transformers.ModernBertForSequenceClassification.from_pretrained(
      str(tmp_path / "hf"), attn_implementation="eager").eval()
  ids, mask = inputs()
  got = classifier.BertForSequenceClassification(best.config, num_labels=best.num_labels).apply(
      {"params": best.params}, jnp.asarray(ids), None, jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), torch_out(theirs, ids, mask).logits.numpy(),
                             atol=1e-5)


def test_token_heads_get_the_per_token_prediction_head(tmp_path):
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import initialize  # pylint: disable=g-import-not-at-top
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  save_modern(str(tmp_path / "mlm"))
  c = load_config("finetune.py")
  c.update(init_checkpoint=str(tmp_path / "mlm"), max_seq_length=32, dtype="float32")
  per_token = {name: initialize.run_model_config(c, VOCAB, head=head).token_head
               for name, head in heads.HEADS.items() if head.predicts}
  assert per_token == {"classifier": False, "token_classifier": True, "qa": True,
                       "multiple_choice": False, "summary": True}
  # A token model without it has no transformers form: one line, nothing written.
  save_modern(str(tmp_path / "tok"), "ModernBertForTokenClassification", num_labels=3)
  pre = convert.from_pretrained(str(tmp_path / "tok"))
  pre = dataclasses.replace(pre, config=pre.config.replace(token_head=False))
  with pytest.raises(UserError, match="no per-token prediction head"):
    convert.save_hf(pre, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
