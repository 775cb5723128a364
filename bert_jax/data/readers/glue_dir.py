"""The original GLUE download layout (`DIR/CoLA/train.tsv`, ...) -> the local JSONL of `local`.

Why a converter and not a tenth task reader: the fine-tuning task already reads
JSONL with `sentence` (or `sentence1`/`sentence2`) and `label`; turning each GLUE
file into that once, under the suite's workdir, keeps the trainer unaware of
GLUE's quirks and leaves files a person can read. The quirks, per task:
- CoLA: train/dev have no header (source, label, original mark, sentence);
  test.tsv has `index`, `sentence`.
- SST-2: `sentence`, `label`; MRPC: `Quality`, `#1 ID`, `#2 ID`, `#1 String`,
  `#2 String`; STS-B: ten columns, `sentence1`, `sentence2` and the `score`;
  QQP: `id`, `qid1`, `qid2`, `question1`, `question2`, `is_duplicate`, with some
  rows missing fields (skipped in train/dev and counted, as the usual readers do);
  MNLI: `sentence1`, `sentence2` and `gold_label` among 12 (train), 16 (dev) or
  10 (test) columns, dev and test split in `_matched` / `_mismatched`; QNLI:
  `question`, `sentence`; RTE, WNLI: `sentence1`, `sentence2`.
- The diagnostic set: `DIR/diagnostic/diagnostic.tsv` or `DIR/AX.tsv`
  (`index`, `sentence1`, `sentence2`).
Files are read as tab-separated without quoting (GLUE's quotes are text). Test
rows keep their `index`, so predictions are written in the server's order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from bert_jax import files
from bert_jax.errors import UserError

# task -> (first text column, second text column or None, label column).
_COLUMNS = {
    "cola": ("sentence", None, "label"), "sst2": ("sentence", None, "label"),
    "mrpc": ("#1 String", "#2 String", "Quality"), "stsb": ("sentence1", "sentence2", "score"),
    "qqp": ("question1", "question2", "is_duplicate"),
    "mnli": ("sentence1", "sentence2", "gold_label"), "qnli": ("question", "sentence", "label"),
    "rte": ("sentence1", "sentence2", "label"), "wnli": ("sentence1", "sentence2", "label"),
    "ax": ("sentence1", "sentence2", None),
}
_COLA_HEADERLESS = ("source", "label", "original_label", "sentence")


@dataclasses.dataclass
class Split:
  """One converted file: its JSONL path, rows written, rows skipped (malformed)."""
  path: str
  rows: int
  skipped: int = 0
  source: str = ""


def split_files(task: str) -> dict[str, str]:
  """{role: file name in the task's dir}: train, dev ('' and 'mismatched'), test roles."""
  if task == "mnli":
    return {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
            "test": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
  return {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def diagnostic_file(glue_dir: str) -> str:
  """The diagnostic (AX) file of a GLUE dir; a UserError naming both places when absent."""
  for path in (os.path.join(glue_dir, "diagnostic", "diagnostic.tsv"),
               os.path.join(glue_dir, "AX.tsv")):
    if os.path.isfile(path):
      return path
  raise UserError(f"GLUE dir {glue_dir}: no diagnostic set (expected diagnostic/diagnostic.tsv "
                  "or AX.tsv), needed for AX.tsv of the MNLI model")


def _read_tsv(path: str) -> list[list[str]]:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as exc:
    line = raw[:exc.start].count(b"\n") + 1
    raise UserError(f"{path}:{line}: not UTF-8 text") from None
  return [line.split("\t") for line in text.split("\n") if line.strip("\r")]


def _rows(path: str, task: str, test: bool) -> tuple[list[dict], int]:
  """Dicts by column name (the header's, or CoLA's fixed names) and the malformed rows."""
  lines = [[cell.rstrip("\r") for cell in line] for line in _read_tsv(path)]
  if not lines:
    raise UserError(f"{path} is empty")
  if task == "cola" and not test:
    header, body = list(_COLA_HEADERLESS), lines
  else:
    header, body = lines[0], lines[1:]
  first, second, label = _COLUMNS[task]
  wanted = [c for c in (first, second, None if test else label) if c]
  missing = [c for c in wanted if c not in header]
  if test and "index" not in header and "id" not in header:
    missing.append("index")
  if missing:
    raise UserError(f"{path}: no column {missing[0]!r} (header: {header[:12]}); expected the "
                    f"GLUE download's {task} layout")
  out, skipped = [], 0
  for cells in body:
    if len(cells) < len(header):
      if task == "qqp" and not test:  # QQP's known malformed rows
        skipped += 1
        continue
      cells = cells + [""] * (len(header) - len(cells))
    out.append(dict(zip(header, cells)))
  return out, skipped


def convert_file(path: str, task: str, output: str, test: bool) -> Split:
  """One GLUE TSV -> JSONL with sentence/sentence1,sentence2 (+ label, or + index for test)."""
  if not os.path.isfile(path):
    raise UserError(f"GLUE dir: missing {task} file {path}")
  rows, skipped = _rows(path, task, test)
  first, second, label = _COLUMNS[task]
  lines = []
  for row in rows:
    out = ({"sentence": row[first]} if second is None
           else {"sentence1": row[first], "sentence2": row[second]})
    if test:
      out["index"] = int(row.get("index", row.get("id", "0")) or 0)
    else:
      value = row[label].strip()
      out["label"] = float(value) if task == "stsb" else value
    lines.append(json.dumps(out, ensure_ascii=False))
  data = ("\n".join(lines) + "\n").encode("utf-8")
  files.write_file_atomically(output, lambda f: f.write(data))
  return Split(output, len(lines), skipped, path)


def convert_task(glue_dir: str, task: str, task_dir: str, out_dir: str,
                 diagnostic: bool = False) -> dict[str, Split]:
  """Every split of one task (and the diagnostic set for MNLI) into `out_dir/<role>.jsonl`.

  Roles: train, dev, dev_mismatched, test, test_mismatched, test_ax.
  """
  source = os.path.join(glue_dir, task_dir)
  if not os.path.isdir(source):
    raise UserError(f"GLUE dir {glue_dir}: no {task_dir}/ directory for task {task}")
  os.makedirs(out_dir, exist_ok=True)
  out = {}
  for role, name in split_files(task).items():
    out[role] = convert_file(os.path.join(source, name), task,
                             os.path.join(out_dir, f"{role}.jsonl"), role.startswith("test"))
  if diagnostic:
    out["test_ax"] = convert_file(diagnostic_file(glue_dir), "ax",
                                  os.path.join(out_dir, "test_ax.jsonl"), True)
  return out


def read_indices(path: str) -> list[int]:
  """The `index` of each row of a converted test JSONL."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)["index"] for line in f if line.strip()]


def count_rows(path: str) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def first_missing(glue_dir: str, tasks: list[tuple[str, str]], diagnostic: bool
                  ) -> Optional[str]:
  """The first file the run would need that is absent (checked before any training)."""
  for task, task_dir in tasks:
    for name in split_files(task).values():
      path = os.path.join(glue_dir, task_dir, name)
      if not os.path.isfile(path):
        return path
  if diagnostic:
    try:
      diagnostic_file(glue_dir)
    except UserError as exc:
      return str(exc)
  return None
