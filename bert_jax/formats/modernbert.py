"""Hugging Face ModernBERT (Warner et al. 2024) dirs <-> the one model's switches.

Why a module of its own: ModernBERT's config keys and tensor names differ from
BERT's throughout (`Wqkv`, `Wi`, `attn_norm`, `head`, `decoder`), but its
architecture is `BertConfig` with switches on (RoPE, GLU, pre-LN, no biases,
sliding windows, no token types, the "head" pooler). So this module only maps
names and keys; the checks (missing, unexpected, shapes, dtypes) are
`weight_names.build_params`'.

Decisions:
- transformers' fused tensors are split on the way in and fused on the way out:
  `Wqkv` [3E, E] is [Wq; Wk; Wv] (the view(3, H, D) of ModernBertAttention) and
  `Wi` [2M, E] is [W1; Wgate] (`chunk(2)`, input first). bert_jax keeps them
  apart so the `heads`/`mlp` logical axes shard each alike and LoRA targets
  `query`/`value` as in BERT.
- `head.*` is the MLM transform in ModernBertForMaskedLM and the pooler (the
  prediction head) in every other head's class; the architecture in
  config.json says which.
- HF's `layer_types` must be "global every Nth layer" (the only pattern
  ModernBERT configs use); another pattern or an unknown value is refused.
- Optional biases HF may omit (`decoder_bias`, `classifier_bias` of the MLM
  transform) load as zeros, and are written only when non-zero: the numbers
  are transformers' either way.
- Padding: transformers 5 runs ModernBERT padded with a key mask (no
  unpadding outside flash-attention), the mask bert_jax applies.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from bert_jax import heads as heads_lib
from bert_jax.errors import UserError
from bert_jax.formats import weight_names
from bert_jax.heads import base as head_base
from bert_jax.model import BertConfig

MODEL_TYPE = "modernbert"
BASE_ARCHITECTURE = "ModernBertModel"
_GLOBAL, _LOCAL = "full_attention", "sliding_attention"
_PREFIX = "model."


def is_modernbert(hf: dict) -> bool:
  return hf.get("model_type") == MODEL_TYPE


def export_head(heads: tuple[str, ...]) -> Optional[str]:
  """The one head a ModernBERT class carries, or a UserError naming those it cannot."""
  if not heads:
    return None
  without = [h for h in heads if not hasattr(heads_lib.HEADS[h], "modern_rows")]
  if without or len(heads) > 1:
    raise UserError(f"no Hugging Face ModernBERT class has heads {list(heads)} (one of "
                    "mlm, classifier, token_classifier, qa, multiple_choice; no NSP)")
  return heads[0]


def architecture_of(head: Optional[str]) -> str:
  """The transformers class of a bert_jax head on ModernBERT (ModernBertFor...)."""
  if head is None:
    return BASE_ARCHITECTURE
  bert = heads_lib.HEADS[head].architecture
  if not bert or not hasattr(heads_lib.HEADS[head], "modern_rows"):
    raise UserError(f"no Hugging Face ModernBERT architecture has the {head!r} head")
  return "Modern" + bert


def head_of(architecture: Optional[str]) -> Optional[str]:
  """The bert_jax head of a ModernBertFor... architecture (None: the bare encoder)."""
  if architecture in (None, BASE_ARCHITECTURE):
    return None
  for name, head in heads_lib.HEADS.items():
    if head.architecture and "Modern" + head.architecture == architecture:
      return name
  raise UserError(f"architecture {architecture!r} is not a ModernBERT class bert_jax reads "
                  f"(ModernBertModel, ModernBertForMaskedLM, ...ForSequenceClassification, "
                  "...ForTokenClassification, ...ForQuestionAnswering, ...ForMultipleChoice)")


def _per_token(head: Optional[str]) -> bool:
  """Whether a fine-tuned head reads every token (its `head.*` is the encoder's token head)."""
  cls = heads_lib.HEADS.get(head)
  return cls is not None and cls.predicts and not cls.uses_pooler


def _own_transform(head: Optional[str]) -> bool:
  """Whether `head.*` is the head's own transform (the MLM head) rather than the pooler."""
  return head is not None and not heads_lib.HEADS[head].predicts


# --- config.json <-> BertConfig. ---


def _global_every(types: list[str], where: str) -> int:
  """N of "layer i is global iff i % N == 0" for `types`, or a UserError."""
  unknown = sorted({t for t in types if t not in (_GLOBAL, _LOCAL)})
  if unknown:
    raise UserError(f"{where}: layer_types has unknown values {unknown}; expected "
                    f"{_GLOBAL!r} or {_LOCAL!r}")
  local = [t == _LOCAL for t in types]
  if not any(local):
    return 1
  n = next((i for i in range(1, len(types)) if not local[i]), len(types))
  if local != [bool(i % n) for i in range(len(types))]:
    raise UserError(f"{where}: layer_types {types} is not 'global every Nth layer, local "
                    "between' (the pattern bert_jax's local_window/global_every express)")
  return n


def config_from_hf(hf: dict, where: str) -> BertConfig:
  """BertConfig of a ModernBERT config.json dict (`where` names it in errors)."""
  missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                         "num_attention_heads", "intermediate_size") if k not in hf]
  if missing:
    raise UserError(f"{where}: ModernBERT config is missing keys {missing}")
  layers = int(hf["num_hidden_layers"])
  types = hf.get("layer_types") or [
      _LOCAL if i % int(hf.get("global_attn_every_n_layers", 3)) else _GLOBAL
      for i in range(layers)]
  if len(types) != layers:
    raise UserError(f"{where}: layer_types has {len(types)} entries for {layers} layers")
  every = _global_every(list(types), where)
  rope = hf.get("rope_parameters") or {}
  theta = {}
  for kind, legacy, default in ((_GLOBAL, "global_rope_theta", 160_000.0),
                                (_LOCAL, "local_rope_theta", 10_000.0)):
    params = rope.get(kind) or {}
    if params.get("rope_type", "default") != "default":
      raise UserError(f"{where}: rope_parameters[{kind!r}] has rope_type="
                      f"{params['rope_type']!r}; only 'default' RoPE is supported")
    theta[kind] = float(params.get("rope_theta", hf.get(legacy, default)))
  if hf.get("attention_bias", False) != hf.get("mlp_bias", False):
    raise UserError(f"{where}: attention_bias={hf.get('attention_bias')} and mlp_bias="
                    f"{hf.get('mlp_bias')} differ; bert_jax has one use_bias for both")
  act = hf.get("hidden_activation", "gelu")
  if hf.get("classifier_activation", "gelu") != act:
    raise UserError(f"{where}: classifier_activation={hf.get('classifier_activation')!r} "
                    f"differs from hidden_activation={act!r}; bert_jax's heads use one")
  window = int(hf.get("local_attention", 128)) if every > 1 else 0
  try:
    return BertConfig(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
        num_layers=layers, num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]),
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
        type_vocab_size=0, hidden_act=act,
        hidden_dropout_rate=float(hf.get("mlp_dropout", 0.0)),
        attention_dropout_rate=float(hf.get("attention_dropout", 0.0)),
        layer_norm_eps=float(hf.get("norm_eps", 1e-5)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        pad_token_id=int(hf.get("pad_token_id") or 0),
        position_embedding="rope", rope_theta=theta[_GLOBAL], rope_local_theta=theta[_LOCAL],
        feed_forward="glu", norm_placement="pre", first_layer_attn_norm=False,
        use_bias=bool(hf.get("attention_bias", False)),
        norm_bias=bool(hf.get("norm_bias", False)), local_window=window, global_every=every,
        tie_decoder=bool(hf.get("tie_word_embeddings", True)), pooler="head",
        pooling=hf.get("classifier_pooling", "cls"),
        pooler_bias=bool(hf.get("classifier_bias", False)),
        # ModernBERT's token classification and QA models transform every token.
        token_head=_per_token(head_of((hf.get("architectures") or [None])[0])))
  except (TypeError, ValueError) as exc:
    raise UserError(f"{where}: {exc}") from None


