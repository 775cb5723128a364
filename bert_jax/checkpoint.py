"""Orbax checkpoints of a training run: async save, sharded restore, resume.

Why this layout (WORKDIR/checkpoints/<step>/{params,train_state,data_iterator}):
- `params` is its own item so inference loaders (`convert.from_pretrained`)
  restore just the weights, without knowing the optimizer.
- `train_state` holds step, optimizer state and the base rng; restoring it onto
  abstract arrays that carry shardings puts each shard straight on its device,
  on whatever mesh the new run has (a checkpoint moves between mesh shapes).
- `data_iterator` holds the input-iterator state as JSON, one file per process
  (`process_<i>-of-<n>.json`); the state is global (the same on every
  process), so a run resumed with another process count reads any of them and
  sees exactly the batches an uninterrupted one would.
Orbax writes into a temporary directory and renames it when complete, so a
checkpoint killed mid-save is never listed, and the previous one is restored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Optional, Sequence

from etils import epath
import jax
import orbax.checkpoint as ocp

from bert_jax import files
from bert_jax import tokenization
from bert_jax.errors import UserError
from bert_jax.model import BertConfig

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "bert_jax_config.json"
TOKENIZER_DIR = "tokenizer"
PARAMS_ITEM = "params"  # the Checkpointer item (and export subdir) that holds the params


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


class IteratorStateHandler(ocp.CheckpointHandler):
  """Saves the JSON iterator state of each process; restores with any process count."""

  def _file(self, directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory: epath.Path, args: "IteratorStateSave") -> None:
    self._file(directory).write_text(json.dumps(args.state))

  def restore(self, directory: epath.Path, args: Optional["IteratorStateRestore"] = None) -> Any:
    path = self._file(directory)
    if not path.exists():  # written with another process count: the state is global
      written = sorted(directory.glob("process_*-of-*.json"))
      if not written:
        raise UserError(f"checkpoint has no input-iterator state in {directory}")
      path = written[0]
    try:
      return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
      raise UserError(f"input-iterator state {path} is not valid JSON: {exc}") from None

  def structure(self, directory: epath.Path) -> Any:
    return None

  def metadata(self, directory: epath.Path) -> Any:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass

  @classmethod
  def typestr(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
  pass


class Checkpointer:
  """A CheckpointManager over WORKDIR/checkpoints keeping the newest `keep` steps."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers=dict(params=ocp.StandardCheckpointHandler(),
                           train_state=ocp.StandardCheckpointHandler(),
                           data_iterator=IteratorStateHandler()))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, params: Any, train_state: Any, data_state: dict) -> bool:
    """Starts an (async) save; the arrays may be donated right after it returns."""
    return self.manager.save(
        int(step), force=True,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                train_state=ocp.args.StandardSave(train_state),
                                data_iterator=IteratorStateSave(data_state)))

  def restore(self, step: int, abstract_params: Any,
              abstract_train_state: Any) -> tuple[Any, Any, dict]:
    """(params, train_state, data_state) at `step`, sharded as the abstract targets say."""
    out = self.manager.restore(
        int(step),
        args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params),
                                train_state=ocp.args.StandardRestore(abstract_train_state),
                                data_iterator=IteratorStateRestore()))
    return out[PARAMS_ITEM], out["train_state"], out["data_iterator"]

  def check_param_shapes(self, step: int, abstract_params: Any) -> None:
    """Raises UserError naming the first tensor whose stored shape differs from the target.

    Reads only the checkpoint's metadata; a checkpoint without readable metadata is let
    through (the restore itself then reports what it finds).
    """
    try:
      stored = self.manager.item_metadata(int(step))[PARAMS_ITEM]
      stored_shapes = {_path_str(k): tuple(v.shape)
                       for k, v in jax.tree_util.tree_flatten_with_path(stored)[0]
                       if getattr(v, "shape", None) is not None}
    except Exception:  # pylint: disable=broad-except
      return
    if not stored_shapes:
      return
    where = os.path.join(self.directory, str(int(step)))
    hint = "use a new --workdir or the same model settings"
    wanted = {_path_str(k): tuple(v.shape)
              for k, v in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    for path, shape in wanted.items():
      if path not in stored_shapes:
        raise UserError(f"checkpoint {where} has no params tensor {path} (the config's model has "
                        f"one of shape {shape}): {hint}")
      if stored_shapes[path] != shape:
        raise UserError(f"checkpoint {where} holds params {path} of shape {stored_shapes[path]}, "
                        f"the config's model has {shape}: {hint}")
    extra = sorted(set(stored_shapes) - set(wanted))
    if extra:
      raise UserError(f"checkpoint {where} holds params {extra[0]} that the config's model does "
                      f"not have: {hint}")

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _path_str(path: tuple) -> str:
  """'bert/encoder/layer_0/attention/query/kernel' for a jax key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


# BertConfig fields that fix the parameter shapes (and, for scan_layers, the tree layout).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "scan_layers")


def check_resume_compatible(workdir: str, config: BertConfig, heads: tuple[str, ...]) -> None:
  """Raises UserError when WORKDIR's earlier run trained a differently shaped model.

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


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the given shardings: restore targets."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


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
