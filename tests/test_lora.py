"""LoRA fine-tuning: trainable counts, forward and gradients equal peft's LoRA on transformers'
BertForSequenceClassification; merged exports transformers reads; resume; bad input."""

import json
import os
import sys

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
from conftest import load_config, override, read_rows, sigterm_then_resume

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


# Per head: the transformers architecture, peft's task type, our Spec's head/kind/labels,
# and the logits of an output.
ARCHS = {
    "classifier": ("BertForSequenceClassification", "SEQ_CLS", "classification", LABELS,
                   lambda out: out),
    "token_classifier": ("BertForTokenClassification", "TOKEN_CLS", "tagging", LABELS,
                         lambda out: out),
    "qa": ("BertForQuestionAnswering", "QUESTION_ANS", "qa", None,
           lambda out: (out["start_logits"], out["end_logits"])),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Tiny random Hugging Face dirs (one per head of ARCHS) and sample-pair files."""
  root = tmp_path_factory.mktemp("lora")
  paths = {}
  for head, (arch, *_) in ARCHS.items():
    hf = hf_fixtures.make_model(arch, seed=0, num_labels=2 if head == "qa" else 3)
    paths[head] = hf_fixtures.save_hf_dir(hf, str(root / head))
  paths["hf"] = paths["classifier"]
  for split, count in (("train", 40), ("validation", 21)):
    path = root / f"{split}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in sample_pairs.examples(
        7 if split == "train" else 8, count)))
    paths[split] = str(path)
  return paths


def _local(files, **overrides):
  return lora_config(**{"init_checkpoint": files["hf"], "train_file": files["train"],
                        "validation_file": files["validation"], **overrides})


def _peft_model(hf_dir, head="classifier", targets=("query", "value"), seed=3):
  """peft's LoRA on transformers' model, adapters set to random values (B too: a zero B
  would leave A's gradient zero and the forward equal to the base)."""
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  arch, task_type = ARCHS[head][:2]
  base = getattr(transformers, arch).from_pretrained(hf_dir)
  model = peft.get_peft_model(base, peft.LoraConfig(
      r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(targets),
      task_type=task_type))
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "lora_" in name:
        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _ours(files, scan_layers=False, head="classifier", **overrides):
  """(setup, params) of a LoRA run of `head` on its HF dir, the adapters fresh."""
  c = _local(files, **{"model.scan_layers": scan_layers, "init_checkpoint": files[head],
                       **overrides})
  _, _, kind, labels, _ = ARCHS[head]
  spec = Spec(task="local", head=head, kind=kind, max_seq_length=32,
              vocab_size=len(hf_fixtures.VOCAB), labels=labels)
  setup = train._setup(c, heads_lib.for_spec(spec), spec)  # pylint: disable=protected-access
  base = model_lib.to_layout(convert.from_pretrained(files[head]).params, setup.bert_config)
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


@pytest.mark.parametrize("head,scan_layers", [("classifier", False), ("classifier", True),
                                               ("token_classifier", False), ("qa", False)])
def test_counts_forward_and_gradients_equal_peft(files, head, scan_layers):
  setup, params = _ours(files, scan_layers, head)
  peft_model = _peft_model(files[head], head)
  outputs = ARCHS[head][4]
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
  rs = np.random.default_rng(1)

  def loss(p):
    logits = outputs(setup.eval_model.apply({"params": setup.partition.combine(p, frozen)},
                                            ids, types, mask))
    logits = logits if isinstance(logits, tuple) else (logits,)
    weights = [rs_weights(x.shape) for x in logits]
    return sum(jnp.sum(x * w) for x, w in zip(logits, weights)), logits

  weights_cache = {}

  def rs_weights(shape):  # one fixed weight per output shape, shared with the torch side;
    # divided by the output's size as a mean loss is (float32 sums of ~100 terms of ~10 differ
    # by more than 1e-5 between any two implementations)
    return weights_cache.setdefault(
        shape, (rs.normal(size=shape) / np.prod(shape)).astype(np.float32))

  (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
  # Through peft's LoraModel: PeftModelForQuestionAnswering.forward (peft 0.21.2) drops
  # token_type_ids before calling it.
  out = peft_model.base_model(input_ids=torch.tensor(ids, dtype=torch.long),
                              token_type_ids=torch.tensor(types, dtype=torch.long),
                              attention_mask=torch.tensor(mask, dtype=torch.long))
  theirs = ((out.start_logits, out.end_logits) if head == "qa" else (out.logits,))
  for o, t in zip(logits, theirs):
    np.testing.assert_allclose(np.asarray(o), t.detach().numpy(), atol=1e-5, rtol=1e-5)
  # The adapters change the output (B is not zero here), so equality is not the base's.
  plain = outputs(setup.head.build_model(setup.bert_config).apply(
      {"params": _jax(lora_lib.without_adapters(params))}, ids, types, mask))
  plain = plain if isinstance(plain, tuple) else (plain,)
  assert np.abs(np.asarray(plain[0]) - np.asarray(logits[0])).max() > 1e-3
  sum((t * torch.tensor(weights_cache[tuple(t.shape)])).sum() for t in theirs).backward()
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
    else:  # the head (peft's modules_to_save copy)
      ours = g[f"{heads_lib.for_spec(setup.head.spec).param_key}/"
               + ("kernel" if name.endswith("weight") else "bias")]
    theirs = p.grad.numpy().T
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-6, rtol=1e-5, err_msg=name)
    checked += 1
  assert checked == len(peft_trainable) == 4 * 2 + 2


def _dot_output_shapes(jaxpr) -> set:
  """Output shapes of every dot_general in a jaxpr, sub-jaxprs (pjit, custom_vjp) included."""
  shapes = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", None)
      if inner is not None:
        shapes |= _dot_output_shapes(getattr(inner, "jaxpr", inner))
  return shapes


def test_no_weight_gradient_is_formed_for_the_frozen_encoder(files):
  setup, params = _ours(files)
  params = _jax(params)
  ids, types, mask = _batch()
  trainable, frozen = setup.partition.split(params)
  frozen_kernels = {tuple(v.shape) for k, v in lora_lib._flat(frozen).items()  # pylint: disable=protected-access
                    if k.endswith("kernel") and v.ndim >= 2 and k.startswith("bert/encoder/")}

  def lora_loss(p):  # as the train step differentiates: the trainable part only
    return jnp.sum(setup.eval_model.apply({"params": setup.partition.combine(p, frozen)}, ids,
                                          types, mask))

  def full_loss(p):
    return jnp.sum(setup.head.build_model(setup.bert_config).apply({"params": p}, ids, types,
                                                                   mask))

  lora_dots = _dot_output_shapes(jax.make_jaxpr(jax.grad(lora_loss))(trainable).jaxpr)
  full_dots = _dot_output_shapes(jax.make_jaxpr(jax.grad(full_loss))(
      lora_lib.without_adapters(params)).jaxpr)
  # Full fine-tuning forms each kernel's gradient (a dot of the kernel's shape); LoRA none.
  assert frozen_kernels <= full_dots
  assert not frozen_kernels & lora_dots


@pytest.mark.parametrize("scan_layers", [False, True])
def test_merge_equals_the_adapted_model_on_every_kernel_shape(files, scan_layers):
  # q/k/v kernels are [embed, heads, kv], the attention output [heads, kv, embed], the
  # feed-forward ones [embed, mlp] and [mlp, embed]: the merge folds each back.
  setup, params = _ours(files, scan_layers, **{
      "lora.targets": r"encoder/.*(query|key|value|output|intermediate)/kernel$"})
  assert len(setup.lora_modules) == (1 if scan_layers else 2) * 6
  rs = np.random.default_rng(5)
  params = _jax(lora_lib._unflat({  # pylint: disable=protected-access
      k: 0.3 * rs.normal(size=v.shape).astype(np.float32) if lora_lib.is_adapter(k) else v
      for k, v in lora_lib._flat(params).items()}))  # pylint: disable=protected-access
  ids, types, mask = _batch()
  adapted = setup.eval_model.apply({"params": params}, ids, types, mask)
  merged = _jax(lora_lib.merge(params, ALPHA / RANK))
  assert not lora_lib.has_adapters(merged)
  plain_model = setup.head.build_model(setup.bert_config)
  np.testing.assert_allclose(np.asarray(adapted),
                             plain_model.apply({"params": merged}, ids, types, mask),
                             atol=1e-5, rtol=1e-5)
  base = plain_model.apply({"params": _jax(lora_lib.without_adapters(params))}, ids, types, mask)
  assert np.abs(np.asarray(base) - np.asarray(adapted)).max() > 1e-2


# --------------------------------------------------------------------------- end to end


def _logits_hf(hf_dir, ids, types, mask):
  import transformers  # pylint: disable=g-import-not-at-top
  model = transformers.BertForSequenceClassification.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long),
                 token_type_ids=torch.tensor(types, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()


@pytest.mark.slow
def test_run_exports_merged_best_that_transformers_reads_and_adapters_alone(files, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(_local(files, export_hf=True), workdir)
  assert result["step"] == 6 and "eval_accuracy" in result
  best = convert.from_pretrained(os.path.join(workdir, "best"))
  assert not lora_lib.has_adapters(best.params)  # a plain model
  base = convert.from_pretrained(files["hf"]).params
  flat_best, flat_base = (lora_lib._flat(t) for t in (best.params, base))  # pylint: disable=protected-access
  # The encoder was frozen: only the adapted kernels moved (by the merge), the rest is the
  # checkpoint's bit for bit; the head was trained.
  for name, value in flat_base.items():
    if name.startswith("bert/") and not name.endswith(("query/kernel", "value/kernel")):
      np.testing.assert_array_equal(flat_best[name], value, err_msg=name)
  assert not np.allclose(flat_best["bert/encoder/layer_0/attention/query/kernel"],
                         flat_base["bert/encoder/layer_0/attention/query/kernel"])
  assert not np.allclose(flat_best["classifier/kernel"], flat_base["classifier/kernel"])
  # best_lora/: adapters + head, with what they mean; put back on the base they give best/.
  doc = json.loads((tmp_path / "run" / "best_lora" / "lora.json").read_text())
  assert {k: doc[k] for k in ("rank", "alpha", "targets")} == {
      "rank": RANK, "alpha": ALPHA, "targets": r"attention/(query|value)/kernel$"}
  assert doc["base_model"] == files["hf"] and doc["best"]["step"] == 6
  assert len(doc["target_modules"]) == 4
  again = lora_lib._flat(lora_lib.apply_adapters(os.path.join(workdir, "best_lora"), base))  # pylint: disable=protected-access
  assert set(again) == set(flat_best)
  for name, value in again.items():
    np.testing.assert_allclose(value, flat_best[name], atol=1e-6, err_msg=name)
  # The workdir's last checkpoint (step 6, the best) read as a model, merged, is best/ too.
  from_workdir = lora_lib._flat(lora_lib.merged_for_reading(  # pylint: disable=protected-access
      workdir, convert.from_pretrained(workdir).params))
  for name, value in from_workdir.items():
    np.testing.assert_array_equal(value, flat_best[name], err_msg=name)
  # The merged export in transformers gives the logits of the adapted model, and so does
  # peft's own LoRA reading best_lora/ onto the base model.
  ids, types, mask = _batch()
  import peft  # pylint: disable=g-import-not-at-top
  peft_config = json.loads((tmp_path / "run" / "best_lora" / "adapter_config.json").read_text())
  assert peft_config["r"] == RANK and peft_config["lora_alpha"] == ALPHA
  assert peft_config["task_type"] == "SEQ_CLS" and peft_config["modules_to_save"] == ["classifier"]
  loaded = peft.PeftModel.from_pretrained(transformers.BertForSequenceClassification.from_pretrained(
      files["hf"]), os.path.join(workdir, "best_lora")).eval()
  with torch.no_grad():
    peft_logits = loaded(input_ids=torch.tensor(ids, dtype=torch.long),
                         token_type_ids=torch.tensor(types, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
  setup, _ = _ours(files)
  trainable = _restore(os.path.join(workdir, "best_lora", "params"))
  frozen = setup.partition.split(base)[1]
  adapted = setup.eval_model.apply({"params": _jax(setup.partition.combine(trainable, frozen))},
                                   ids, types, mask)
  np.testing.assert_allclose(_logits_hf(os.path.join(workdir, "best_hf"), ids, types, mask),
                             np.asarray(adapted), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(peft_logits, np.asarray(adapted), atol=1e-5, rtol=1e-5)


def _restore(path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))


@pytest.mark.slow
def test_sigterm_then_resume_is_bit_identical(files, tmp_path):
  # Adapter dropout on: the resumed run must also draw the same dropout masks.
  c = _local(files, num_train_steps=8, eval_every_steps=4, checkpoint_every_steps=4,
             **{"lora.dropout": 0.1})
  whole, cut = sigterm_then_resume(c, tmp_path)
  for d in ("best", "best_lora"):
    a, b = (_restore(os.path.join(w, d, "params")) for w in (whole, cut))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Started again with other LoRA settings (or none), the workdir is refused, not resumed.
  with pytest.raises(UserError, match=r"was trained with LoRA .*'rank': 4.*the config asks for "
                     r"off \(config.lora\)"):
    train.train_and_evaluate(override(c, **{"lora.rank": 0}), cut)
  # The checkpoint holds adapters, their optimizer state and nothing for the frozen encoder.
  state = _restore(os.path.join(whole, "checkpoints", "8", "train_state"))
  mu = lora_lib._flat(state["opt_state"][1][0]["mu"])  # pylint: disable=protected-access
  assert mu and all(lora_lib.is_trainable(k) for k in mu)


# --------------------------------------------------------------------------- bad input


def test_bad_settings_name_the_key(files, tmp_path):
  spec = Spec(task="local", head="classifier", kind="classification", max_seq_length=32,
              vocab_size=len(hf_fixtures.VOCAB), labels=LABELS)

  def setup(**overrides):
    c = _local(files, **overrides)
    return train._setup(c, heads_lib.for_spec(spec), spec)  # pylint: disable=protected-access

  with pytest.raises(UserError, match=r"config.lora.targets='attention/nothing' matches no "
                     r"encoder kernel \(paths look like bert/"):
    setup(**{"lora.targets": "attention/nothing"})
  with pytest.raises(UserError, match=r"config.lora.rank=-1 must be an integer >= 0"):
    setup(**{"lora.rank": -1})
  with pytest.raises(UserError, match=r"config.lora.targets='\(' is not a regular expression"):
    setup(**{"lora.targets": "("})
  with pytest.raises(UserError, match=r"config.lora.dropout=1.5 must be in \[0, 1\)"):
    setup(**{"lora.dropout": 1.5})
  with pytest.raises(UserError, match=r"config.lora.rank=4 freezes the encoder, so it needs "
                     r"config.init_checkpoint"):
    setup(**{"init_checkpoint": "", "model.preset": "tiny"})
  # Off by default: the plain setup, everything trainable.
  assert setup(**{"lora.rank": 0}).partition is lora_lib.FULL


# Every other head: (task, sample_tasks.write key, max_seq_length, extra config).
TASKS = {
    "conll": ("ner", 32, {}),
    "squad_json": ("squad", 64, {"qa.doc_stride": 16, "qa.max_query_length": 16}),
    "multiple_choice": ("mc", 128, {}),
    "extractive_summary": ("summary", 128, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_every_head_trains_adapters_and_its_head_only(task, tmp_path):
  from bert_jax.data import sample_tasks  # pylint: disable=g-import-not-at-top
  key, length, extra = TASKS[task]
  paths = sample_tasks.write(str(tmp_path / "data"), num_train=16, num_eval=8)[key]
  init = hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=2,
                                                        max_position_embeddings=128),
                                 str(tmp_path / "hf"))
  c = lora_config(task=task, init_checkpoint=init, train_file=paths["train"],
                  validation_file=paths["validation"], max_seq_length=length,
                  num_train_steps=3, eval_every_steps=3, checkpoint_every_steps=3,
                  **{"lora.targets": r"attention/(query|key|value|output)/kernel$", **extra})
  workdir = str(tmp_path / "run")
  assert train.train_and_evaluate(c, workdir)["step"] == 3
  best = lora_lib._flat(convert.from_pretrained(os.path.join(workdir, "best")).params)  # pylint: disable=protected-access
  base = lora_lib._flat(convert.from_pretrained(init).params)  # pylint: disable=protected-access
  assert not any(lora_lib.is_adapter(k) for k in best)
  moved = sorted(k for k, v in base.items()
                 if k in best and not np.array_equal(best[k], v))
  # Exactly the targeted kernels moved (merged adapters); the rest of the encoder is frozen.
  assert moved == sorted(f"bert/encoder/layer_{i}/attention/{m}/kernel"
                         for i in range(2) for m in ("query", "key", "value", "output"))
  doc = json.loads((tmp_path / "run" / "best_lora" / "lora.json").read_text())
  assert len(doc["target_modules"]) == 8
  # peft's files where the head has a transformers class (the summary head has none).
  peft_file = tmp_path / "run" / "best_lora" / "adapter_config.json"
  assert peft_file.exists() == (task != "extractive_summary")
  if peft_file.exists():
    peft_doc = json.loads(peft_file.read_text())
    assert peft_doc["task_type"] == {"conll": "TOKEN_CLS", "squad_json": "QUESTION_ANS"}.get(task)
    assert len(peft_doc["target_modules"]) == 8


@pytest.mark.slow
def test_launcher_prints_one_line_naming_the_key(files, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import ROOT, child_env  # pylint: disable=g-import-not-at-top
  for flag, culprit in (("--config.lora.targets=nothing", "config.lora.targets='nothing'"),
                        ("--config.lora.rank=-1", "config.lora.rank=-1")):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "finetune.py"),
         f"--config={ROOT}/configs/finetune.py", f"--workdir={tmp_path / 'run'}",
         "--config.task=local", f"--config.init_checkpoint={files['hf']}",
         f"--config.train_file={files['train']}", "--config.num_train_steps=2",
         "--config.batch_size=8", "--config.max_seq_length=32", "--config.lora.rank=4", flag],
        capture_output=True, text=True, timeout=900, env=child_env(1))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], lines


# --------------------------------------------------------------------------- meshes


MESHES = [(8, 1, 1), (2, 2, 2), (1, 4, 2)]


@pytest.mark.slow
def test_same_losses_on_every_mesh_shape(tmp_path):
  from conftest import run_child  # pylint: disable=g-import-not-at-top
  out = run_child(__file__, [str(tmp_path)])
  base = out["(8, 1, 1)"]
  assert len(base) == 6 and all(np.isfinite(base))
  for mesh in MESHES[1:]:
    np.testing.assert_allclose(out[str(mesh)], base, rtol=5e-5, err_msg=str(mesh))
  # The adapters are sharded by the kernel's rules: B [r, heads*kv] splits its heads axis.
  assert out["specs"]["(1, 4, 2)"]["a"] == ["fsdp", None]
  assert out["specs"]["(1, 4, 2)"]["b"] == [None, "tensor"]


def _child(workdir):
  assert jax.device_count() == 8
  root = os.path.join(workdir, "files")
  os.makedirs(root)
  # 144 embeddings (the tokenizer has 141): rows that split over fsdp x tensor.
  paths = {"hf": hf_fixtures.save_hf_dir(hf_fixtures.make_model(
      "BertForSequenceClassification", seed=0, num_labels=3, vocab_size=144),
      os.path.join(root, "hf"))}
  for split, count in (("train", 48), ("validation", 16)):
    paths[split] = os.path.join(root, f"{split}.jsonl")
    with open(paths[split], "w") as f:
      f.write("".join(json.dumps(e) + "\n" for e in sample_pairs.examples(7, count)))
  out = {"specs": {}}
  for mesh_shape in MESHES:
    wd = os.path.join(workdir, str(mesh_shape))
    # A peak given: measuring the CPU's inside an 8-device mesh context fails when its cache
    # is cold (bert_jax/platform.py's matmul on one device; not LoRA's to fix).
    c = _local(paths, mesh_shape=mesh_shape, eval_every_steps=0, checkpoint_every_steps=100,
               peak_flops_per_device=1e11)
    train.train_and_evaluate(c, wd)
    out[str(mesh_shape)] = [r["loss"] for r in read_rows(wd) if "loss" in r]
  c = _local(paths, mesh_shape=(1, 4, 2))
  spec = Spec(task="local", head="classifier", kind="classification", max_seq_length=32,
              vocab_size=len(hf_fixtures.VOCAB), labels=LABELS)
  setup = train._setup(c, heads_lib.for_spec(spec), spec)  # pylint: disable=protected-access
  query = setup.state_sharding.params["bert"]["encoder"]["layer_0"]["attention"]["query"]
  out["specs"]["(1, 4, 2)"] = {"a": list(query["kernel_lora_a"].spec),
                               "b": list(query["kernel_lora_b"].spec)}
  sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
  _child(sys.argv[2])
