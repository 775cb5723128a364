"""bert_jax.formats.convert against files written by transformers/torch, and the convert launcher."""

import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy
import torch
import transformers

from bert_jax.formats import convert
from bert_jax import model as model_lib
from bert_jax.heads import classifier, pretraining, qa, token_classifier
from bert_jax.formats import tf_checkpoint
from bert_jax.errors import UserError

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
# Filled by the parity tests, printed at the end (pytest -s) for the report.
PARITY: dict[str, dict[str, float]] = {}

IDS = np.array([[2, 10, 11, 12, 13, 4, 14, 3, 20, 21, 22, 3],
                [2, 30, 31, 4, 32, 33, 3, 40, 41, 3, 0, 0],
                [2, 50, 51, 52, 3, 0, 0, 0, 0, 0, 0, 0]], np.int32)
TYPES = np.array([[0] * 8 + [1] * 4, [0] * 7 + [1] * 3 + [0] * 2, [0] * 12], np.int32)
MASK = (IDS != 0).astype(np.int32)
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """Tiny random models saved by transformers/torch in every layout we read."""
  root = tmp_path_factory.mktemp("hf")
  models, dirs = {}, {}
  for arch, serialization, old in [("BertForPreTraining", "safetensors", False),
                                   ("BertForPreTraining", "bin", False),
                                   ("BertForPreTraining", "legacy_bin", True),
                                   ("BertForMaskedLM", "safetensors", False),
                                   ("BertForSequenceClassification", "bin", False),
                                   ("BertForTokenClassification", "safetensors", False),
                                   ("BertForQuestionAnswering", "bin", False),
                                   ("BertModel", "safetensors", False)]:
    key = f"{arch}-{serialization}" + ("-old_names" if old else "")
    kwargs = {"num_labels": 3} if arch == "BertForSequenceClassification" else {}
    if arch == "BertForTokenClassification":
      kwargs = {"id2label": dict(enumerate(TAGS))}
    models[key] = hf_fixtures.make_model(arch, seed=len(dirs), **kwargs)
    dirs[key] = hf_fixtures.save_hf_dir(models[key], str(root / key), serialization, old)
  return models, dirs


def jax_outputs(pre: convert.Pretrained) -> dict:
  cfg, params = pre.config, {"params": pre.params}
  sequence = model_lib.BertModel(cfg, add_pooling_layer=False).apply(
      {"params": pre.params["bert"]}, IDS, TYPES, MASK).sequence_output
  if "token_classifier" in pre.heads:
    logits = token_classifier.BertForTokenClassification(cfg, pre.num_labels).apply(
        params, IDS, TYPES, MASK)
    return {"logits": logits, "sequence_output": sequence}
  if "qa" in pre.heads:
    return {**qa.BertForQuestionAnswering(cfg).apply(params, IDS, TYPES, MASK),
            "sequence_output": sequence}
  if "classifier" in pre.heads:
    logits = classifier.BertForSequenceClassification(cfg, pre.num_labels).apply(
        params, IDS, TYPES, MASK)
    out = model_lib.BertModel(cfg).apply({"params": pre.params["bert"]}, IDS, TYPES, MASK)
    return {"logits": logits, "sequence_output": out.sequence_output,
            "pooled_output": out.pooled_output}
  if "mlm" in pre.heads:
    return pretraining.BertForPreTraining(cfg, with_nsp="nsp" in pre.heads).apply(
        params, IDS, TYPES, MASK)
  out = model_lib.BertModel(cfg).apply({"params": pre.params["bert"]}, IDS, TYPES, MASK)
  return {"sequence_output": out.sequence_output, "pooled_output": out.pooled_output}


def assert_parity(name: str, pre: convert.Pretrained, torch_model) -> None:
  want = hf_fixtures.torch_outputs(torch_model, IDS, TYPES, MASK)
  got = jax_outputs(pre)
  keys = [k for k in ("sequence_output", "pooled_output", "mlm_logits", "nsp_logits", "logits",
                      "start_logits", "end_logits") if k in want]
  assert keys and all(got.get(k) is not None for k in keys), (keys, list(got))
  diffs = {k: float(np.max(np.abs(np.asarray(got[k]) - want[k]))) for k in keys}
  PARITY[name] = diffs
  for k, diff in diffs.items():
    assert diff < TOL, (name, k, diff)
    assert np.abs(want[k]).max() > 0.1, f"{k} is too close to 0 to test anything"


