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
The model-directory format around it (config, tokenizer, exports) is
`bert_jax/formats/model_dir.py`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

from etils import epath
import jax
import orbax.checkpoint as ocp

from bert_jax.errors import UserError

CHECKPOINT_DIR = "checkpoints"
PARAMS_ITEM = "params"  # the Checkpointer item (and export subdir) that holds the params


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


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the given shardings: restore targets."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
