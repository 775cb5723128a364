"""Checkpoint interop: Hugging Face, original Google TF and bert_jax model dirs.

Why this shape: readers (`torch_pickle`, `tf_checkpoint`, safetensors, Orbax)
only produce tensors; `weight_names` maps Hugging Face / Google names onto the
bert_jax tree with every check, so a new format is one reader. This module
detects the format of a path, loads it into a `Pretrained`, and writes bert_jax
export dirs and Hugging Face dirs.

Decisions (the tied-decoder rule is in `weight_names`):
- Loaded parameters are float32 numpy arrays in the unrolled layout; the
  returned config has `scan_layers=False` to agree with them (`model.to_layout`
  converts).
- Outputs go to a temporary directory next to the target, renamed at the end.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

import jax
import numpy as np
import safetensors.flax
import safetensors.numpy

from bert_jax import files
from bert_jax import model as model_lib
from bert_jax.formats import tf_checkpoint
from bert_jax import tokenization
from bert_jax.formats import torch_pickle
from bert_jax import heads as heads_lib
from bert_jax.formats import model_dir
from bert_jax.formats import modernbert
from bert_jax.formats import weight_names
from bert_jax.errors import UserError
from bert_jax.model import BertConfig

from bert_jax.formats.model_dir import (  # noqa: F401  (the model-dir format's names)
    CHECKPOINT_DIR, CONFIG_FILE, PARAMS_DIR, TOKENIZER_DIR, Pretrained, save_bert_jax)


# --- Format detection and loading. ---


def _google_prefix(path: str) -> Optional[str]:
  """The checkpoint prefix of a Google dir (or of a `.../model.ckpt` prefix path)."""
  if not os.path.isdir(path):
    return path if os.path.exists(path + ".index") else None
  if not os.path.exists(os.path.join(path, "bert_config.json")):
    return None
  state_file = os.path.join(path, "checkpoint")
  if os.path.exists(state_file):
    with open(state_file, encoding="utf-8", errors="replace") as f:
      found = re.search(r'^model_checkpoint_path:\s*"(.*)"', f.read(), re.M)
    if found:
      prefix = found.group(1)
      return prefix if os.path.isabs(prefix) else os.path.join(path, prefix)
  indexes = sorted(n[:-len(".index")] for n in os.listdir(path) if n.endswith(".index"))
  if len(indexes) > 1:
    raise UserError(f"{path} holds several TF checkpoints {indexes}; pass one as {path}/<name>")
  return os.path.join(path, indexes[0]) if indexes else None


def detect_format(path: str) -> str:
  """'bert_jax' | 'bert_jax_workdir' | 'hf' | 'google', or a UserError saying what was found."""
  if not os.path.exists(path) and not os.path.exists(path + ".index"):
    raise FileNotFoundError(2, "No such model path", path)
  if os.path.isdir(path):
    names = set(os.listdir(path))
    if CONFIG_FILE in names and PARAMS_DIR in names:
      return "bert_jax"
    if CONFIG_FILE in names and CHECKPOINT_DIR in names:
      return "bert_jax_workdir"
    if "config.json" in names and names & set(_HF_WEIGHT_FILES):
      return "hf"
  if _google_prefix(path):
    return "google"
  found = sorted(os.listdir(path))[:12] if os.path.isdir(path) else ["(a file)"]
  raise UserError(
      f"{path} is not a model directory I know; found {found}. Expected a bert_jax export "
      f"({CONFIG_FILE} + {PARAMS_DIR}/), a bert_jax training workdir ({CONFIG_FILE} + "
      f"{CHECKPOINT_DIR}/), a Hugging Face dir (config.json + model.safetensors or "
      "pytorch_model.bin + vocab.txt) or a Google BERT dir (bert_config.json + "
      "bert_model.ckpt.index/.data-* + vocab.txt)")


_HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    return safetensors.numpy.load_file(path)
  except FileNotFoundError:
    raise
  except Exception as numpy_error:  # pylint: disable=broad-except  (safetensors' own types)
    try:  # bfloat16 has no plain numpy dtype: read through jax, then ml_dtypes numpy arrays
      return {k: np.asarray(v) for k, v in safetensors.flax.load_file(path).items()}
    except Exception:  # pylint: disable=broad-except
      raise UserError(f"{path} is not a readable safetensors file: {numpy_error}") from None


def _hf_config(path: str) -> tuple[BertConfig, dict]:
  config_path = os.path.join(path, "config.json")
  hf = files.read_json(config_path)
  if modernbert.is_modernbert(hf):
    return modernbert.config_from_hf(hf, config_path), hf
  if hf.get("model_type", "bert") != "bert":
    raise UserError(f"{config_path}: model_type={hf['model_type']!r}, expected 'bert' or "
                    f"{modernbert.MODEL_TYPE!r}")
  try:
    return BertConfig.from_hf_dict(hf), hf
  except (ValueError, TypeError) as exc:
    raise UserError(f"{config_path}: {exc}") from None


def _hf_task(hf: dict, heads: tuple[str, ...], num_labels: Optional[int]) -> Optional[dict]:
  """Label names (id2label) and kind of a Hugging Face classification head."""
  head = heads_lib.labelled_head(heads)
  if head is None or not num_labels:
    return None
  id2label = {int(k): str(v) for k, v in (hf.get("id2label") or {}).items()}
  labels = [id2label.get(i, f"LABEL_{i}") for i in range(num_labels)]
  return {"name": "hf", "head": head.name, "kind": head.hf_kind(hf, num_labels),
          "labels": labels, "num_labels": num_labels}


def _load_hf(path: str) -> tuple[BertConfig, dict, tuple, Optional[int], Optional[dict]]:
  config, hf = _hf_config(path)
  state, weights = {}, None
  for name in _HF_WEIGHT_FILES:
    if os.path.exists(os.path.join(path, name)):
      weights = os.path.join(path, name)
      break
  weight_files = [weights]
  if weights.endswith(".index.json"):  # sharded: {"weight_map": {tensor: shard file}}
    shards = set(files.read_json(weights).get("weight_map", {}).values())
    weight_files = [os.path.join(path, f) for f in sorted(shards)]
    if not weight_files:
      raise UserError(f"{weights} has no weight_map")
  for file in weight_files:
    state.update(_read_safetensors(file) if ".safetensors" in file
                 else torch_pickle.load_state_dict(file))
  num_labels = len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels")
  architecture = (hf.get("architectures") or [None])[0]
  if modernbert.is_modernbert(hf):
    params, heads, num_labels = modernbert.state_to_params(state, config, hf, weights)
  else:
    params, heads, num_labels = weight_names.state_to_params(
        state, config, weights, num_labels=num_labels, architecture=architecture)
  return config, params, heads, num_labels, _hf_task(hf, heads, num_labels)


def _load_google(path: str) -> tuple[BertConfig, dict, tuple, Optional[int], str]:
  prefix = _google_prefix(path)
  directory = os.path.dirname(prefix)
  config_path = os.path.join(directory, "bert_config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(2, "No bert_config.json next to the TF checkpoint", config_path)
  try:
    config = BertConfig.from_hf_dict(files.read_json(config_path))
  except (ValueError, TypeError) as exc:
    raise UserError(f"{config_path}: {exc}") from None
  state, names = weight_names.google_to_state(tf_checkpoint.load_checkpoint(prefix))
  params, heads, num_labels = weight_names.state_to_params(
      state, config, prefix + ".index", names, tf_names=True)
  return config, params, heads, num_labels, directory


def read_model_config(path: str) -> BertConfig:
  """The architecture of any model path, read from its config file only (no weights)."""
  path = os.fspath(path)
  fmt = detect_format(path)
  if fmt in ("bert_jax", "bert_jax_workdir"):
    config = model_dir._bert_jax_config(path)[0]
  elif fmt == "hf":
    config = _hf_config(path)[0]
  else:
    config_path = os.path.join(os.path.dirname(_google_prefix(path)), "bert_config.json")
    try:
      config = BertConfig.from_hf_dict(files.read_json(config_path))
    except (ValueError, TypeError) as exc:
      raise UserError(f"{config_path}: {exc}") from None
  return config.replace(scan_layers=False, dtype="float32", param_dtype="float32")


def model_tokenizer_dir(path: str) -> str:
  """The directory holding the tokenizer of any model path (no weights are read)."""
  path = os.fspath(path)
  fmt = detect_format(path)
  if fmt in ("bert_jax", "bert_jax_workdir"):
    doc = model_dir.read_model_doc(path)
    if not doc.get("tokenizer"):
      raise UserError(f"{path} has no tokenizer (its {CONFIG_FILE} names none)")
    return os.path.join(path, doc["tokenizer"])
  if fmt == "hf":
    return path
  return os.path.dirname(_google_prefix(path))


def read_model_task(path: str) -> Optional[dict]:
  """What a model dir says its head means (labels, kind), without reading weights."""
  fmt = detect_format(os.fspath(path))
  if fmt in ("bert_jax", "bert_jax_workdir"):
    return model_dir.read_model_doc(path).get("task")
  if fmt == "hf":
    _, hf = _hf_config(path)
    names = hf.get("architectures") or []
    architecture = names[0] if names else ""
    if modernbert.is_modernbert(hf):  # ModernBertFor... -> BertFor...
      architecture = architecture[len("Modern"):]
    head = {h.architecture: h.name for h in heads_lib.HEADS.values()
            if h.labelled}.get(architecture)
    num_labels = len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels")
    return _hf_task(hf, (head,), num_labels) if head else None
  return None


def from_pretrained(path: str, *, with_tokenizer: bool = True) -> Pretrained:
  """Loads any supported model directory (format detected from its files).

  Args:
    path: bert_jax export dir, bert_jax training workdir, Hugging Face dir,
      Google BERT dir (or its `.../bert_model.ckpt` prefix).
    with_tokenizer: set False to skip the tokenizer (e.g. weights-only use).

  Raises:
    UserError / FileNotFoundError with a message naming the bad file.
  """
  path = os.fspath(path)
  fmt = detect_format(path)
  tokenizer_dir, task = path, None
  if fmt in ("bert_jax", "bert_jax_workdir"):
    config, doc = model_dir._bert_jax_config(path)
    source = (os.path.join(path, PARAMS_DIR) if fmt == "bert_jax"
              else model_dir.latest_params_dir(path))
    params = model_lib.to_layout(model_dir._load_orbax_params(source), config.replace(scan_layers=False))
    params = jax.tree_util.tree_map(np.asarray, params)
    from bert_jax import lora  # pylint: disable=g-import-not-at-top
    params = lora.merged_for_reading(path, params)  # a LoRA workdir reads as its merged model
    heads = heads_lib.ordered(doc.get("heads", []))
    num_labels, task = doc.get("num_labels"), doc.get("task")
    labelled = heads_lib.labelled_head(heads)
    if labelled and num_labels is None:
      num_labels = int(params[labelled.param_key]["bias"].shape[0])
    tokenizer_dir = (os.path.join(path, doc["tokenizer"]) if doc.get("tokenizer") else None)
  elif fmt == "hf":
    config, params, heads, num_labels, task = _load_hf(path)
  else:
    config, params, heads, num_labels, tokenizer_dir = _load_google(path)
  tokenizer = None
  if with_tokenizer:
    if tokenizer_dir is None:
      raise UserError(f"{path} has no tokenizer (its {CONFIG_FILE} names none)")
    tokenizer = tokenization.load_tokenizer(tokenizer_dir)
    if tokenizer.vocab_size > config.vocab_size:
      raise UserError(f"{tokenizer_dir}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                      f"only {config.vocab_size} embeddings")
  # Params come back unrolled and float32: say so in the config, whatever the run trained with.
  config = config.replace(scan_layers=False, dtype="float32", param_dtype="float32")
  return Pretrained(config, params, tokenizer, heads, num_labels, fmt, tokenizer_dir, task)


# --- Writers. ---

def save_hf(pre: Pretrained, directory: str) -> None:
  """Hugging Face dir: config.json + model.safetensors + vocab.txt (from_pretrained-ready).

  A ModernBERT-switched model is written as transformers' ModernBERT
  (`formats/modernbert.py`); switches no transformers class has are refused.
  """
  modernbert.check_exportable(pre.config)
  if modernbert.is_modern_config(pre.config):
    state, classifier_bias = modernbert.params_to_state(pre.params, pre.config, pre.heads,
                                                        pre.num_labels)
    hf = modernbert.config_to_hf(
        pre.config, modernbert.architecture_of(modernbert.export_head(pre.heads)),
        classifier_bias, pre.tokenizer)
  else:
    state = weight_names.params_to_state(pre.params, pre.config, pre.heads, pre.num_labels)
    hf = pre.config.to_hf_dict()
    hf["architectures"] = [heads_lib.architecture(pre.heads)]
  if pre.num_labels is not None:
    labels = pre.labels or [f"LABEL_{i}" for i in range(pre.num_labels)]
    hf["id2label"] = {str(i): label for i, label in enumerate(labels)}
    hf["label2id"] = {label: i for i, label in enumerate(labels)}
    kind = (pre.task or {}).get("kind")
    if kind == "regression":
      hf["problem_type"] = "regression"
    elif kind == "classification":
      hf["problem_type"] = "single_label_classification"
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  weights = os.path.join(directory, "model.safetensors")
  safetensors.numpy.save_file(state, weights, metadata={"format": "pt"})
  os.chmod(weights, 0o666 & ~files.umask())  # safetensors writes it 0600
  model_dir._write_tokenizer(pre, directory)


def convert(input_path: str, output_dir: str, to: str, overwrite: bool = False) -> Pretrained:
  """Reads any model dir and writes it as `to` ('bert_jax' or 'hf')."""
  writers = {"bert_jax": save_bert_jax, "hf": save_hf}
  if to not in writers:
    raise UserError(f"--to={to!r}: expected one of {sorted(writers)}")
  if os.path.abspath(input_path) == os.path.abspath(output_dir):
    raise UserError("--output must differ from --input")
  pre = from_pretrained(input_path)
  files.write_dir_atomically(output_dir, lambda tmp: writers[to](pre, tmp), overwrite)
  return pre
