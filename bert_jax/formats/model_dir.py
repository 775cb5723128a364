"""The bert_jax model-directory format: read, write, and `Pretrained`, what every tool loads.

Why one module: training workdirs, `best/` exports and `convert.py --to=bert_jax`
all write the same layout, and every model path is read back through it:
- `bert_jax_config.json`: the architecture (`BertConfig`), the heads, num_labels,
  the tokenizer's subdir and the `task` record (the run's frozen `Spec`: what a
  fine-tuned head means: labels, kind, lengths), so predict needs nothing else;
- `params/` (an export) or `checkpoints/<step>/params` (a workdir): Orbax;
- `tokenizer/`.
Every output goes to a temporary name first and is renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Optional, Sequence

import jax
import orbax.checkpoint as ocp

from bert_jax import files
from bert_jax import tokenization
from bert_jax.checkpoint import CHECKPOINT_DIR, PARAMS_ITEM
from bert_jax.errors import UserError
from bert_jax.model import BertConfig

CONFIG_FILE = "bert_jax_config.json"
TOKENIZER_DIR = "tokenizer"
PARAMS_DIR = PARAMS_ITEM


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A loaded model: what every consumer (fine-tuning, inference, export) needs."""

  config: BertConfig
  params: dict  # unrolled bert_jax tree of float32 numpy arrays, heads included
  tokenizer: Optional[tokenization.Tokenizer]
  heads: tuple[str, ...]  # names of bert_jax.heads.HEADS, in registry order
  num_labels: Optional[int] = None
  format: str = ""  # 'bert_jax' | 'bert_jax_workdir' | 'hf' | 'google'
  tokenizer_dir: Optional[str] = None
  # What a fine-tuned head means: {'name', 'kind', 'labels', 'max_seq_length', ...}
  # (bert_jax dirs record it; Hugging Face dirs give their id2label).
  task: Optional[dict] = None

  @property
  def labels(self) -> Optional[list[str]]:
    return (self.task or {}).get("labels")


def write_model_doc(directory: str, config: BertConfig, heads: Sequence[str],
                    num_labels: Optional[int], tokenizer: Optional[str],
                    task: Optional[dict] = None) -> None:
  """DIRECTORY/bert_jax_config.json: what `convert.from_pretrained` needs to rebuild a model.

  `task` records what a fine-tuned head means (task name, kind, label names,
  max_seq_length), so predict needs nothing but the model dir.
  """
  doc = {"format": "bert_jax", "model": dataclasses.asdict(config), "heads": list(heads),
         "num_labels": num_labels, "tokenizer": tokenizer, "task": task}
  data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
  files.write_file_atomically(os.path.join(directory, CONFIG_FILE), lambda f: f.write(data))


def read_model_doc(directory: str) -> dict:
  """DIRECTORY/bert_jax_config.json, checked to be a bert_jax model doc."""
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as exc:
    raise UserError(f"{path} is not valid JSON: {exc}") from None
  if not isinstance(doc, dict) or doc.get("format") != "bert_jax" or "model" not in doc:
    raise UserError(f"{path}: expected format 'bert_jax' and a 'model' key")
  return doc


def latest_params_dir(workdir: str) -> str:
  """WORKDIR/checkpoints/<largest finished step>/params."""
  root = os.path.join(workdir, CHECKPOINT_DIR)
  steps = sorted(int(n) for n in os.listdir(root) if n.isdigit())
  if not steps:
    raise UserError(f"{root} holds no finished checkpoint")
  return os.path.join(root, str(steps[-1]), PARAMS_ITEM)


# BertConfig fields that fix the parameter shapes (and, for scan_layers, the tree layout).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "scan_layers")