# What makes a BertConfig a ModernBERT (the switches config_from_hf sets).
_MODERN = dict(position_embedding="rope", feed_forward="glu", norm_placement="pre",
               first_layer_attn_norm=False, type_vocab_size=0, pooler="head")


def is_modern_config(config: BertConfig) -> bool:
  """Whether `config` is written as a ModernBERT (else as a BERT, or refused)."""
  return any(getattr(config, k) == v for k, v in _MODERN.items() if k != "type_vocab_size")


def check_exportable(config: BertConfig) -> None:
  """A UserError naming the switches no transformers class expresses."""
  if is_modern_config(config):
    off = [f"{k}={getattr(config, k)!r}" for k, v in _MODERN.items() if getattr(config, k) != v]
    if off:
      raise UserError(f"no Hugging Face class has this architecture: a ModernBERT needs "
                      f"{', '.join(f'{k}={v!r}' for k, v in _MODERN.items())}; this model has "
                      f"{', '.join(off)}")
    return
  default = BertConfig()
  off = [k for k in ("local_window", "use_bias", "norm_bias", "tie_decoder", "pooling",
                     "pooler_bias", "token_head")
         if getattr(config, k) != getattr(default, k)]
  if off:
    raise UserError(f"no Hugging Face BERT class has switches {off} on; only ModernBERT "
                    "(RoPE, GLU, pre-LN) models take them")


