"""LoRA fine-tuning (Hu et al. 2021): frozen encoder, low-rank adapters and the head trained.

Why it looks like this:
- The adapters come from qwix's LoRA for linen (a maintained Google library): it
  intercepts the `dot_general` of the matched modules and adds
  `scale * dropout(x) @ A @ B` (A: [in, r], B: [r, out], in and out flattened as
  peft's Linear sees them), with A and B created as params `kernel_lora_a` /
  `kernel_lora_b` in the module's own scope. So they live in the one parameter
  tree (checkpoints, shardings and `nn.scan` layouts need nothing new), dropout
  acts on the adapter input exactly as peft's, and no weight gradient of a
  frozen kernel is ever formed: the train step differentiates the trainable
  part only (`Partition`), and the optimizer state covers that part only.
- `config.lora.targets` is a regex searched in parameter paths
  (`bert/encoder/layer_0/attention/query/kernel`); the encoder kernels it
  matches are adapted (a regex matching none is a UserError). Trainable are
  the adapters and the head (every top-level key but `bert`); the pooler
  stays frozen, as in peft's sequence-classification task type.
- A is initialised as peft does (kaiming-uniform, a=sqrt(5): U(+-1/sqrt(in))),
  B with zeros, so a fresh adapter leaves the model unchanged.
- Exports are plain models: `merge` folds `scale * A @ B` into each kernel;
  `save_adapters` writes the trainable part alone with the settings that give it
  its meaning (lora.json), and `apply_adapters` puts it back on a base model.
- The adapter save is also peft's (`adapter_config.json` + `adapter_model.safetensors`,
  `write_peft_adapter`), for heads with a transformers class: `peft.PeftModel.from_pretrained`
  on the Hugging Face base model reads it. A and B are peft's lora_A / lora_B transposed
  whatever the kernel's layout, since every kernel is [in..., out...].
- qwix recognises a kernel by identity among the module's jax.Array params: a
  wrapped model applied to numpy params would silently skip the adapters (the jitted
  steps always pass jax arrays; tests convert), and applied to params without
  adapters it fails (it would try to create them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Optional

import flax
import jax
import numpy as np

from bert_jax import files
from bert_jax.errors import UserError

# The suffixes qwix gives a kernel's adapter params.
A_SUFFIX, B_SUFFIX = "_lora_a", "_lora_b"
SETTINGS_FILE = "lora.json"
PARAMS_DIR = "params"
# The top-level key of the encoder in every head's parameter tree: frozen under LoRA.
ENCODER_KEY = "bert"


@dataclasses.dataclass(frozen=True)
class Settings:
  """`config.lora`, checked."""

  rank: int
  alpha: float
  dropout: float
  targets: str

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def to_record(self) -> dict:
    return dataclasses.asdict(self)


def settings(config) -> Optional[Settings]:
  """The run's LoRA settings (`config.lora`), None when `config.lora.rank` is 0."""
  c = config.lora
  rank = c.rank
  if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
    raise UserError(f"config.lora.rank={rank!r} must be an integer >= 0 (0 = no LoRA)")
  if rank == 0:
    return None
  if not config.init_checkpoint:
    # "A missing head" for LoRA: no pretrained model at all. A fresh head on a pretrained
    # encoder is what LoRA trains; a frozen random encoder would learn nothing.
    raise UserError(f"config.lora.rank={rank} freezes the encoder, so it needs "
                    "config.init_checkpoint (a pretrained model); none is set")
  if not float(c.alpha) > 0:
    raise UserError(f"config.lora.alpha={c.alpha!r} must be > 0")
  if not 0.0 <= float(c.dropout) < 1.0:
    raise UserError(f"config.lora.dropout={c.dropout!r} must be in [0, 1)")
  try:
    re.compile(c.targets)
  except re.error as exc:
    raise UserError(f"config.lora.targets={c.targets!r} is not a regular expression: "
                    f"{exc}") from None
  return Settings(rank=rank, alpha=float(c.alpha), dropout=float(c.dropout),
                  targets=str(c.targets))


def _flat(tree: Any) -> dict[str, Any]:
  return flax.traverse_util.flatten_dict(tree, sep="/")


def _unflat(flat: dict[str, Any]) -> Any:
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def target_modules(params: Any, s: Settings) -> tuple[str, ...]:
  """Paths of the encoder modules whose kernel `s.targets` matches (a UserError when none)."""
  kernels = [p for p in _flat(params) if p.startswith(ENCODER_KEY + "/") and
             p.endswith("/kernel")]
  hits = tuple(p[:-len("/kernel")] for p in kernels if re.search(s.targets, p))
  if not hits:
    raise UserError(f"config.lora.targets={s.targets!r} matches no encoder kernel (paths look "
                    f"like {kernels[0] if kernels else 'bert/.../kernel'})")
  return hits