@pytest.mark.parametrize("key", ["BertForPreTraining-safetensors", "BertForPreTraining-bin",
                                 "BertForPreTraining-legacy_bin-old_names",
                                 "BertForMaskedLM-safetensors",
                                 "BertForSequenceClassification-bin",
                                 "BertForTokenClassification-safetensors",
                                 "BertForQuestionAnswering-bin", "BertModel-safetensors"])
def test_hf_parity(hf_dirs, key):
  models, dirs = hf_dirs
  pre = convert.from_pretrained(dirs[key])
  expected_heads = {"BertForPreTraining": ("mlm", "nsp"), "BertForMaskedLM": ("mlm",),
                    "BertForSequenceClassification": ("classifier",),
                    "BertForTokenClassification": ("token_classifier",),
                    "BertForQuestionAnswering": ("qa",), "BertModel": ()}
  assert pre.format == "hf" and pre.heads == expected_heads[key.split("-")[0]]
  assert pre.tokenizer.vocab_size == len(hf_fixtures.VOCAB)
  if "classifier" in pre.heads:
    assert pre.num_labels == 3
  if "token_classifier" in pre.heads:
    assert pre.num_labels == len(TAGS) and pre.labels == TAGS
    assert pre.task["kind"] == "tagging"
  assert_parity(key, pre, models[key])


def test_google_dir_matches_transformers_naming(hf_dirs, tmp_path):
  models, _ = hf_dirs
  source = models["BertForPreTraining-safetensors"]
  directory = hf_fixtures.save_google_dir(source, str(tmp_path / "uncased_L-2_H-32_A-4"))
  # transformers v4's TF-name walk, fed by our pure TF reader, builds a fresh torch model.
  tensors = tf_checkpoint.load_checkpoint(os.path.join(directory, "bert_model.ckpt"))
  reference = hf_fixtures.reference_load_tf_weights_in_bert(
      hf_fixtures.make_model("BertForPreTraining", seed=99), tensors)
  for (name, a), (_, b) in zip(source.state_dict().items(), reference.state_dict().items()):
    assert torch.equal(a, b), name
  for path in (directory, os.path.join(directory, "bert_model.ckpt")):
    pre = convert.from_pretrained(path)
    assert pre.format == "google" and pre.heads == ("mlm", "nsp")
    assert pre.tokenizer.lowercase
    assert_parity("google", pre, reference)


def test_reads_a_checkpoint_written_by_tensorflow():
  # tests/data/google_bert_tf was written by TensorFlow's own Saver (see the script beside it):
  # the reader must give back exactly the tensors that went in, slots and step included.
  directory = os.path.join(os.path.dirname(__file__), "data", "google_bert_tf")
  source = hf_fixtures.make_model("BertForPreTraining", seed=7)
  expected = hf_fixtures.hf_to_google_vars(source)
  tensors = tf_checkpoint.load_checkpoint(os.path.join(directory, "bert_model.ckpt"))
  assert {n for n in tensors if "/adam_" not in n} == set(expected)
  for name, value in expected.items():
    assert tensors[name].dtype == value.dtype and np.array_equal(tensors[name], value), name
  pre = convert.from_pretrained(directory)
  assert pre.format == "google" and pre.heads == ("mlm", "nsp")
  assert_parity("google-tf-written", pre, source)


def test_hf_round_trip_is_bit_exact(hf_dirs, tmp_path):
  models, dirs = hf_dirs
  for key in ("BertForPreTraining-safetensors", "BertForMaskedLM-safetensors",
              "BertForSequenceClassification-bin", "BertForTokenClassification-safetensors",
              "BertForQuestionAnswering-bin", "BertModel-safetensors"):
    exported, back = str(tmp_path / key / "bert_jax"), str(tmp_path / key / "hf")
    convert.convert(dirs[key], exported, "bert_jax")
    assert convert.detect_format(exported) == "bert_jax"
    convert.convert(exported, back, "hf")
    original = {k: v.detach().numpy() for k, v in models[key].state_dict().items()
                if not k.startswith("cls.predictions.decoder")}
    written = safetensors.numpy.load_file(os.path.join(back, "model.safetensors"))
    assert sorted(written) == sorted(original), key
    for name, value in original.items():
      assert written[name].dtype == value.dtype and np.array_equal(written[name], value), name
    arch = json.load(open(os.path.join(back, "config.json")))["architectures"][0]
    assert arch == key.split("-")[0]
    reloaded = getattr(transformers, arch).from_pretrained(back).eval()
    want = hf_fixtures.torch_outputs(models[key], IDS, TYPES, MASK)
    got = hf_fixtures.torch_outputs(reloaded, IDS, TYPES, MASK)
    for k in want:
      if k != "hidden_states":
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{key} {k}")
    with open(os.path.join(back, "vocab.txt"), encoding="utf-8") as f:
      assert f.read().split("\n")[:-1] == hf_fixtures.VOCAB
    if arch == "BertForTokenClassification":  # label names survive both conversions
      assert reloaded.config.id2label == dict(enumerate(TAGS))


