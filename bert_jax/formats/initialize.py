"""Initialising a run from a pretrained model: its architecture, its weights, fresh or kept heads.

Why in `formats/`: which tensors a model path holds, what its heads mean and
whether they fit the run's head is format knowledge; the trainer only asks for
the model config and the initial parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from absl import logging
import flax
import jax
import ml_collections
import numpy as np

from bert_jax.errors import UserError
from bert_jax.model import DTYPES, BertConfig, to_layout

SIZE_KEYS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
# The architecture switches of BertConfig a config may set under config.model (configs/
# modernbert_base.py, modern_tiny.py); unset = BERT's.
ARCH_KEYS = ("type_vocab_size", "hidden_act", "layer_norm_eps", "position_embedding",
             "rope_theta", "rope_local_theta", "feed_forward", "norm_placement",
             "first_layer_attn_norm", "use_bias", "norm_bias", "local_window", "global_every",
             "tie_decoder", "pooler", "pooling", "pooler_bias")
RUN_KEYS = ("max_position_embeddings", "hidden_dropout_rate", "attention_dropout_rate",
             "attention_impl", "scan_layers", "remat_policy")


def model_config(config: ml_collections.ConfigDict, vocab_size: int,
                 base: Optional[BertConfig] = None) -> BertConfig:
  """BertConfig from config.model (preset + overrides), config.dtype and the data's vocab.

  With `base` (the init checkpoint's own config) the architecture is the
  checkpoint's and only run settings (dropout, attention kernel, scan, remat,
  dtype) come from config.model. "auto" dtype and None attention dropout are made
  concrete for this machine's platform.
  """
  m = config.model
  if config.dtype not in DTYPES:
    raise UserError(f"config.dtype={config.dtype!r} is not one of {', '.join(DTYPES)}")
  dtype = config.dtype
  if base is not None:
    overrides = {k: m[k] for k in RUN_KEYS if k in m and m[k] is not None
                 and k != "max_position_embeddings"}
    cfg = base.replace(dtype=dtype, **overrides)
  else:
    if not m.get("preset"):
      raise UserError("config.model.preset is empty and there is no config.init_checkpoint to "
                      "take the model's size from")
    overrides = {k: m[k] for k in SIZE_KEYS if m.get(k) is not None}
    overrides.update({k: m[k] for k in RUN_KEYS + ARCH_KEYS if k in m and m[k] is not None})
    cfg = BertConfig.preset(m.preset, vocab_size=int(vocab_size), dtype=dtype,
                            **overrides)
  if config.max_seq_length > cfg.max_position_embeddings:
    raise UserError(f"config.max_seq_length={config.max_seq_length} exceeds the model's "
                    f"max_position_embeddings={cfg.max_position_embeddings}")
  return cfg.for_platform()  # the run's platform defaults, made concrete once, here


def run_model_config(config: ml_collections.ConfigDict, vocab_size: int,
                     head: Any = None) -> BertConfig:
  """The architecture of config.init_checkpoint when config.model.preset is empty.

  `head` (the run's `heads.Head`): a head that reads every token (token classification,
  QA) on a ModernBERT-style encoder (`pooler='head'`) gets the per-token prediction head
  (`token_head`) that transformers' ModernBertFor{Token,QuestionAnswering} have.
  """
  if config.model.get("preset") or not config.init_checkpoint:
    cfg = model_config(config, vocab_size)
  else:
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    cfg = model_config(config, vocab_size, base=convert.read_model_config(config.init_checkpoint))
  if head is not None and cfg.pooler == "head" and head.predicts and not head.uses_pooler:
    cfg = cfg.replace(token_head=True)
  return cfg


def load_init_params(path: str, bert_config: BertConfig, abstract_params: Any,
                     fresh_params: Callable[[list[str]], dict[str, Any]],
                     head_info: Optional[dict] = None) -> Any:
  """Params of any model path in this config's layout, shapes checked by name.

  Every encoder tensor must be in the checkpoint. The pooler and the task's head
  are loaded when the checkpoint has them with the same shapes (and, when both
  name their labels, the same labels); otherwise they get `fresh_params(names)`'s
  random init (a dict of those flat 'a/b/c' names only, so the caller can initialise just
  them), and the log says so.
  """
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top

  pretrained = convert.from_pretrained(path, with_tokenizer=False)  # weights only
  loaded = to_layout(pretrained.params, bert_config)
  flat_want = flax.traverse_util.flatten_dict(abstract_params, sep="/")
  flat_have = flax.traverse_util.flatten_dict(loaded, sep="/")
  want_labels = (head_info or {}).get("labels")
  have_labels = (pretrained.task or {}).get("labels")
  labels_differ = bool(want_labels and have_labels and list(want_labels) != list(have_labels))
  out, fresh = {}, []
  for name, want in flat_want.items():
    # The pooler (BERT's dense, ModernBERT's dense + norm) is fresh when the checkpoint has none.
    encoder = name.startswith("bert/") and not name.startswith(("bert/pooler/",
                                                                 "bert/pooler_norm/"))
    have = flat_have.get(name)
    if have is None or (not encoder and (tuple(have.shape) != tuple(want.shape)
                                         or (labels_differ and not name.startswith("bert/")))):
      if encoder:
        raise UserError(f"init_checkpoint {path} has no tensor {name} (heads: "
                        f"{list(pretrained.heads)})")
      fresh.append(name)
      continue
    if tuple(have.shape) != tuple(want.shape):
      raise UserError(f"init_checkpoint {path}: tensor {name} has shape {tuple(have.shape)}, "
                      f"the config needs {tuple(want.shape)}")
    out[name] = jax.device_put(np.asarray(have, dtype=want.dtype), want.sharding)
  if fresh:
    out.update(fresh_params(fresh))
    heads = sorted({n.split("/")[0] if not n.startswith("bert/") else "pooler" for n in fresh})
    logging.info("init_checkpoint %s: loaded the encoder; fresh %s", path, ", ".join(heads))
  return flax.traverse_util.unflatten_dict(out, sep="/")
