"""Reference checkpoints for the converter and inference tests (torch + transformers).

Why: parity must be checked against files written by the real libraries, not
against our own writer. This module builds tiny random-weight transformers
models and saves them the ways that exist in the wild (safetensors, zip and
legacy `torch.save` pickles, old gamma/beta names). TensorFlow is not
installed, so Google checkpoints are written by a small TF V2 bundle writer
that follows the published on-disk format (LevelDB table + data shard), and a
re-implementation of transformers v4's `load_tf_weights_in_bert` (removed in
v5) maps TF names onto a torch model independently of `bert_jax.formats.convert`.
"""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import torch
import transformers

WORDS = ("the a of and to in is was it for on with as by he she they we you i at from this "
         "that be are have has had not but or an his her their one two three new first time "
         "year people way day man world life hand part child eye woman place work week case "
         "point government company number group problem fact ibm love me bert model text "
         "language learn read write paris france capital city").split()
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
         + list("abcdefghijklmnopqrstuvwxyz.,!?'")
         + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##s", "##ing", "##ed"])
VOCAB = list(dict.fromkeys(VOCAB))
ARCHS = ("BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
         "BertForTokenClassification", "BertForQuestionAnswering")


def tiny_config(**overrides) -> transformers.BertConfig:
  kwargs = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  kwargs.update(overrides)
  return transformers.BertConfig(**kwargs)


def make_model(arch: str = "BertForPreTraining", seed: int = 0, **config_overrides):
  """A randomly initialised (larger than default init, so outputs are not ~0) eval model."""
  torch.manual_seed(seed)
  model = getattr(transformers, arch)(tiny_config(**config_overrides))
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if "LayerNorm.weight" in name:
        p.copy_(1.0 + 0.1 * noise)
      elif p.ndim == 1:
        p.copy_(0.1 * noise)
      else:
        p.copy_(0.2 * noise)
  return model.eval()


def write_vocab(directory: str) -> None:
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(VOCAB) + "\n")


def save_hf_dir(model, directory: str, serialization: str = "safetensors",
                old_names: bool = False) -> str:
  """Writes config.json + weights + vocab.txt.

  serialization: 'safetensors' (save_pretrained), 'bin' (zip `torch.save` of the
  full state dict, as transformers v4 `safe_serialization=False` did: tied decoder
  included) or 'legacy_bin' (pre-1.6 non-zip pickle).
  """
  model.save_pretrained(directory)
  if serialization != "safetensors" or old_names:
    os.remove(os.path.join(directory, "model.safetensors"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if old_names:
      state = {re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma",
                      re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", k)): v for k, v in state.items()}
      prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
      state[prefix + "embeddings.position_ids"] = torch.arange(
          model.config.max_position_embeddings)[None]
    torch.save(state, os.path.join(directory, "pytorch_model.bin"),
               _use_new_zipfile_serialization=serialization != "legacy_bin")
  write_vocab(directory)
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)
  return directory


# --- TF V2 checkpoint writer (tensorflow/core/util/tensor_bundle + lib/io/table format). ---

def _crc_table() -> list[int]:
  table = []
  for n in range(256):
    for _ in range(8):
      n = (n >> 1) ^ (0x82F63B78 & -(n & 1))
    table.append(n)
  return table


_CRC_TABLE = _crc_table()


def _crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire: int, payload) -> bytes:
  tag = _varint(number << 3 | wire)
  if wire == 0:
    return tag + _varint(payload)
  if wire == 5:
    return tag + struct.pack("<I", payload)
  return tag + _varint(len(payload)) + payload


class _BlockBuilder:
  """LevelDB block: prefix-compressed entries, a restart point every `interval` entries."""

  def __init__(self, interval: int = 4):
    self.interval, self.buf, self.restarts, self.count, self.last = interval, bytearray(), [0], 0, b""

  def add(self, key: bytes, value: bytes) -> None:
    shared = 0
    if self.count % self.interval == 0 and self.count:
      self.restarts.append(len(self.buf))
    elif self.count:
      while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
        shared += 1
    self.buf += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
    self.buf += key[shared:] + value
    self.last, self.count = key, self.count + 1

  def finish(self) -> bytes:
    return bytes(self.buf) + b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack(
        "<I", len(self.restarts))


def write_tf_checkpoint(prefix: str, tensors: dict[str, np.ndarray], block_size: int = 256) -> None:
  """`prefix.index` + `prefix.data-00000-of-00001` as TF's BundleWriter lays them out."""
  data, entries = bytearray(), {}
  for name in sorted(tensors):
    x = np.array(tensors[name], order="C")
    dtype = {np.dtype(np.float32): 1, np.dtype(np.int64): 9}[x.dtype]
    raw = x.astype(x.dtype.newbyteorder("<")).tobytes()
    shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in x.shape)
    entries[name.encode()] = (_field(1, 0, dtype) + _field(2, 2, shape) + _field(4, 0, len(data))
                              + _field(5, 0, len(raw)) + _field(6, 5, _masked_crc(raw)))
    data += raw
  with open(f"{prefix}.data-00000-of-00001", "wb") as f:
    f.write(bytes(data))
  header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))  # num_shards=1, version{producer=1}
  items = [(b"", header)] + sorted(entries.items())
  out, index = bytearray(), _BlockBuilder(interval=1)

  def flush(block: _BlockBuilder) -> bytes:
    contents = block.finish()
    handle = _varint(len(out)) + _varint(len(contents))
    out.extend(contents + b"\x00" + struct.pack("<I", _masked_crc(contents + b"\x00")))
    return handle

  block = _BlockBuilder()
  for i, (key, value) in enumerate(items):
    block.add(key, value)
    if len(block.buf) >= block_size or i == len(items) - 1:
      index.add(key, flush(block))  # last key of the block is a valid separator
      block = _BlockBuilder()
  meta_handle = flush(_BlockBuilder())
  index_handle = flush(index)
  footer = meta_handle + index_handle
  out += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
  with open(f"{prefix}.index", "wb") as f:
    f.write(bytes(out))