def wrap(model, s: Settings, modules: tuple[str, ...], *, train: bool):
  """`model` with adapters on `modules`; `train=False` drops the adapter dropout (eval,
  prediction, init: qwix applies its dropout whenever the rule has one)."""
  try:
    import qwix  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("config.lora.rank > 0 needs the qwix package (pip install qwix)") from None
  rule = qwix.LoraRule(
      module_path="|".join(re.escape(m) for m in modules), rank=s.rank, alpha=s.alpha,
      dropout=s.dropout if train else 0.0,
      # peft's nn.init.kaiming_uniform_(a=sqrt(5)) on lora_A: U(-1/sqrt(in), 1/sqrt(in)).
      lora_a_initializer=jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
      lora_b_initializer=jax.nn.initializers.zeros)
  return qwix.apply_lora_to_model(model, qwix.LoraProvider([rule]))


def is_adapter(path: str) -> bool:
  return path.endswith(A_SUFFIX) or path.endswith(B_SUFFIX)


def is_trainable(path: str) -> bool:
  """Adapters and the head train; the encoder (embeddings, layers, pooler) is frozen."""
  return is_adapter(path) or not path.startswith(ENCODER_KEY + "/")


@dataclasses.dataclass(frozen=True)
class Partition:
  """Splits a parameter tree into (trainable, frozen) and back; `None` rule = all trainable
  (the tree itself, untouched: full fine-tuning and pretraining)."""

  trainable: Optional[Callable[[str], bool]] = None

  def split(self, params: Any) -> tuple[Any, Any]:
    if self.trainable is None:
      return params, {}
    flat = _flat(params)
    return (_unflat({k: v for k, v in flat.items() if self.trainable(k)}),
            _unflat({k: v for k, v in flat.items() if not self.trainable(k)}))

  def combine(self, trainable: Any, frozen: Any) -> Any:
    if self.trainable is None:
      return trainable
    return _unflat({**_flat(trainable), **_flat(frozen)})


FULL = Partition()
LORA = Partition(is_trainable)


def has_adapters(params: Any) -> bool:
  return any(is_adapter(k) for k in _flat(params))


def without_adapters(params: Any) -> Any:
  return _unflat({k: v for k, v in _flat(params).items() if not is_adapter(k)})


def with_adapters(params: Any, source: Any) -> Any:
  """`params` plus the adapter leaves of `source`."""
  return _unflat({**_flat(params), **{k: v for k, v in _flat(source).items() if is_adapter(k)}})


def merge(params: Any, scale: float) -> dict:
  """A plain tree: each adapted kernel W becomes W + scale * A @ B (host float32 numpy);
  a leading `layers` axis (scan layout) is carried through."""
  flat = {k: np.asarray(v) for k, v in _flat(params).items()}
  out = {}
  for name, value in flat.items():
    if is_adapter(name):
      continue
    a, b = flat.get(name + A_SUFFIX), flat.get(name + B_SUFFIX)
    if a is not None and b is not None:
      delta = np.matmul(a.astype(np.float32), b.astype(np.float32)) * np.float32(scale)
      value = (value.astype(np.float32) + delta.reshape(value.shape)).astype(value.dtype)
    out[name] = value
  return _unflat(out)


def merged_for_reading(directory: str, params: Any) -> Any:
  """`params` read from DIRECTORY (a LoRA training workdir's checkpoint) as a plain tree:
  merged with the scale of DIRECTORY/lora.json; a tree without adapters is returned as is."""
  if not has_adapters(params):
    return params
  doc = read_settings(directory)
  if doc is None:
    raise UserError(f"{directory} holds LoRA adapters but no {SETTINGS_FILE} (their scale)")
  return merge(params, float(doc["scale"]))


def write_settings(directory: str, s: Settings, modules: tuple[str, ...],
                   extra: Optional[dict] = None) -> None:
  """DIRECTORY/lora.json: what the adapters mean (rank, alpha, dropout, targets, modules)."""
  doc = {**s.to_record(), "scale": s.scale, "target_modules": list(modules), **(extra or {})}
  data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
  files.write_file_atomically(os.path.join(directory, SETTINGS_FILE), lambda f: f.write(data))


def read_settings(directory: str) -> Optional[dict]:
  """DIRECTORY/lora.json, or None when the directory has none."""
  path = os.path.join(directory, SETTINGS_FILE)
  return files.read_json(path) if os.path.isfile(path) else None