def config_to_hf(config: BertConfig, architecture: str, classifier_bias: bool,
                 tokenizer: Any = None) -> dict[str, Any]:
  """config.json as transformers 5.23's ModernBertConfig writes it; the special token ids
  (bos = cls, eos = sep, as ModernBERT's) from `tokenizer` when given."""
  types = [_LOCAL if w else _GLOBAL for w in config.layer_windows]
  cls_id = getattr(tokenizer, "cls_id", None)
  sep_id = getattr(tokenizer, "sep_id", None)
  hf = {
      "architectures": [architecture],
      "attention_bias": config.use_bias,
      "attention_dropout": config.attention_dropout_rate or 0.0,
      "bos_token_id": None, "classifier_activation": config.hidden_act,
      "classifier_bias": classifier_bias, "classifier_dropout": 0.0,
      "classifier_pooling": config.pooling, "cls_token_id": None,
      "decoder_bias": True, "deterministic_flash_attn": False, "dtype": "float32",
      "embedding_dropout": 0.0, "eos_token_id": None,
      "global_attn_every_n_layers": config.global_every if config.local_window else 1,
      "hidden_activation": config.hidden_act, "hidden_size": config.hidden_size,
      "initializer_cutoff_factor": 2.0, "initializer_range": config.initializer_range,
      "intermediate_size": config.intermediate_size, "layer_types": types,
      "local_attention": config.local_window or 128,
      "max_position_embeddings": config.max_position_embeddings,
      "mlp_bias": config.use_bias, "mlp_dropout": config.hidden_dropout_rate,
      "model_type": MODEL_TYPE, "norm_bias": config.norm_bias,
      "norm_eps": config.layer_norm_eps, "num_attention_heads": config.num_heads,
      "num_hidden_layers": config.num_layers, "pad_token_id": config.pad_token_id,
      "rope_parameters": {_GLOBAL: {"rope_theta": config.rope_theta, "rope_type": "default"},
                          _LOCAL: {"rope_theta": config.rope_local_theta,
                                   "rope_type": "default"}},
      "sep_token_id": None, "sparse_pred_ignore_index": -100, "sparse_prediction": False,
      "tie_word_embeddings": config.tie_decoder, "vocab_size": config.vocab_size,
  }
  hf.update(bos_token_id=cls_id, cls_token_id=cls_id, eos_token_id=sep_id, sep_token_id=sep_id)
  if tokenizer is not None:
    hf["pad_token_id"] = tokenizer.pad_id
  return hf


