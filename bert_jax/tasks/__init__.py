"""Data builders of the one trainer: `make_data(config) -> (Data, Spec)` for `config.task`.

A task reads and encodes its examples and says what they fix about the head
(`Spec`); the head itself is in `bert_jax/heads/`. A new task is a module here
with a `make_data` and one entry in `_REGISTRY` (its name or name prefix).
"""

from __future__ import annotations

import importlib

import ml_collections

from bert_jax.data.contract import Data, Spec
from bert_jax.errors import UserError

# config.task (or its prefix before '/') -> the module under bert_jax.tasks that builds it.
_REGISTRY = {
    "pretraining": "pretraining",
    "glue": "classification",  # glue/cola, glue/sst2, ... (tensorflow-datasets)
    "local": "classification",  # CSV / TSV / JSONL files with sentence(s) and label
    "conll": "tagging",  # CoNLL files
    "conll2003": "tagging",  # tfds
    "squad_json": "qa",  # SQuAD v1.1/v2.0 JSON files
    "squad": "qa",  # tfds squad/v1.1, squad/v2.0
    "multiple_choice": "multiple_choice",  # JSONL with context, choices, label
    "extractive_summary": "extractive_summary",  # JSONL with article, highlights (or summary)
    "cnn_dailymail": "extractive_summary",  # tfds cnn_dailymail (article, highlights)
}


def task_names() -> list[str]:
  return sorted(_REGISTRY)


def builder(config: ml_collections.ConfigDict):
  """The module whose `make_data` builds `config.task` (default 'pretraining')."""
  name = config.task or "pretraining"
  module = _REGISTRY.get(name) or _REGISTRY.get(name.split("/")[0])
  if module is None:
    raise UserError(f"config.task={name!r} is not a task I know; expected one of "
                    f"{task_names()} (GLUE tasks as glue/<name>)")
  return importlib.import_module(f"bert_jax.tasks.{module}")


def make_data(config: ml_collections.ConfigDict) -> tuple[Data, Spec]:
  """(Data, Spec) of `config.task` for this process."""
  return builder(config).make_data(config)
