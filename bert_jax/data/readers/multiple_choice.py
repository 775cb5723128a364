"""Multiple-choice data: JSONL `{"context" (or "question"), "choices": [...], "label": int}`.

Every example of a file has the same number of choices (files may differ);
the label is the index of the right choice.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from bert_jax import files
from bert_jax.data import finetune_pipeline
from bert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
  context: str
  choices: tuple[str, ...]
  label: Optional[int]


def read_jsonl(path: str, require_labels: bool = True) -> list[ChoiceExample]:
  """The examples of a multiple-choice JSONL file, every problem a one-line error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(2, "No such data file", path)
  examples: list[ChoiceExample] = []
  for number, row in files.jsonl_objects(files.read_lines(path), path):
    context = row.get("context", row.get("question"))
    choices = row.get("choices")
    if not isinstance(context, str):
      raise UserError(f"{path}:{number}: expected a string 'context' (or 'question')")
    if (not isinstance(choices, list) or len(choices) < 2
        or not all(isinstance(c, str) and c for c in choices)):
      raise UserError(f"{path}:{number}: expected 'choices', a list of at least two non-empty "
                      "strings")
    label = row.get("label")
    if label is None and require_labels:
      raise UserError(f"{path}:{number}: no 'label' (the index of the right choice)")
    if label is not None and (not isinstance(label, int) or isinstance(label, bool)
                              or not 0 <= label < len(choices)):
      raise UserError(f"{path}:{number}: label {label!r} is not an index into its "
                      f"{len(choices)} choices")
    if examples and len(choices) != len(examples[0].choices):
      raise UserError(f"{path}:{number}: {len(choices)} choices where the file's first example "
                      f"has {len(examples[0].choices)}: every example needs the same number")
    examples.append(ChoiceExample(context, tuple(choices), label))
  if not examples:
    raise UserError(f"{path} has no examples")
  return examples


def encode(tokenizer, contexts: Sequence[str], choices: Sequence[Sequence[str]],
           max_seq_length: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """[N, C, L] input_ids/token_type_ids of `[CLS] context [SEP] choice [SEP]`, lengths [N, C]."""
  counts = {len(c) for c in choices}
  if len(counts) > 1:
    raise UserError(f"examples have {sorted(counts)} choices: every example of a set needs the "
                    "same number")
  n, c = len(contexts), counts.pop() if counts else 0
  texts = [ctx for ctx in contexts for _ in range(c)]
  pairs = [choice for row in choices for choice in row]
  seq, lengths = finetune_pipeline.encode_texts(tokenizer, texts, pairs, max_seq_length)
  return ({k: v.reshape(n, c, -1) for k, v in seq.items()}, lengths.reshape(n, c))