def hf_to_google_vars(model) -> dict[str, np.ndarray]:
  """TF variable names as Google's modeling.py / run_pretraining.py create them."""
  out = {}
  for name, p in model.state_dict().items():
    x = p.detach().numpy().copy()
    if not name.startswith(("bert.", "cls.")):
      name = "bert." + name
    if "position_ids" in name or name.startswith("cls.predictions.decoder"):
      continue
    if name == "cls.predictions.bias":
      out["cls/predictions/output_bias"] = x
      continue
    if name.startswith("cls.seq_relationship."):
      out["cls/seq_relationship/output_" + ("weights" if name.endswith("weight") else "bias")] = x
      continue
    parts = name.split(".")
    parts = [f"layer_{parts[i + 1]}" if p == "layer" else p for i, p in enumerate(parts)
             if not (i and parts[i - 1] == "layer")]
    if parts[-2] == "LayerNorm":
      parts[-1] = "gamma" if parts[-1] == "weight" else "beta"
    elif parts[-2].endswith("_embeddings"):
      parts = parts[:-1]
    elif parts[-1] == "weight":
      parts[-1], x = "kernel", np.ascontiguousarray(x.T)
    out["/".join(parts)] = x
  out["global_step"] = np.array(1000, np.int64)
  return out


def save_google_dir(model, directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  hf = model.config
  config = {k: getattr(hf, k) for k in (
      "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
      "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
      "num_hidden_layers", "type_vocab_size", "vocab_size")}
  with open(os.path.join(directory, "bert_config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f)
  write_tf_checkpoint(os.path.join(directory, "bert_model.ckpt"), hf_to_google_vars(model))
  write_vocab(directory)
  return directory


def reference_load_tf_weights_in_bert(model, tensors: dict[str, np.ndarray]):
  """transformers v4 `load_tf_weights_in_bert`'s name walk, over already-read tensors."""
  for full_name, array in tensors.items():
    name = full_name.split("/")
    if any(n in ("adam_v", "adam_m", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1",
                 "global_step") for n in name):
      continue
    pointer = model
    for m_name in name:
      scope = re.split(r"_(\d+)", m_name) if re.fullmatch(r"[A-Za-z]+_\d+", m_name) else [m_name]
      if scope[0] in ("kernel", "gamma", "output_weights"):
        pointer = getattr(pointer, "weight")
      elif scope[0] in ("output_bias", "beta"):
        pointer = getattr(pointer, "bias")
      else:
        pointer = getattr(pointer, scope[0])
      if len(scope) >= 2:
        pointer = pointer[int(scope[1])]
    if m_name[-11:] == "_embeddings":
      pointer = getattr(pointer, "weight")
    elif m_name == "kernel":
      array = np.transpose(array)
    assert tuple(pointer.shape) == array.shape, (full_name, pointer.shape, array.shape)
    pointer.data = torch.from_numpy(np.ascontiguousarray(array))
  return model


def torch_outputs(model, ids, types, mask) -> dict[str, np.ndarray]:
  """sequence/pooled outputs and head logits of a transformers model, as numpy."""
  args = dict(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
              attention_mask=torch.tensor(mask))
  with torch.no_grad():
    base = model if isinstance(model, transformers.BertModel) else model.bert
    out = base(**args, output_hidden_states=True)
    result = {"sequence_output": out.last_hidden_state.numpy(),
              "hidden_states": [h.numpy() for h in out.hidden_states]}
    if out.pooler_output is not None:
      result["pooled_output"] = out.pooler_output.numpy()
    if isinstance(model, transformers.BertForPreTraining):
      full = model(**args)
      result["mlm_logits"] = full.prediction_logits.numpy()
      result["nsp_logits"] = full.seq_relationship_logits.numpy()
    elif isinstance(model, transformers.BertForMaskedLM):
      result["mlm_logits"] = model(**args).logits.numpy()
    elif isinstance(model, (transformers.BertForSequenceClassification,
                            transformers.BertForTokenClassification)):
      result["logits"] = model(**args).logits.numpy()
    elif isinstance(model, transformers.BertForQuestionAnswering):
      full = model(**args)
      result["start_logits"] = full.start_logits.numpy()
      result["end_logits"] = full.end_logits.numpy()
  return result
