"""WORKDIR/submission/ and submission.zip in the GLUE server's format.

Why a module: the server is strict and silent (a wrong file name or label
spelling scores 0 without saying why), so the format is written in one place
and checked here before anything is zipped: every file `<Task>.tsv` has header
`index<TAB>prediction`, one row per test row in the test file's index order,
and only labels the server accepts (see `glue.server_label`). Predictions come
from `bert_jax.predict.predict_file` on the best run's `best/` model.
"""

from __future__ import annotations

import os
import zipfile
from typing import Callable, Optional

from bert_jax import files
from bert_jax.data.readers import glue_dir
from bert_jax.errors import UserError
from bert_jax.suite import glue

HEADER = "index\tprediction"


def read_predictions(path: str) -> list[str]:
  """The prediction column of predict_file's `index<TAB>prediction` TSV, in row order."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not lines or lines[0] != HEADER:
    raise UserError(f"{path}: expected the header {HEADER!r}")
  return [line.split("\t", 1)[1] for line in lines[1:]]


def task_files(task: glue.Task, model: str, test_files: dict[str, str], out_dir: str,
               predict_file: Callable[[str, str, str], int]) -> dict[str, list[str]]:
  """{server file name: its lines} for one task's test sets (AX with the MNLI model)."""
  out = {}
  os.makedirs(out_dir, exist_ok=True)
  for sub in task.submissions:
    source = test_files.get(sub.role)
    if source is None:
      continue
    raw = os.path.join(out_dir, f"test{'_' + sub.role if sub.role else ''}_predictions.tsv")
    predict_file(model, source, raw)
    predicted = read_predictions(raw)
    indices = glue_dir.read_indices(source)
    if len(predicted) != len(indices):
      raise UserError(f"{raw}: {len(predicted)} predictions for {len(indices)} rows of {source}")
    order = sorted(range(len(indices)), key=lambda i: indices[i])
    out[sub.file] = [HEADER] + [f"{indices[i]}\t{glue.server_label(task, predicted[i])}"
                                for i in order]
  return out


def check_file(task: glue.Task, name: str, lines: list[str], rows: int) -> None:
  """The server's rules for one file; a UserError names the file and the broken rule."""
  if lines[0] != HEADER:
    raise UserError(f"{name}: header {lines[0]!r}, the server expects {HEADER!r}")
  if len(lines) - 1 != rows:
    raise UserError(f"{name}: {len(lines) - 1} predictions for {rows} test rows")
  allowed = glue.server_label_set(task)
  for line in lines[1:]:
    label = line.split("\t")[1]
    if allowed is None:
      if not 0.0 <= float(label) <= 5.0:
        raise UserError(f"{name}: {label} is outside STS-B's [0, 5]")
    elif label not in allowed:
      raise UserError(f"{name}: label {label!r} is not one of {sorted(allowed)}")


def write(workdir: str, best_models: dict[str, str], tests: dict[str, dict[str, str]],
          predict_file: Optional[Callable[[str, str, str], int]] = None) -> list[str]:
  """Writes WORKDIR/submission/*.tsv and WORKDIR/submission.zip; returns the file names.

  Args:
    workdir: the suite's workdir.
    best_models: {task name: model dir (the best run's best/)}.
    tests: {task name: {role: test JSONL with `index`}}.
    predict_file: `bert_jax.predict.predict_file` (injectable for tests).
  """
  if predict_file is None:
    from bert_jax.predict import predict_file  # pylint: disable=g-import-not-at-top
  contents: dict[str, list[str]] = {}
  for name, model in best_models.items():
    task = glue.TASKS[name]
    got = task_files(task, model, tests.get(name, {}),
                     os.path.join(workdir, name, "predictions"), predict_file)
    for sub in task.submissions:
      if sub.file in got:
        check_file(task, sub.file, got[sub.file],
                   glue_dir.count_rows(tests[name][sub.role]))
    contents.update(got)
  if not contents:
    return []

  def fill(tmp: str) -> None:
    for name, lines in contents.items():
      with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

  directory = os.path.join(workdir, "submission")
  files.write_dir_atomically(directory, fill, overwrite=True)

  def zip_to(f) -> None:
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
      for name in sorted(contents):
        z.write(os.path.join(directory, name), arcname=name)

  files.write_file_atomically(os.path.join(workdir, "submission.zip"), zip_to)
  return sorted(contents)


def missing_files(written: list[str]) -> list[str]:
  """The server's files a full submission has that `written` lacks."""
  every = [s.file for t in glue.TASKS.values() for s in t.submissions]
  return [name for name in every if name not in written]

