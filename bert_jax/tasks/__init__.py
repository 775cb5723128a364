"""Tasks of the one trainer: pretraining and fine-tuning (see `base` for the interface).

`get_task(config)` picks the task named by `config.task`; a new task is a class
in this package and one entry in `_REGISTRY` (its name or name prefix).
"""

from __future__ import annotations

import ml_collections

from bert_jax.errors import UserError


def _pretraining(config):
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  return pretraining.PretrainingTask(config)


def _sequence(config):
  from bert_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  return classification.SequenceTask(config)


def _tagging(config):
  from bert_jax.tasks import tagging  # pylint: disable=g-import-not-at-top
  return tagging.TaggingTask(config)


def _qa(config):
  from bert_jax.tasks import qa  # pylint: disable=g-import-not-at-top
  return qa.QATask(config)


# config.task (or its prefix before '/') -> factory(config).
_REGISTRY = {
    "pretraining": _pretraining,
    "glue": _sequence,  # glue/cola, glue/sst2, ... (tensorflow-datasets)
    "local": _sequence,  # CSV / TSV / JSONL files with sentence(s) and label
    "conll": _tagging,  # CoNLL files
    "conll2003": _tagging,  # tfds
    "squad_json": _qa,  # SQuAD v1.1/v2.0 JSON files
    "squad": _qa,  # tfds squad/v1.1, squad/v2.0
}


def register(name: str, factory) -> None:
  _REGISTRY[name] = factory


def task_names() -> list[str]:
  return sorted(_REGISTRY)


def get_task(config: ml_collections.ConfigDict):
  """The task object for `config.task` (default 'pretraining')."""
  name = config.get("task", "pretraining") or "pretraining"
  factory = _REGISTRY.get(name) or _REGISTRY.get(name.split("/")[0])
  if factory is None:
    raise UserError(f"config.task={name!r} is not a task I know; expected one of "
                    f"{task_names()} (GLUE tasks as glue/<name>)")
  return factory(config)
