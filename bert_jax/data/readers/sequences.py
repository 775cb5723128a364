"""Sequence-task readers: local CSV/TSV/JSONL files and tensorflow-datasets GLUE.

Every reader returns `Examples`: texts (and second texts for pairs), raw labels
(strings, ints or floats; None for unlabelled test rows) and the label names
when the source defines them. Turning labels into ids is the task's business.

Local files: `.csv`, `.tsv` (a header row) or `.jsonl` (one object a line),
with a `sentence` column or `sentence1` + `sentence2`, and `label` (optional
in a test file). GLUE through `tfds.data_source` (no TensorFlow), with each
task's own feature names; MNLI's matched and mismatched splits both exist.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Optional

from bert_jax import files
from bert_jax.data import text_corpus
from bert_jax.errors import UserError

# GLUE task -> (first text feature, second text feature or None).
GLUE_FEATURES = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}
# GLUE task -> {split role: tfds split names (the first is the default metric name '')}.
GLUE_EVAL_SPLITS = {"mnli": {"": "validation_matched", "mismatched": "validation_mismatched"}}
GLUE_TEST_SPLITS = {"mnli": {"": "test_matched", "mismatched": "test_mismatched"}}


@dataclasses.dataclass
class Examples:
  texts: list[str]
  pairs: Optional[list[str]]
  labels: list[Any]  # str | int | float | None per row
  label_names: Optional[list[str]] = None  # from the source, when it has them
  source: str = ""

  def __len__(self) -> int:
    return len(self.texts)

  @property
  def labelled(self) -> bool:
    return all(label is not None for label in self.labels)


def _decode(raw: bytes, path: str) -> str:
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as exc:
    line = raw[:exc.start].count(b"\n") + 1
    raise UserError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None


def _rows(path: str) -> list[dict[str, Any]]:
  with open(path, "rb") as f:
    text = _decode(f.read(), path)
  ext = os.path.splitext(path)[1].lower()
  if ext in (".jsonl", ".json"):
    return [row for _, row in files.jsonl_objects(text.splitlines(), path)]
  if ext not in (".csv", ".tsv"):
    raise UserError(f"{path}: unknown file type {ext!r}; expected .csv, .tsv or .jsonl")
  reader = csv.DictReader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ",",
                          quoting=csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL)
  rows = list(reader)
  if reader.fieldnames is None:
    raise UserError(f"{path} is empty: expected a header row and examples")
  for number, row in enumerate(rows, start=2):
    if None in row or any(v is None for v in row.values()):
      found = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, []))
      raise UserError(f"{path}:{number}: {found} columns where the header has "
                      f"{len(reader.fieldnames)}")
  return rows


def read_local(path: str, require_labels: bool = True) -> Examples:
  """Examples of a local CSV/TSV/JSONL file (see the module docstring)."""
  if not path:
    raise UserError("no file given (config.train_file / validation_file / test_file)")
  if not os.path.exists(path):
    raise FileNotFoundError(2, "No such data file", path)
  rows = _rows(path)
  if not rows:
    raise UserError(f"{path} has no examples")
  columns = set(rows[0])
  if "sentence" in columns:
    first, second = "sentence", None
  elif {"sentence1", "sentence2"} <= columns:
    first, second = "sentence1", "sentence2"
  else:
    raise UserError(f"{path}: expected a 'sentence' column or 'sentence1' and 'sentence2'; "
                    f"found {sorted(columns)}")
  if require_labels and "label" not in columns:
    raise UserError(f"{path}: no 'label' column (found {sorted(columns)})")
  texts, pairs, labels = [], [] if second else None, []
  for number, row in enumerate(rows, start=1):
    for key in (first, second):
      if key and not isinstance(row.get(key), str):
        raise UserError(f"{path}: example {number} has no text in {key!r}")
    texts.append(row[first])
    if second:
      pairs.append(row[second])
    label = row.get("label")
    labels.append(None if label in (None, "") else label)
  if require_labels and not all(label is not None for label in labels):
    missing = next(i for i, label in enumerate(labels, start=1) if label is None)
    raise UserError(f"{path}: example {missing} has no label")
  return Examples(texts, pairs, labels, None, path)


def glue_name(task: str) -> str:
  """'glue/sst2' -> 'sst2', checked."""
  name = task.split("/", 1)[1] if "/" in task else ""
  if name not in GLUE_FEATURES:
    raise UserError(f"config.task={task!r}: expected glue/<name> with name one of "
                    f"{sorted(GLUE_FEATURES)}")
  return name


def _register_glue():
  """Imports tfds' GLUE builder by its module: without TensorFlow, tfds' lazy registry of
  all text datasets fails on other modules and does not find 'glue' by name."""
  try:
    import tensorflow_datasets.text.glue  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise UserError("glue/* tasks need tensorflow-datasets: pip install tensorflow-datasets"
                    ) from None


def glue_label_names(name: str, data_dir: Optional[str] = None) -> Optional[list[str]]:
  """The label names tfds defines for a GLUE task (None for STS-B, a regression)."""
  if name == "stsb":
    return None
  _register_glue()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    features = tfds.builder(f"glue/{name}", data_dir=data_dir).info.features
    return list(features["label"].names)
  except Exception as exc:  # pylint: disable=broad-except  (tfds raises many types)
    raise UserError(f"tfds dataset glue/{name} is not available: {exc}") from None


def read_glue(name: str, split: str, data_dir: Optional[str] = None) -> Examples:
  """One split of tfds `glue/<name>`; test rows (label -1) come back unlabelled."""
  first, second = GLUE_FEATURES[name]
  _register_glue()
  texts, pairs, labels = [], [] if second else None, []
  for example in text_corpus.tfds_examples(f"glue/{name}:{split}", data_dir):
    texts.append(_text(example[first]))
    if second:
      pairs.append(_text(example[second]))
    label = example["label"]
    label = float(label) if name == "stsb" else int(label)
    labels.append(None if name != "stsb" and label < 0 else label)
  return Examples(texts, pairs, labels, glue_label_names(name, data_dir),
                  f"glue/{name}:{split}")


def _text(value: Any) -> str:
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
