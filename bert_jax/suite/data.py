"""Each suite task's data: the config keys a run needs and the files its predictions need.

Why before any training: a missing file or a test set of the wrong size must stop
the suite in its first second, not after eight hours of fine-tuning. GLUE comes
from tfds (`glue/<name>`, the default) or from the original download layout
(`bert_jax.data.readers.glue_dir` converts it to local JSONL under
WORKDIR/<task>/data/). Test sets are written as JSONL with each row's official
`index` in either case, so predictions go to the server in its order.
SQuAD: tfds `squad/v1.1|v2.0` or a dir of train/dev JSON; CoNLL: tfds
`conll2003` or a dir of CoNLL files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Optional

from bert_jax import files
from bert_jax.data.readers import glue_dir
from bert_jax.data.readers import sequences
from bert_jax.errors import UserError
from bert_jax.suite import glue


@dataclasses.dataclass
class TaskData:
  """What one suite task trains and predicts on."""
  name: str  # the suite's task name (cola, ..., squad, conll)
  config: dict[str, Any]  # config keys every run of the task sets
  dev_files: dict[str, str]  # {role: file} scored from predictions ('mismatched' in dir mode)
  test_files: dict[str, str] = dataclasses.field(default_factory=dict)  # {role: JSONL w/ index}


def _write_jsonl(path: str, rows: list[dict]) -> None:
  data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_file_atomically(path, lambda f: f.write(data))


def _check_count(task: glue.Task, role: str, rows: int, source: str, strict: bool) -> None:
  sub = next(s for s in task.submissions if s.role == role)
  if rows == sub.official_rows:
    return
  message = (f"{source}: {rows} test rows for {sub.file}, the official GLUE test set has "
             f"{sub.official_rows}")
  if strict:
    raise UserError(message + " (--check_counts=false to allow)")
  print(f"warning: {message}", file=sys.stderr, flush=True)


def _tfds_test(task: glue.Task, split_name: str, out: str, data_dir: Optional[str]) -> int:
  """A tfds GLUE test split as JSONL rows {sentence(s), index} in index order."""
  from bert_jax.data import text_corpus  # pylint: disable=g-import-not-at-top
  tfds_task = "ax" if split_name == "ax" else task.name
  if tfds_task == "ax":
    first, second = "premise", "hypothesis"
  else:
    first, second = sequences.GLUE_FEATURES[tfds_task]
  sequences._register_glue()  # pylint: disable=protected-access
  split = "test" if tfds_task == "ax" else split_name
  rows = []
  for ex in text_corpus.tfds_examples(f"glue/{tfds_task}:{split}", data_dir):
    text = lambda k: (ex[k].decode("utf-8", "replace") if isinstance(ex[k], bytes)  # pylint: disable=cell-var-from-loop
                      else str(ex[k]))
    row = ({"sentence": text(first)} if second is None
           else {"sentence1": text(first), "sentence2": text(second)})
    row["index"] = int(ex["idx"])
    rows.append(row)
  rows.sort(key=lambda r: r["index"])
  _write_jsonl(out, rows)
  return len(rows)


def glue_tasks(tasks: list[glue.Task], data: str, workdir: str, check_counts: bool,
               tfds_data_dir: Optional[str] = None) -> list[TaskData]:
  """Prepares every task (files checked first, then converted / test sets written)."""
  if data != "tfds":
    if not os.path.isdir(data):
      raise UserError(f"--data={data}: not a directory (the GLUE download's layout) nor 'tfds'")
    missing = glue_dir.first_missing(data, [(t.name, t.dir) for t in tasks],
                                     any(t.name == "mnli" for t in tasks))
    if missing:
      raise UserError(missing if missing.startswith("GLUE dir") else
                      f"GLUE dir {data}: missing file {missing}")
  out = []
  for task in tasks:
    data_out = os.path.join(workdir, task.name, "data")
    roles = {s.role: s for s in task.submissions}
    if data == "tfds":
      config = {"task": f"glue/{task.name}", "tfds_data_dir": tfds_data_dir or ""}
      tests = {}
      for role in roles:
        split = {"": "test_matched" if task.name == "mnli" else "test",
                 "mismatched": "test_mismatched", "ax": "ax"}[role]
        path = os.path.join(data_out, f"test{'_' + role if role else ''}.jsonl")
        rows = _tfds_test(task, split, path, tfds_data_dir)
        _check_count(task, role, rows, f"tfds glue/{task.name}", check_counts)
        tests[role] = path
      out.append(TaskData(task.name, config, {}, tests))
      continue
    splits = glue_dir.convert_task(data, task.name, task.dir, data_out,
                                   diagnostic=task.name == "mnli")
    for role, split in splits.items():
      if split.skipped:
        print(f"note: {split.source}: skipped {split.skipped} malformed rows",
              file=sys.stderr, flush=True)
      if role.startswith("test"):
        _check_count(task, role[len("test_"):] if "_" in role else "", split.rows,
                     split.source, check_counts)
    config = {"task": "local", "train_file": splits["train"].path,
              "validation_file": splits["dev"].path}
    if task.name == "stsb":
      config["num_labels"] = 1
    dev = {"mismatched": splits["dev_mismatched"].path} if task.name == "mnli" else {}
    tests = {(role[len("test_"):] if "_" in role else ""): s.path
             for role, s in splits.items() if role.startswith("test")}
    out.append(TaskData(task.name, config, dev, tests))
  return out


def _first(directory: str, names: tuple[str, ...], what: str) -> str:
  for name in names:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise UserError(f"--data={directory}: no {what} file (expected one of {', '.join(names)})")


def squad_task(version: str, data: str, workdir: str, tfds_data_dir: Optional[str] = None
               ) -> TaskData:
  """SQuAD v1.1/v2.0: tfds, or a dir with train and dev JSON (official or sample names)."""
  if data == "tfds":
    from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
    name = f"squad/v{version}"
    examples, _ = squad.read_squad_tfds(name, "validation", tfds_data_dir)
    dev = os.path.join(workdir, "squad", "data", "dev.json")
    _write_squad_json(dev, examples)
    return TaskData("squad", {"task": name, "tfds_data_dir": tfds_data_dir or ""}, {"": dev})
  if not os.path.isdir(data):
    raise UserError(f"--data={data}: not a directory of SQuAD JSON files nor 'tfds'")
  train = _first(data, (f"train-v{version}.json", "train.json"), "training")
  dev = _first(data, (f"dev-v{version}.json", "dev.json", "validation.json"), "dev")
  return TaskData("squad", {"task": "squad_json", "train_file": train, "validation_file": dev},
                  {"": dev})


def _write_squad_json(path: str, examples) -> None:
  """QA examples as a SQuAD JSON file (one paragraph per example), for scoring predictions."""
  paragraphs = [{"context": ex.context, "qas": [{
      "id": ex.qid, "question": ex.question, "is_impossible": bool(ex.is_impossible),
      "answers": [{"text": t, "answer_start": s} for t, s in ex.answers]}]} for ex in examples]
  data = json.dumps({"version": "v2.0", "data": [{"title": "dev", "paragraphs": paragraphs}]}
                    ).encode("utf-8")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_file_atomically(path, lambda f: f.write(data))


def conll_task(data: str, workdir: str, tfds_data_dir: Optional[str] = None) -> TaskData:
  """CoNLL-2003: tfds `conll2003`, or a dir of CoNLL files (official or sample names)."""
  if data == "tfds":
    from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top
    sentences, _ = conll.read_conll2003_tfds("dev", tfds_data_dir, "conll2003")
    dev = os.path.join(workdir, "conll", "data", "dev.conll")
    text = "\n\n".join("\n".join(f"{w} {l}" for w, l in zip(s.words, s.labels))
                       for s in sentences) + "\n"
    os.makedirs(os.path.dirname(dev), exist_ok=True)
    files.write_file_atomically(dev, lambda f: f.write(text.encode("utf-8")))
    return TaskData("conll", {"task": "conll2003", "tfds_data_dir": tfds_data_dir or ""},
                    {"": dev})
  if not os.path.isdir(data):
    raise UserError(f"--data={data}: not a directory of CoNLL files nor 'tfds'")
  train = _first(data, ("eng.train", "train.txt", "train.conll"), "training")
  dev = _first(data, ("eng.testa", "valid.txt", "dev.txt", "validation.conll", "dev.conll"),
               "dev")
  return TaskData("conll", {"task": "conll", "train_file": train, "validation_file": dev},
                  {"": dev})