# --- Tensor names. ---


def _norm(hf: str, path: tuple[str, ...], e: int, config: BertConfig) -> list[head_base.Row]:
  rows = [(f"{hf}.weight", path + ("scale",), "copy", (e,))]
  if config.norm_bias:
    rows.append((f"{hf}.bias", path + ("bias",), "copy", (e,)))
  return rows


def _linear(hf: str, path: tuple[str, ...], n_out: int, n_in: int, bias: bool,
            kind: str = "dense", bias_kind: str = "copy") -> list[head_base.Row]:
  rows = [(f"{hf}.weight", path + ("kernel",), kind, (n_out, n_in))]
  if bias:
    rows.append((f"{hf}.bias", path + ("bias",), bias_kind, (n_out,)))
  return rows


# Split pieces of a fused HF tensor are named "<fused name>:<piece>".
_QKV = ("query", "key", "value")
_WI = ("intermediate", "gate")


def _encoder_rows(config: BertConfig, pooler: bool) -> list[head_base.Row]:
  e, m, v = config.hidden_size, config.intermediate_size, config.vocab_size
  b = config.use_bias
  rows = [("embeddings.tok_embeddings.weight",
           ("bert", "embeddings", "word_embeddings", "embedding"), "copy", (v, e))]
  rows += _norm("embeddings.norm", ("bert", "embeddings", "layer_norm"), e, config)
  for i in range(config.num_layers):
    hf, path = f"layers.{i}", ("bert", "encoder", f"layer_{i}")
    if config.first_layer_attn_norm or i:
      rows += _norm(f"{hf}.attn_norm", path + ("attention_layer_norm",), e, config)
    for name in _QKV:
      for row in _linear(f"{hf}.attn.Wqkv", path + ("attention", name), e, e, b, "qkv",
                         "qkv_bias"):
        rows.append((f"{row[0]}:{name}",) + row[1:])
    rows += _linear(f"{hf}.attn.Wo", path + ("attention", "output"), e, e, b, "attn_out")
    rows += _norm(f"{hf}.mlp_norm", path + ("output_layer_norm",), e, config)
    for name in _WI:
      for row in _linear(f"{hf}.mlp.Wi", path + (name,), m, e, b):
        rows.append((f"{row[0]}:{name}",) + row[1:])
    rows += _linear(f"{hf}.mlp.Wo", path + ("output",), e, m, b)
  rows += _norm("final_norm", ("bert", "final_norm"), e, config)
  if not config.tie_decoder:
    rows.append(("decoder.weight", ("bert", "embeddings", "output_embeddings"), "copy", (v, e)))
  if pooler:
    rows += _linear("head.dense", ("bert", "pooler"), e, e, config.pooler_bias)
    rows += _norm("head.norm", ("bert", "pooler_norm"), e, config)
  return rows


def _table(config: BertConfig, head: Optional[str],
           num_labels: Optional[int]) -> list[weight_names.Entry]:
  rows = _encoder_rows(config, pooler=head is not None and not _own_transform(head))
  if head is not None:
    rows += heads_lib.HEADS[head].modern_rows(config, num_labels)
  return [weight_names.Entry(*row) for row in rows]


