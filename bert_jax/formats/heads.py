"""The head registry: every output head in one place.

Why: a head shows up in the linen model, the rename table to Hugging Face /
Google names, the Hugging Face architecture written to config.json, the model
dir's record and the inference tools. Each of those reads this table, so a new
head is one `Head` entry (plus its linen module).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from bert_jax.errors import UserError
from bert_jax.model import BertConfig

# A rename row: (name under Hugging Face, path in the bert_jax tree, kind, HF shape).
# kind: copy | dense (Linear weight, transposed) | qkv | qkv_bias | attn_out.
Row = tuple[str, tuple[str, ...], str, tuple[int, ...]]


def dense_rows(hf: str, path: tuple[str, ...], n_out: int, n_in: int, kind: str = "dense",
               bias_kind: str = "copy") -> list[Row]:
  return [(f"{hf}.weight", path + ("kernel",), kind, (n_out, n_in)),
          (f"{hf}.bias", path + ("bias",), bias_kind, (n_out,))]


def norm_rows(hf: str, path: tuple[str, ...], width: int) -> list[Row]:
  return [(f"{hf}.weight", path + ("scale",), "copy", (width,)),
          (f"{hf}.bias", path + ("bias",), "copy", (width,))]


@dataclasses.dataclass(frozen=True)
class Head:
  """One output head."""

  name: str  # as recorded in bert_jax_config.json 'heads'
  hf_prefix: str  # prefix of its tensors in a Hugging Face state dict
  param_key: str  # its top-level key in the bert_jax parameter tree
  uses_pooler: bool  # reads the pooled [CLS] output (so the model has a pooler)
  labelled: bool  # has num_labels outputs with label names
  rows: Callable[[BertConfig, Optional[int]], list[Row]]


def _mlm_rows(c: BertConfig, _) -> list[Row]:
  e = c.hidden_size
  return (dense_rows("cls.predictions.transform.dense", ("mlm", "transform"), e, e)
          + norm_rows("cls.predictions.transform.LayerNorm", ("mlm", "layer_norm"), e)
          + [("cls.predictions.bias", ("mlm", "output_bias"), "copy", (c.vocab_size,))])


HEADS: dict[str, Head] = {h.name: h for h in (
    Head("mlm", "cls.predictions.", "mlm", False, False, _mlm_rows),
    Head("nsp", "cls.seq_relationship.", "nsp", True, False,
         lambda c, _: dense_rows("cls.seq_relationship", ("nsp",), 2, c.hidden_size)),
    Head("classifier", "classifier.", "classifier", True, True,
         lambda c, n: dense_rows("classifier", ("classifier",), n, c.hidden_size)),
    Head("token_classifier", "classifier.", "classifier", False, True,
         lambda c, n: dense_rows("classifier", ("classifier",), n, c.hidden_size)),
    Head("qa", "qa_outputs.", "qa_outputs", False, False,
         lambda c, _: dense_rows("qa_outputs", ("qa_outputs",), 2, c.hidden_size)),
)}
ORDER = tuple(HEADS)

# Head set -> the Hugging Face architecture that has exactly these heads.
ARCHITECTURES: dict[tuple[str, ...], str] = {
    (): "BertModel",
    ("mlm",): "BertForMaskedLM",
    ("mlm", "nsp"): "BertForPreTraining",
    ("nsp",): "BertForNextSentencePrediction",
    ("classifier",): "BertForSequenceClassification",
    ("token_classifier",): "BertForTokenClassification",
    ("qa",): "BertForQuestionAnswering",
}


def ordered(heads) -> tuple[str, ...]:
  """`heads` in registry order; unknown names are an error."""
  unknown = sorted(set(heads) - set(HEADS))
  if unknown:
    raise UserError(f"unknown heads {unknown}; known: {list(ORDER)}")
  return tuple(h for h in ORDER if h in heads)


def heads_in_state(names, architecture: Optional[str] = None) -> tuple[str, ...]:
  """The heads whose tensors appear among canonical (HF) tensor `names`.

  Heads that share a prefix (sequence vs token classifier) are told apart by
  the Hugging Face architecture when given, else by whether a pooler is there.
  """
  names = list(names)
  has_pooler = any(n.startswith("pooler.") for n in names)
  found = []
  for head in HEADS.values():
    if not any(n.startswith(head.hf_prefix) for n in names):
      continue
    siblings = [h for h in HEADS.values() if h.hf_prefix == head.hf_prefix]
    if len(siblings) > 1:
      by_arch = {ARCHITECTURES.get((h.name,)): h.name for h in siblings}
      if architecture in by_arch:
        if by_arch[architecture] != head.name:
          continue
      elif head.uses_pooler != has_pooler:
        continue
    found.append(head.name)
  return ordered(found)


def architecture(heads: tuple[str, ...]) -> str:
  if tuple(heads) not in ARCHITECTURES:
    raise UserError(f"no Hugging Face architecture has heads {list(heads)}")
  return ARCHITECTURES[tuple(heads)]


def uses_pooler(heads) -> bool:
  return any(HEADS[h].uses_pooler for h in heads)


def labelled_head(heads) -> Optional[str]:
  """The head with label names (classifier, token classifier), if any."""
  return next((h for h in heads if HEADS[h].labelled), None)
