"""LoRA fine-tuning: trainable counts, forward and gradients equal peft's LoRA on transformers'
BertForSequenceClassification; merged exports transformers reads; resume; bad input."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_fixtures
from bert_jax import lora as lora_lib
from bert_jax import model as model_lib
from bert_jax import train
from bert_jax.data import sample_pairs
from bert_jax.data.contract import Spec
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax import heads as heads_lib
from conftest import load_config, override, read_rows

LABELS = ("a", "b", "c")
RANK, ALPHA = 4, 8.0


def lora_config(**overrides):
  """configs/finetune.py at test size with LoRA (rank 4, alpha 8, query + value)."""
  c = load_config("finetune.py")
  c.model.update(hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
  c.update(task="local", batch_size=8, eval_batch_size=16, max_seq_length=32,
           num_train_steps=6, warmup_steps=1, learning_rate=5e-3, log_every_steps=1,
           eval_every_steps=6, checkpoint_every_steps=2, schedule="constant")
  c.lora.update(rank=RANK, alpha=ALPHA)
  return override(c, **overrides)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A tiny random Hugging Face BertForSequenceClassification dir and sample-pair files."""
  root = tmp_path_factory.mktemp("lora")
  hf = hf_fixtures.make_model("BertForSequenceClassification", seed=0, num_labels=3)
  hf_fixtures.save_hf_dir(hf, str(root / "hf"))
  paths = {"hf": str(root / "hf")}
  for split, count in (("train", 40), ("validation", 21)):
    path = root / f"{split}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in sample_pairs.examples(
        7 if split == "train" else 8, count)))
    paths[split] = str(path)
  return paths


def _local(files, **overrides):
  return lora_config(**{"init_checkpoint": files["hf"], "train_file": files["train"],
                        "validation_file": files["validation"], **overrides})


def _peft_model(hf_dir, targets=("query", "value"), seed=3):
  """peft's LoRA on transformers' model, adapters set to random values (B too: a zero B
  would leave A's gradient zero and the forward equal to the base)."""
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  base = transformers.BertForSequenceClassification.from_pretrained(hf_dir)
  model = peft.get_peft_model(base, peft.LoraConfig(
      r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(targets),
      task_type="SEQ_CLS"))
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "lora_" in name:
        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _ours(files, scan_layers=False, **overrides):
  """(setup, params) of a LoRA run on the HF dir, the adapters fresh."""
  c = _local(files, **{"model.scan_layers": scan_layers, **overrides})
  spec = Spec(task="local", head="classifier", kind="classification", max_seq_length=32,
              vocab_size=len(hf_fixtures.VOCAB), labels=LABELS)
  setup = train._setup(c, heads_lib.for_spec(spec), spec)  # pylint: disable=protected-access
  base = model_lib.to_layout(convert.from_pretrained(files["hf"]).params, setup.bert_config)
  params = lora_lib.with_adapters(base, train.fresh_params(setup, jax.random.PRNGKey(0)))
  return setup, params


def _jax(tree):
  """qwix finds a module's kernel among its params by identity, so they must be jax arrays
  (as in every train and eval step), not numpy."""
  return jax.tree_util.tree_map(jnp.asarray, tree)


def _copy_peft_adapters(params, peft_model, num_layers, scan_layers):
  """Our tree with peft's adapter values (lora_A.weight [r, in] -> kernel_lora_a [in, r],
  lora_B.weight [out, r] -> kernel_lora_b [r, out])."""
  flat = dict(lora_lib._flat(params))  # pylint: disable=protected-access
  sd = {k: v.detach().numpy() for k, v in peft_model.state_dict().items()}
  for name in [k for k in flat if lora_lib.is_adapter(k)]:
    kind = "A" if name.endswith(lora_lib.A_SUFFIX) else "B"
    module = name.split("/")[-2]  # query | value | key | ...

    def torch_value(i):
      key = (f"base_model.model.bert.encoder.layer.{i}.attention.self.{module}."
             f"lora_{kind}.default.weight")
      return sd[key].T

    if scan_layers:
      flat[name] = np.stack([torch_value(i) for i in range(num_layers)])
    else:
      flat[name] = torch_value(int(name.split("/")[2].split("_")[1]))
  return _jax(lora_lib._unflat(flat))  # pylint: disable=protected-access


