"""The head registry: every output head, one file each (see `heads/base.py`).

A new head is a file `heads/<name>.py` with a `base.Head` subclass (its linen
module, conversion rows, loss/metric sums, evaluator, prediction) and one line
in `_HEADS` below; the trainer, the loop, the converter, predict and the
inference runner work for any registered head.
"""

from __future__ import annotations

from typing import Optional

from bert_jax.data.contract import Spec
from bert_jax.errors import UserError
from bert_jax.heads import base
from bert_jax.heads.classifier import Classifier
from bert_jax.heads.multiple_choice import MultipleChoice
from bert_jax.heads.pretraining import MaskedLM, NextSentence, Pretraining
from bert_jax.heads.qa import QuestionAnswering
from bert_jax.heads.summary import ExtractiveSummary
from bert_jax.heads.token_classifier import TokenClassifier

Head = base.Head
Row = base.Row

# Heads as checkpoints record them, in registry order (the order of `ordered`).
_HEADS: tuple[type[base.Head], ...] = (MaskedLM, NextSentence, Classifier, TokenClassifier,
                                       QuestionAnswering, MultipleChoice, ExtractiveSummary)
HEADS: dict[str, type[base.Head]] = {h.name: h for h in _HEADS}
ORDER = tuple(HEADS)
# What a run trains (`Spec.head`): every fine-tuning head, and pretraining (mlm + nsp).
TRAINABLE: dict[str, type[base.Head]] = {
    Pretraining.name: Pretraining,
    **{h.name: h for h in _HEADS if h.predicts}}

# Head set -> the Hugging Face architecture that has exactly these heads (heads with none,
# such as the summary head, are not exported to Hugging Face).
ARCHITECTURES: dict[tuple[str, ...], str] = {
    (): "BertModel",
    (MaskedLM.name, NextSentence.name): "BertForPreTraining",
    **{(h.name,): h.architecture for h in _HEADS if h.architecture},
}


def for_spec(spec: Spec) -> base.Head:
  """The head a run trains, bound to its data's frozen Spec."""
  if spec.head not in TRAINABLE:
    raise UserError(f"unknown head {spec.head!r}; known: {sorted(TRAINABLE)}")
  return TRAINABLE[spec.head](spec)


def ordered(heads) -> tuple[str, ...]:
  """`heads` in registry order; unknown names are an error."""
  unknown = sorted(set(heads) - set(HEADS))
  if unknown:
    raise UserError(f"unknown heads {unknown}; known: {list(ORDER)}")
  return tuple(h for h in ORDER if h in heads)


def heads_in_state(names, architecture: Optional[str] = None) -> tuple[str, ...]:
  """The heads whose tensors appear among canonical (HF) tensor `names`.

  Heads that share a prefix (sequence, token and multiple-choice classifiers)
  are told apart by the Hugging Face architecture when given, else by whether a
  pooler is there (the first registered of those that agree wins).
  """
  names = list(names)
  has_pooler = any(n.startswith("pooler.") for n in names)
  found = []
  for head in HEADS.values():
    if not any(n.startswith(head.hf_prefix) for n in names):
      continue
    siblings = [h for h in HEADS.values() if h.hf_prefix == head.hf_prefix]
    if len(siblings) > 1:
      by_arch = {h.architecture: h.name for h in siblings}
      if architecture in by_arch:
        if by_arch[architecture] != head.name:
          continue
      else:
        agree = [h for h in siblings if h.uses_pooler == has_pooler]
        if not agree or agree[0] is not head:
          continue
    found.append(head.name)
  return ordered(found)


def architecture(heads: tuple[str, ...]) -> str:
  if tuple(heads) not in ARCHITECTURES:
    raise UserError(f"no Hugging Face architecture has heads {list(heads)}")
  return ARCHITECTURES[tuple(heads)]


def uses_pooler(heads) -> bool:
  return any(HEADS[h].uses_pooler for h in heads)


def labelled_head(heads) -> Optional[type[base.Head]]:
  """The head with label names (sequence or token classifier), if any."""
  return next((HEADS[h] for h in heads if HEADS[h].labelled), None)




def predicting_head(heads) -> type[base.Head]:
  """The fine-tuned head a model predicts with (launch/predict.py)."""
  head = next((HEADS[h] for h in heads if HEADS[h].predicts), None)
  if head is None:
    kinds = ", ".join(f"no {h.description} head" for h in _HEADS if h.predicts)
    raise UserError(f"this model has no fine-tuned head to predict with ({kinds}; heads: "
                    f"{list(heads) or 'none'}): fine-tune it first (launch/finetune.py)")
  return head