def test_training_workdir_latest_step_scanned(hf_dirs, tmp_path):
  _, dirs = hf_dirs
  pre = convert.from_pretrained(dirs["BertForPreTraining-safetensors"])
  workdir = tmp_path / "run"
  config = pre.config.replace(scan_layers=True)
  scanned = jax_tree_numpy(model_lib.to_layout(pre.params, config))
  manager = ocp.CheckpointManager(str(workdir / "checkpoints"),
                                  item_names=("params",))
  zeros = jax_tree_numpy(scanned, scale=0.0)
  manager.save(10, args=ocp.args.Composite(params=ocp.args.StandardSave(zeros)))
  manager.save(20, args=ocp.args.Composite(params=ocp.args.StandardSave(scanned)))
  manager.wait_until_finished()
  manager.close()
  pre.tokenizer.save(str(workdir / "tokenizer"))
  doc = {"format": "bert_jax", "model": {**config.__dict__}, "heads": ["mlm", "nsp"],
         "num_labels": None, "tokenizer": "tokenizer"}
  (workdir / "bert_jax_config.json").write_text(json.dumps(doc))
  loaded = convert.from_pretrained(str(workdir))
  assert loaded.format == "bert_jax_workdir" and not loaded.config.scan_layers
  flat_a = dict(_leaves(loaded.params))
  flat_b = dict(_leaves(pre.params))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def jax_tree_numpy(tree, scale=1.0):
  if isinstance(tree, dict):
    return {k: jax_tree_numpy(v, scale) for k, v in tree.items()}
  return np.asarray(jnp.asarray(tree) * scale, np.float32)


def _leaves(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}/")
    else:
      yield prefix + k, v


# --- Errors: each names the culprit. ---

def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def _edit_safetensors(directory, edit):
  path = os.path.join(directory, "model.safetensors")
  state = safetensors.numpy.load_file(path)
  edit(state)
  safetensors.numpy.save_file(state, path)


def test_errors_missing_extra_shape(hf_dirs, tmp_path):
  _, dirs = hf_dirs
  src = dirs["BertForPreTraining-safetensors"]
  missing = _copy(src, tmp_path / "missing")
  _edit_safetensors(missing, lambda s: s.pop("bert.encoder.layer.1.output.dense.bias"))
  with pytest.raises(UserError, match=r"missing tensors \['bert.encoder.layer.1.output.dense.bias'\]"):
    convert.from_pretrained(missing)
  extra = _copy(src, tmp_path / "extra")
  _edit_safetensors(extra, lambda s: s.update({
      "bert.encoder.layer.2.foo.weight": np.zeros(3, np.float32),
      "bert.embeddings.position_ids": np.arange(64)[None]}))
  with pytest.raises(UserError, match=r"unexpected tensors \['bert.encoder.layer.2.foo.weight'\]"):
    convert.from_pretrained(extra)
  shape = _copy(src, tmp_path / "shape")
  _edit_safetensors(shape, lambda s: s.update(
      {"bert.pooler.dense.weight": np.zeros((32, 31), np.float32)}))
  with pytest.raises(UserError,
                     match=r"bert.pooler.dense.weight has shape \[32, 31\], expected \[32, 32\]"):
    convert.from_pretrained(shape)


def test_errors_tied_decoder(hf_dirs, tmp_path):
  _, dirs = hf_dirs
  untied = _copy(dirs["BertForPreTraining-bin"], tmp_path / "untied")
  path = os.path.join(untied, "pytorch_model.bin")
  state = torch.load(path, weights_only=True)
  assert "cls.predictions.decoder.weight" in state  # the tied copy is accepted when equal
  state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
  torch.save(state, path)
  with pytest.raises(UserError, match="cls.predictions.decoder.weight differs from "
                     "bert.embeddings.word_embeddings.weight"):
    convert.from_pretrained(untied)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "bert_model.ckpt.index"])