def check_resume_compatible(workdir: str, config: BertConfig, heads: tuple[str, ...],
                            spec: Any = None) -> None:
  """Raises UserError when WORKDIR's earlier run trained a differently shaped model, or on
  other labels (the run's frozen `spec`, compared with the saved task record).

  Compares `config` with WORKDIR/bert_jax_config.json (written by that run); a workdir
  without one passes. Call it before restoring, whose own error does not name the setting.
  """
  if not os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
    return
  doc = read_model_doc(workdir)
  saved = doc.get("model") or {}
  hint = "use a new --workdir or the same model settings"
  for field in SHAPE_FIELDS:
    if field in saved and saved[field] != getattr(config, field):
      raise UserError(f"workdir {workdir} was trained with {field}={saved[field]!r}, the config "
                      f"asks for {getattr(config, field)!r}: {hint}")
  if doc.get("heads") is not None and list(doc["heads"]) != list(heads):
    raise UserError(f"workdir {workdir} was trained with heads {doc['heads']}, this run has "
                    f"{list(heads)} (the data's mode decides nsp): use a new --workdir or "
                    "data of the same mode")
  saved_task = doc.get("task") or {}
  if spec is not None and saved_task.get("labels") is not None:
    now = None if spec.labels is None else list(spec.labels)
    if now != list(saved_task["labels"]):
      raise UserError(f"workdir {workdir} was trained with labels {saved_task['labels']}, this "
                      f"run's data has {now}: resuming would reassign the class ids; use a new "
                      "--workdir or the same labels")


def write_model_files(workdir: str, config: BertConfig, heads: tuple[str, ...],
                      tokenizer_dir: Optional[str], task: Optional[dict] = None) -> None:
  """WORKDIR/bert_jax_config.json and WORKDIR/tokenizer/, so from_pretrained(WORKDIR) works.

  Process 0 only; each output goes to a temporary name first and is renamed.
  """
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  if tokenizer_dir:
    if not os.path.isdir(tokenizer_dir):
      raise FileNotFoundError(2, "No such tokenizer directory", tokenizer_dir)
    final = os.path.join(workdir, TOKENIZER_DIR)
    if not os.path.isdir(final):
      files.write_dir_atomically(final, tokenization.load_tokenizer(tokenizer_dir).save)
  write_model_doc(workdir, config, heads, (task or {}).get("num_labels"),
                  TOKENIZER_DIR if tokenizer_dir else None, task)


def export_model(directory: str, params: Any, config: BertConfig, heads: tuple[str, ...],
                 tokenizer_dir: Optional[str], task: Optional[dict] = None,
                 extra_files: Optional[dict[str, str]] = None) -> None:
  """Writes (or replaces) a bert_jax export dir from a run's live params, atomically.

  Every process takes part in the (sharded) Orbax save into a staging dir; process
  0 adds the model doc, tokenizer and `extra_files`, then swaps the staging dir in.
  """
  directory = os.path.abspath(directory)
  staging = directory + ".staging"
  if jax.process_index() == 0 and os.path.exists(staging):
    shutil.rmtree(staging)
  _sync("export_model_clean")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(staging, PARAMS_ITEM), params)
  checkpointer.wait_until_finished()
  checkpointer.close()
  if jax.process_index() == 0:
    if tokenizer_dir:
      tokenization.load_tokenizer(tokenizer_dir).save(os.path.join(staging, TOKENIZER_DIR))
    write_model_doc(staging, config, heads,
                    (task or {}).get("num_labels"), TOKENIZER_DIR if tokenizer_dir else None,
                    task)
    for name, text in (extra_files or {}).items():
      with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
        f.write(text)
    old = directory + ".old"
    if os.path.exists(directory):
      os.replace(directory, old)
    os.replace(staging, directory)
    if os.path.exists(old):
      shutil.rmtree(old)
  _sync("export_model_done")


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _load_orbax_params(directory: str) -> dict:
  try:
    return ocp.StandardCheckpointer().restore(os.path.abspath(directory))
  except Exception as exc:  # orbax/tensorstore raise many types
    raise UserError(f"{directory} is not a readable Orbax checkpoint: {exc}") from None


def _bert_jax_config(path: str) -> tuple[BertConfig, dict]:
  doc = read_model_doc(path)
  fields = {f.name for f in dataclasses.fields(BertConfig)}
  return BertConfig(**{k: v for k, v in doc["model"].items() if k in fields}), doc


def _write_tokenizer(pre: Pretrained, directory: str) -> None:
  if pre.tokenizer is None:
    raise UserError("cannot write a model without its tokenizer")
  os.makedirs(directory, exist_ok=True)
  pre.tokenizer.save(directory)


def save_bert_jax(pre: Pretrained, directory: str) -> None:
  """bert_jax export dir: bert_jax_config.json + params/ (Orbax) + tokenizer/."""
  write_model_doc(directory, pre.config, pre.heads, pre.num_labels, TOKENIZER_DIR,
                             pre.task)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(os.path.join(directory, PARAMS_DIR)), pre.params)
  checkpointer.wait_until_finished()
  _write_tokenizer(pre, os.path.join(directory, TOKENIZER_DIR))