def _split(flat: dict[str, np.ndarray], config: BertConfig, source: str) -> dict:
  """Fused Wqkv / Wi tensors -> their pieces (named "<name>:<piece>")."""
  out = {}
  for name, x in flat.items():
    pieces = (_QKV if ".attn.Wqkv." in name else _WI if ".mlp.Wi." in name else None)
    if pieces is None:
      out[name] = x
      continue
    width = config.hidden_size if pieces is _QKV else config.intermediate_size
    if x.shape[0] != len(pieces) * width:
      raise UserError(f"{source}: tensor {name} has shape {list(x.shape)}, expected "
                      f"{[len(pieces) * width] + list(x.shape[1:])} from the model config")
    for j, piece in enumerate(pieces):
      out[f"{name}:{piece}"] = x[j * width:(j + 1) * width]
  return out


def _fuse(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out, fused = {}, {}
  for name, x in state.items():
    base, _, piece = name.partition(":")
    if piece:
      fused.setdefault(base, []).append(x)
    else:
      out[name] = x
  out.update({name: np.ascontiguousarray(np.concatenate(xs, axis=0))
              for name, xs in fused.items()})
  return out


def _hf_name(name: str, head: Optional[str]) -> str:
  """A canonical name as the file has it: the encoder under "model." in head classes."""
  if head is None or name.split(".")[0] in ("head", "decoder", "classifier"):
    return name
  return _PREFIX + name


def state_to_params(state: dict[str, np.ndarray], config: BertConfig, hf: dict, source: str,
                    ) -> tuple[dict, tuple[str, ...], Optional[int]]:
  """A ModernBERT state dict -> (bert_jax params, heads, num_labels), with every check."""
  architecture = (hf.get("architectures") or [None])[0]
  head = head_of(architecture)
  flat = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v for k, v in state.items()}
  if config.tie_decoder and "decoder.weight" in flat:
    if not np.array_equal(flat["decoder.weight"], flat.get("embeddings.tok_embeddings.weight")):
      raise UserError(f"{source}: decoder.weight differs from the word embeddings but the "
                      "config says tie_word_embeddings=true")
    flat.pop("decoder.weight")
  num_labels = None
  if _own_transform(head):
    flat.setdefault("decoder.bias", np.zeros(config.vocab_size, np.float32))
    flat.setdefault("head.dense.bias", np.zeros(config.hidden_size, np.float32))
  elif head is not None and heads_lib.HEADS[head].labelled:
    if "classifier.weight" not in flat:
      raise UserError(f"{source} has no classifier.weight for its {architecture}")
    num_labels = int(flat["classifier.weight"].shape[0])
    declared = len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels")
    if declared is not None and declared != num_labels:
      raise UserError(f"{source}: classifier.weight has {num_labels} rows but the config says "
                      f"num_labels={declared}")
  flat = _split(flat, config, source)
  shown = lambda name: _hf_name(name.partition(":")[0], head)
  heads = () if head is None else (head,)
  params = weight_names.build_params(
      flat, _table(config, head, num_labels), config, source, {}, shown,
      f"a ModernBERT with {config.num_layers} layers ({architecture})")
  return params, heads, num_labels


def params_to_state(params: dict, config: BertConfig, heads: tuple[str, ...],
                    num_labels: Optional[int]) -> tuple[dict[str, np.ndarray], bool]:
  """bert_jax params -> (a ModernBERT state dict, its `classifier_bias`)."""
  head = export_head(heads)
  if _per_token(head) and not config.token_head:
    raise UserError(f"this {head} model has no per-token prediction head (token_head=False) "
                    f"and transformers' {architecture_of(head)} needs one: it has no Hugging "
                    "Face ModernBERT form")
  classifier_bias = config.pooler_bias
  table = _table(config, head, num_labels)
  if _own_transform(head) and not config.pooler_bias:
    transform_bias = np.asarray(params[heads_lib.HEADS[head].param_key]["transform"]["bias"])
    classifier_bias = bool(np.any(transform_bias))
    if not classifier_bias:
      table = [e for e in table if e.hf != "head.dense.bias"]
  state = weight_names.state_from_params(params, table, lambda name: _hf_name(name, head))
  return _fuse(state), classifier_bias