def test_errors_corrupt_weight_file(hf_dirs, tmp_path, name):
  models, dirs = hf_dirs
  if name == "bert_model.ckpt.index":
    directory = hf_fixtures.save_google_dir(models["BertForPreTraining-bin"], str(tmp_path / "g"))
  else:
    directory = _copy(dirs["BertForPreTraining-" + ("bin" if name.endswith("bin") else "safetensors")],
                      tmp_path / "c")
  path = os.path.join(directory, name)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises((UserError, ValueError), match=path.replace(".", r"\.")):
    convert.from_pretrained(directory)


def test_errors_unknown_format_and_existing_output(hf_dirs, tmp_path):
  _, dirs = hf_dirs
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "notes.txt").write_text("hi")
  with pytest.raises(UserError, match=r"found \['notes.txt'\]. Expected a bert_jax export"):
    convert.from_pretrained(str(tmp_path / "junk"))
  with pytest.raises(UserError, match="already exists"):
    convert.convert(dirs["BertModel-safetensors"], str(tmp_path / "junk"), "hf")
  convert.convert(dirs["BertModel-safetensors"], str(tmp_path / "junk"), "hf", overwrite=True)
  assert convert.detect_format(str(tmp_path / "junk")) == "hf"
  assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def _launch(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "convert.py"), *args],
                        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_launcher(hf_dirs, tmp_path):
  _, dirs = hf_dirs
  out = str(tmp_path / "exported")
  ok = _launch(f"--input={dirs['BertForMaskedLM-safetensors']}", f"--output={out}", "--to=bert_jax")
  assert ok.returncode == 0, ok.stderr
  assert convert.detect_format(out) == "bert_jax"
  for args, message in [
      ([f"--input={dirs['BertModel-safetensors']}", f"--output={out}", "--to=hf"], "already exists"),
      ([f"--input={tmp_path / 'nope'}", f"--output={tmp_path / 'x'}", "--to=hf"], "No such"),
      ([f"--input={dirs['BertModel-safetensors']}", f"--output={tmp_path / 'x'}", "--to=onnx"],
       "--to")]:
    bad = _launch(*args)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and lines[-1].startswith("error:") and message in lines[-1], bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.fixture(scope="module", autouse=True)
def _print_parity():
  """Prints the measured max abs differences after this file's tests (run with -s)."""
  yield
  for name, diffs in PARITY.items():
    print(f"parity {name}: " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))


def test_sharded_bfloat16_safetensors(hf_dirs, tmp_path):
  models, _ = hf_dirs
  model = hf_fixtures.make_model("BertForMaskedLM", seed=7).to(torch.bfloat16)
  model.save_pretrained(str(tmp_path), max_shard_size="20KB")
  hf_fixtures.write_vocab(str(tmp_path))
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  pre = convert.from_pretrained(str(tmp_path))
  assert pre.heads == ("mlm",)
  np.testing.assert_array_equal(pre.params["mlm"]["output_bias"],
                                model.cls.predictions.bias.float().detach().numpy())
  np.testing.assert_array_equal(pre.params["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                model.bert.embeddings.word_embeddings.weight.float().detach().numpy())


def test_google_missing_tensor_named_as_tf_variable(hf_dirs, tmp_path):
  models, _ = hf_dirs
  tensors = hf_fixtures.hf_to_google_vars(models["BertForPreTraining-bin"])
  del tensors["bert/encoder/layer_1/attention/self/key/kernel"]
  directory = hf_fixtures.save_google_dir(models["BertForPreTraining-bin"], str(tmp_path))
  hf_fixtures.write_tf_checkpoint(os.path.join(directory, "bert_model.ckpt"), tensors)
  with pytest.raises(UserError,
                     match=r"missing tensors \['bert/encoder/layer_1/attention/self/key/kernel'\]"):
    convert.from_pretrained(directory)


def test_hf_export_files_share_one_mode(hf_dirs, tmp_path):
  """model.safetensors is readable like the export's other files (safetensors writes 0600)."""
  _, dirs = hf_dirs
  out = tmp_path / "hf"
  convert.convert(dirs["BertModel-safetensors"], str(out), "hf")
  modes = {name: os.stat(out / name).st_mode & 0o777 for name in os.listdir(out)}
  assert len(set(modes.values())) == 1, modes