def check_resume(workdir: str, s: Optional[Settings]) -> None:
  """A workdir trained with other LoRA settings (or without LoRA) is not resumed silently."""
  saved = read_settings(workdir)
  now = s.to_record() if s else None
  was = {k: saved[k] for k in ("rank", "alpha", "dropout", "targets")} if saved else None
  if was != now:
    raise UserError(f"workdir {workdir} was trained with LoRA {was or 'off'}, the config asks "
                    f"for {now or 'off'} (config.lora): use a new --workdir or the same settings")


def process0_checkpointer():
  """An Orbax checkpointer for saves and restores that only process 0 makes (the exports
  after training): no barrier waits for the other processes."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=0, active_processes={0}))


def save_adapters(directory: str, params: Any, s: Settings, modules: tuple[str, ...],
                  extra: Optional[dict] = None,
                  also: Optional[Callable[[str], None]] = None) -> None:
  """DIRECTORY (replaced atomically): params/ (Orbax: the trainable part, adapters and head)
  and lora.json; `also(tmp_dir)` adds files (peft's) before the rename."""
  trainable, _ = LORA.split(params)

  def write(tmp):
    checkpointer = process0_checkpointer()
    checkpointer.save(os.path.join(tmp, PARAMS_DIR), trainable)
    checkpointer.wait_until_finished()
    checkpointer.close()
    write_settings(tmp, s, modules, extra)
    if also is not None:
      also(tmp)

  files.write_dir_atomically(directory, write, overwrite=True)


def apply_adapters(directory: str, base_params: Any) -> dict:
  """A plain (merged) tree: `base_params` (a frozen base, plain) with the adapters and head
  saved in DIRECTORY by `save_adapters`."""
  doc = read_settings(directory)
  if doc is None:
    raise UserError(f"{directory} holds no {SETTINGS_FILE}: not a LoRA adapter dir")
  saved = process0_checkpointer().restore(os.path.abspath(os.path.join(directory, PARAMS_DIR)))
  flat = {**_flat(base_params), **_flat(saved)}
  return merge(_unflat(flat), float(doc["scale"]))


# peft's task type for the transformers class of a head (None: peft's generic PeftModel).
PEFT_TASK_TYPES = {"BertForSequenceClassification": "SEQ_CLS",
                   "BertForTokenClassification": "TOKEN_CLS",
                   "BertForQuestionAnswering": "QUESTION_ANS"}


def write_peft_adapter(directory: str, params: Any, s: Settings, config, head,
                       num_labels: Optional[int], base_model: str) -> None:
  """DIRECTORY/adapter_config.json + adapter_model.safetensors: the adapters and the head in
  peft's LoRA format, for `head` (a class of bert_jax.heads with a transformers
  architecture) on the Hugging Face form of the base model."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import weight_names  # pylint: disable=g-import-not-at-top
  from bert_jax.model import to_layout  # pylint: disable=g-import-not-at-top
  unrolled = to_layout({k: jax.tree_util.tree_map(np.asarray, v) for k, v in params.items()},
                       config.replace(scan_layers=False))
  flat = _flat(unrolled)
  table = weight_names._table(config, (head.name,), "pooler" in unrolled[ENCODER_KEY],  # pylint: disable=protected-access
                              num_labels)
  hf_module = {"/".join(e.path[:-1]): e.hf[:-len(".weight")] for e in table
               if e.path[-1] == "kernel"}
  tensors, targets = {}, []
  for name, value in flat.items():
    if name.endswith("kernel" + A_SUFFIX):
      module = ENCODER_KEY + "." + hf_module[name[:-len("/kernel" + A_SUFFIX)]]
      targets.append(module)
      for suffix, kind in ((A_SUFFIX, "lora_A"), (B_SUFFIX, "lora_B")):
        tensors[f"base_model.model.{module}.{kind}.weight"] = np.ascontiguousarray(
            flat[name[:-len(A_SUFFIX)] + suffix].T)
  state = weight_names.params_to_state(merge(unrolled, s.scale), config, (head.name,),
                                       num_labels)
  tensors.update({f"base_model.model.{k}": v for k, v in state.items()
                  if k.startswith(head.hf_prefix)})
  doc = {"peft_type": "LORA", "task_type": PEFT_TASK_TYPES.get(head.architecture),
         "r": s.rank, "lora_alpha": s.alpha, "lora_dropout": s.dropout, "bias": "none",
         "fan_in_fan_out": False, "inference_mode": True, "target_modules": sorted(targets),
         "modules_to_save": [head.hf_prefix.rstrip(".")], "base_model_name_or_path": base_model}
  save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()},
            os.path.join(directory, "adapter_model.safetensors"))
  text = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
  files.write_file_atomically(os.path.join(directory, "adapter_config.json"),
                              lambda f: f.write(text))