def _batch():
  rs = np.random.default_rng(0)
  ids = rs.integers(5, len(hf_fixtures.VOCAB), (3, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 9:] = 0
  types = np.zeros_like(ids)
  types[:, 6:] = 1
  return ids, types, mask


@pytest.mark.parametrize("scan_layers", [False, True])
def test_counts_forward_and_gradients_equal_peft(files, scan_layers):
  setup, params = _ours(files, scan_layers)
  peft_model = _peft_model(files["hf"])
  params = _copy_peft_adapters(params, peft_model, setup.bert_config.num_layers, scan_layers)
  assert setup.lora_modules == tuple(
      f"bert/encoder/{'layers' if scan_layers else f'layer_{i}'}/attention/{m}"
      for i in range(1 if scan_layers else 2) for m in ("query", "value"))
  trainable, frozen = setup.partition.split(params)
  peft_trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
  assert model_lib.count_params(trainable) == sum(p.numel() for p in peft_trainable.values())
  assert model_lib.count_params(frozen) > 0
  # No optimizer state for the frozen encoder: AdamW's two moments of the trainable part.
  opt_sizes = [x.size for x in jax.tree_util.tree_leaves(setup.abstract_state.opt_state)
               if x.ndim]
  assert sum(opt_sizes) == 2 * model_lib.count_params(trainable)

  ids, types, mask = _batch()
  weights = np.random.default_rng(1).normal(size=(3, len(LABELS))).astype(np.float32)

  def loss(p):
    logits = setup.eval_model.apply({"params": setup.partition.combine(p, frozen)}, ids, types,
                                    mask)
    return jnp.sum(logits * weights), logits

  (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
  out = peft_model(input_ids=torch.tensor(ids, dtype=torch.long),
                   token_type_ids=torch.tensor(types, dtype=torch.long),
                   attention_mask=torch.tensor(mask, dtype=torch.long)).logits
  np.testing.assert_allclose(np.asarray(logits), out.detach().numpy(), atol=1e-5, rtol=1e-5)
  # The adapters change the output (B is not zero here), so equality is not the base's.
  plain = setup.head.build_model(setup.bert_config).apply(
      {"params": _jax(lora_lib.without_adapters(params))}, ids, types, mask)
  assert np.abs(np.asarray(plain) - np.asarray(logits)).max() > 1e-3
  (out * torch.tensor(weights)).sum().backward()
  g = lora_lib._flat(grads)  # pylint: disable=protected-access
  checked = 0
  for name, p in peft_trainable.items():
    if "lora_" in name:
      layer = int(name.split(".layer.")[1].split(".")[0])
      module = name.split(".self.")[1].split(".")[0]
      kind = "a" if "lora_A" in name else "b"
      where = "layers" if scan_layers else f"layer_{layer}"
      ours = g[f"bert/encoder/{where}/attention/{module}/kernel_lora_{kind}"]
      ours = ours[layer] if scan_layers else ours
    else:  # the classifier (peft's modules_to_save copy)
      ours = g["classifier/" + ("kernel" if name.endswith("weight") else "bias")]
    theirs = p.grad.numpy().T
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5, rtol=1e-5)
    checked += 1
  assert checked == len(peft_trainable) == 4 * 2 + 2


def test_merge_equals_adapters_and_transformers_reads_it(files):
  import transformers  # pylint: disable=g-import-not-at-top
  setup, params = _ours(files)
  params = _copy_peft_adapters(params, _peft_model(files["hf"]), 2, False)
  ids, types, mask = _batch()
  adapted = setup.eval_model.apply({"params": params}, ids, types, mask)
  merged = _jax(lora_lib.merge(params, ALPHA / RANK))
  assert not lora_lib.has_adapters(merged)
  np.testing.assert_allclose(
      np.asarray(adapted),
      setup.head.build_model(setup.bert_config).apply({"params": merged}, ids, types, mask),
      atol=1e-5, rtol=1e-5)
  del transformers
