"""Tensor names of Hugging Face and Google BERT checkpoints <-> the bert_jax parameter tree.

Why: every checkpoint format is first reduced to one canonical form, a flat dict
of numpy arrays under Hugging Face torch names ([out, in] Linear weights). One
rename table then maps it onto the bert_jax tree and back, so the checks
(missing, unexpected, shape, tied decoder) are written once for all formats.

Decisions:
- Tied MLM decoder: bert_jax ties the decoder to the word embeddings. A file
  that carries `cls.predictions.decoder.weight` (older transformers did) is
  accepted only if it equals the word embeddings bit for bit; an untied decoder
  is an error rather than a silent change of model. Likewise the decoder bias
  must equal `cls.predictions.bias`. `params_to_state` leaves the tied copies
  out, as `save_pretrained` does.
- `position_ids` buffers, TF `global_step` and Adam slots are ignored.
- Classifier weights of Google `run_classifier.py` checkpoints (`output_weights`,
  `output_bias` at the top level) map to `classifier.*`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import ml_dtypes
import numpy as np

from bert_jax.errors import UserError
from bert_jax import heads as heads_lib
from bert_jax.heads import base as head_base
from bert_jax.model import BertConfig


# --- The rename table: canonical (HF) names <-> bert_jax tree paths. ---

@dataclasses.dataclass(frozen=True)
class Entry:
  hf: str  # without the 'bert.' prefix
  path: tuple[str, ...]
  kind: str  # copy | dense | qkv | qkv_bias | attn_out
  shape: tuple[int, ...]  # HF shape


def _table(config: BertConfig, heads: tuple[str, ...], pooler: bool,
           num_labels: Optional[int]) -> list[Entry]:
  e, m, v = config.hidden_size, config.intermediate_size, config.vocab_size
  rows: list[head_base.Row] = []
  for name, n in (("word_embeddings", v), ("position_embeddings", config.max_position_embeddings),
                  ("token_type_embeddings", config.type_vocab_size)):
    rows.append((f"embeddings.{name}.weight", ("bert", "embeddings", name, "embedding"),
                 "copy", (n, e)))
  rows += head_base.norm_rows("embeddings.LayerNorm", ("bert", "embeddings", "layer_norm"), e)
  for i in range(config.num_layers):
    hf, path = f"encoder.layer.{i}", ("bert", "encoder", f"layer_{i}")
    for name in ("query", "key", "value"):
      rows += head_base.dense_rows(f"{hf}.attention.self.{name}", path + ("attention", name), e,
                                   e, "qkv", "qkv_bias")
    rows += head_base.dense_rows(f"{hf}.attention.output.dense", path + ("attention", "output"),
                                 e, e, "attn_out")
    rows += head_base.norm_rows(f"{hf}.attention.output.LayerNorm",
                                path + ("attention_layer_norm",), e)
    rows += head_base.dense_rows(f"{hf}.intermediate.dense", path + ("intermediate",), m, e)
    rows += head_base.dense_rows(f"{hf}.output.dense", path + ("output",), e, m)
    rows += head_base.norm_rows(f"{hf}.output.LayerNorm", path + ("output_layer_norm",), e)
  if pooler:
    rows += head_base.dense_rows("pooler.dense", ("bert", "pooler"), e, e)
  for head in heads:
    rows += heads_lib.HEADS[head].rows(config, num_labels)
  return [Entry(*row) for row in rows]


_HEAD_PREFIXES = tuple(sorted({h.hf_prefix for h in heads_lib.HEADS.values()}))


def _to_jax(x: np.ndarray, kind: str, config: BertConfig) -> np.ndarray:
  h, d = config.num_heads, config.head_dim
  if kind == "copy":
    return x
  if kind == "dense":
    return np.ascontiguousarray(x.T)
  if kind == "qkv":
    return np.ascontiguousarray(x.T).reshape(x.shape[1], h, d)
  if kind == "qkv_bias":
    return x.reshape(h, d)
  if kind == "attn_out":
    return np.ascontiguousarray(x.T).reshape(h, d, x.shape[0])
  raise AssertionError(kind)


def _to_hf(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "copy":
    return x
  if kind == "qkv_bias":
    return x.reshape(-1)
  if kind == "qkv":
    x = x.reshape(x.shape[0], -1)
  elif kind == "attn_out":
    x = x.reshape(-1, x.shape[-1])
  return np.ascontiguousarray(x.T)


def _normalize(name: str) -> str:
  name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
  name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
  return name[len("bert."):] if name.startswith("bert.") else name


_HARMLESS = re.compile(r"(^|\.)position_ids$")


def state_to_params(state: dict[str, np.ndarray], config: BertConfig, source: str,
                    names: Optional[dict[str, str]] = None, num_labels: Optional[int] = None,
                    tf_names: bool = False, architecture: Optional[str] = None,
                    ) -> tuple[dict, tuple[str, ...], Optional[int]]:
  """Canonical flat dict -> (bert_jax params, heads, num_labels), with every check.

  Args:
    state: tensors under Hugging Face names (with or without 'bert.', gamma/beta ok).
    config: the model config the tensors must fit.
    source: the weight file, named in error messages.
    names: canonical name -> name in the file, for error messages (TF names).
    num_labels: expected classifier size from the model's config, if it says.
    tf_names: name missing tensors as TF variables (for Google checkpoints).
    architecture: the Hugging Face architecture named by config.json, which tells
      heads that share tensor names apart (sequence vs token classifier).
  """
  names = dict(names or {})
  flat: dict[str, np.ndarray] = {}
  for key, value in state.items():
    canonical = _normalize(key)
    names.setdefault(canonical, names.get(key, key))
    flat[canonical] = value
  heads = heads_lib.heads_in_state(flat, architecture)
  tied = {}
  for extra, twin in (("cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"),
                      ("cls.predictions.decoder.bias", "cls.predictions.bias")):
    if extra in flat:
      tied[extra] = flat.pop(extra)
      if twin not in flat and extra.endswith("bias"):
        flat[twin] = tied[extra]
      elif twin in flat and not (tied[extra].shape == flat[twin].shape
                                 and np.array_equal(tied[extra], flat[twin])):
        raise UserError(f"{source}: {names[extra]} differs from {names.get(twin, twin)}: an untied "
                        "MLM decoder is not supported (bert_jax ties it to the word embeddings)")
  labelled = heads_lib.labelled_head(heads)
  weight = labelled and labelled.hf_prefix + "weight"
  if labelled is not None and weight in flat:
    found = flat[weight].shape[0]
    if num_labels is not None and num_labels != found:
      raise UserError(f"{source}: {weight} has {found} rows but the config says "
                      f"num_labels={num_labels}")
    num_labels = found
  else:
    num_labels = None
  pooler = any(k.startswith("pooler.") for k in flat) or heads_lib.uses_pooler(heads)
  table = _table(config, heads, pooler, num_labels)
  prefix = "bert." if any(k.startswith("bert.") for k in state) else ""

  def shown(name):
    name = name if name.startswith(_HEAD_PREFIXES) else prefix + name
    return _tf_name(name) if tf_names else name

  params = build_params(flat, table, config, source, names, shown,
                        f"a BERT with {config.num_layers} layers and heads {list(heads)}")
  return params, heads, num_labels


def build_params(flat: dict[str, np.ndarray], table: list[Entry], config: BertConfig,
                 source: str, names: dict[str, str], shown, described: str) -> dict:
  """The bert_jax tree of a canonical flat dict, after every check: missing and unexpected
  tensors (named by `shown(canonical)` and `names`), shapes and dtypes."""
  known = {entry.hf for entry in table}
  missing = list(dict.fromkeys(shown(entry.hf) for entry in table if entry.hf not in flat))
  extra = sorted(names.get(k, k) for k in flat if k not in known and not _HARMLESS.search(k))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"missing tensors {missing[:20]}" + (" ..." if len(missing) > 20 else ""))
    if extra:
      parts.append(f"unexpected tensors {extra[:20]}" + (" ..." if len(extra) > 20 else ""))
    raise UserError(f"{source} does not match {described}: " + "; ".join(parts))
  params: dict = {}
  for entry in table:
    x = flat[entry.hf]
    name = names.get(entry.hf, entry.hf)
    if tuple(x.shape) != entry.shape:
      raise UserError(f"{source}: tensor {name} has shape {list(x.shape)}, expected "
                      f"{list(entry.shape)} from the model config")
    if not (np.issubdtype(x.dtype, np.floating) or x.dtype == ml_dtypes.bfloat16):
      raise UserError(f"{source}: tensor {name} has dtype {x.dtype}, expected floats")
    node = params
    for key in entry.path[:-1]:
      node = node.setdefault(key, {})
    node[entry.path[-1]] = _to_jax(np.asarray(x, np.float32), entry.kind, config)
  return params


def state_from_params(params: dict, table: list[Entry], shown) -> dict[str, np.ndarray]:
  """The flat state dict of a bert_jax tree under `shown(canonical name)`."""
  state = {}
  for entry in table:
    node = params
    for key in entry.path:
      node = node[key]
    state[shown(entry.hf)] = _to_hf(np.asarray(node), entry.kind)
  return state


def params_to_state(params: dict, config: BertConfig, heads: tuple[str, ...],
                    num_labels: Optional[int] = None) -> dict[str, np.ndarray]:
  """bert_jax params (unrolled) -> Hugging Face state dict (prefixed when heads exist)."""
  pooler = "pooler" in params.get("bert", {})
  prefix = "bert." if heads else ""
  return state_from_params(
      params, _table(config, heads, pooler, num_labels),
      lambda name: name if name.startswith(_HEAD_PREFIXES) else prefix + name)


# --- Google (TF) names -> canonical names, as transformers' load_tf_weights_in_bert. ---

_TF_SPECIAL = {"cls/predictions/output_bias": "cls.predictions.bias",
               "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
               "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
               "output_weights": "classifier.weight", "output_bias": "classifier.bias"}


def _tf_name(canonical: str) -> str:
  """The Google TF variable name of a canonical (HF) name, for error messages."""
  inverse = {v: k for k, v in _TF_SPECIAL.items()}
  if canonical in inverse:
    return inverse[canonical]
  parts = canonical.split(".")
  parts = [f"layer_{parts[i + 1]}" if p == "layer" else p for i, p in enumerate(parts)
           if not (i and parts[i - 1] == "layer")]
  if len(parts) > 1 and parts[-2] == "LayerNorm":
    parts[-1] = "gamma" if parts[-1] == "weight" else "beta"
  elif len(parts) > 1 and parts[-2].endswith("_embeddings"):
    parts.pop()
  elif parts[-1] == "weight":
    parts[-1] = "kernel"
  return "/".join(["bert"] + parts if parts[0] not in ("bert", "cls") else parts)


def google_to_state(tf_vars: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """TF variables -> (canonical flat dict, canonical name -> TF name)."""
  state, names = {}, {}
  for name, x in tf_vars.items():
    parts = name.split("/")
    if name == "global_step" or any(p in ("adam_m", "adam_v", "AdamWeightDecayOptimizer",
                                          "AdamWeightDecayOptimizer_1") for p in parts):
      continue
    if name in _TF_SPECIAL:
      canonical = _TF_SPECIAL[name]
    else:
      parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in parts]
      last = parts[-1]
      if last == "kernel":
        parts[-1], x = "weight", x.T  # a view: _to_jax transposes it back without a copy
      elif last == "gamma":
        parts[-1] = "weight"
      elif last == "beta":
        parts[-1] = "bias"
      elif last.endswith("_embeddings"):
        parts.append("weight")
      canonical = ".".join(parts)
    state[canonical], names[_normalize(canonical)] = x, name
  return state, names
