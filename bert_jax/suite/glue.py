"""The GLUE benchmark as the suite runs it: tasks, server files, label formats, paper columns.

Why one table: every rule the GLUE server and the BERT paper impose (file names,
label spellings, which metric each column shows, how the average is taken) is a
fact to look up once, not to scatter over the runner. Sources:
- the GLUE server's submission format (gluebenchmark.com, "Submission"): one
  `<Task>.tsv` per task with header `index<TAB>prediction`; labels 0/1 for CoLA,
  SST-2, MRPC, QQP, WNLI; `entailment`/`not_entailment` for QNLI, RTE;
  `entailment`/`neutral`/`contradiction` for MNLI-m, MNLI-mm and the diagnostic AX
  (predicted with the MNLI model); a float in [0, 5] for STS-B.
- the official test set sizes (the GLUE data's test.tsv files, tfds `glue/*` test
  splits): CoLA 1063, SST-2 1821, MRPC 1725, STS-B 1379, QQP 390965, MNLI-m 9796,
  MNLI-mm 9847, QNLI 5463, RTE 3000, WNLI 146, AX 1104.
- BERT's Table 1 (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
  Transformers for Language Understanding", NAACL, arXiv:1810.04805): test-set
  scores of BERT-base from the GLUE server; F1 for QQP and MRPC, Spearman for
  STS-B, Matthews correlation for CoLA, accuracy otherwise; WNLI excluded; the
  Average is the mean of the nine figures MNLI-m, MNLI-mm, QQP, QNLI, SST-2, CoLA,
  STS-B, MRPC, RTE ((84.6 + 83.4 + 71.2 + 90.5 + 93.5 + 52.1 + 85.8 + 88.9 + 66.4)
  / 9 = 79.6, the paper's figure).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from bert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Submission:
  """One server file: its name, the eval/test role it predicts, its official row count."""
  file: str
  role: str  # '' (the task's main set), 'mismatched' (MNLI) or 'ax' (the diagnostic)
  official_rows: int


@dataclasses.dataclass(frozen=True)
class Task:
  name: str  # tfds glue/<name> and the suite's --tasks name
  dir: str  # the GLUE download's directory
  label_names: Optional[tuple[str, ...]]  # tfds order (id -> name); None = regression
  server_labels: str  # 'index' (write the label id), 'name' (the label name), 'float'
  submissions: tuple[Submission, ...]


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cola", "CoLA", ("unacceptable", "acceptable"), "index",
         (Submission("CoLA.tsv", "", 1063),)),
    Task("sst2", "SST-2", ("negative", "positive"), "index",
         (Submission("SST-2.tsv", "", 1821),)),
    Task("mrpc", "MRPC", ("not_equivalent", "equivalent"), "index",
         (Submission("MRPC.tsv", "", 1725),)),
    Task("stsb", "STS-B", None, "float", (Submission("STS-B.tsv", "", 1379),)),
    Task("qqp", "QQP", ("not_duplicate", "duplicate"), "index",
         (Submission("QQP.tsv", "", 390965),)),
    Task("mnli", "MNLI", ("entailment", "neutral", "contradiction"), "name",
         (Submission("MNLI-m.tsv", "", 9796), Submission("MNLI-mm.tsv", "mismatched", 9847),
          Submission("AX.tsv", "ax", 1104))),
    Task("qnli", "QNLI", ("entailment", "not_entailment"), "name",
         (Submission("QNLI.tsv", "", 5463),)),
    Task("rte", "RTE", ("entailment", "not_entailment"), "name",
         (Submission("RTE.tsv", "", 3000),)),
    Task("wnli", "WNLI", ("not_entailment", "entailment"), "index",
         (Submission("WNLI.tsv", "", 146),)),
)}

# The paper's column order: (column, task, metric key in metrics.jsonl without 'eval_').
COLUMNS = (
    ("MNLI-m", "mnli", "accuracy"), ("MNLI-mm", "mnli", "mismatched_accuracy"),
    ("QQP F1", "qqp", "f1"), ("QQP acc", "qqp", "accuracy"), ("QNLI", "qnli", "accuracy"),
    ("SST-2", "sst2", "accuracy"), ("CoLA MCC", "cola", "mcc"),
    ("STS-B Spearman", "stsb", "spearman"), ("STS-B Pearson", "stsb", "pearson"),
    ("MRPC F1", "mrpc", "f1"), ("MRPC acc", "mrpc", "accuracy"), ("RTE", "rte", "accuracy"),
    ("WNLI", "wnli", "accuracy"),
)
# The columns the paper's Average is the mean of (see the module docstring).
AVERAGE_OF = ("MNLI-m", "MNLI-mm", "QQP F1", "QNLI", "SST-2", "CoLA MCC", "STS-B Spearman",
              "MRPC F1", "RTE")

CITATION = ("Devlin et al. 2019, BERT: Pre-training of Deep Bidirectional Transformers for "
            "Language Understanding (NAACL; arXiv:1810.04805), Table 1, BERT-base, GLUE test set")
# BERT-base's Table 1 row (test set, GLUE server), in percent; columns the paper does not
# report (QQP/MRPC accuracy, STS-B Pearson, WNLI) are absent.
PAPER_BERT_BASE_TEST = {"MNLI-m": 84.6, "MNLI-mm": 83.4, "QQP F1": 71.2, "QNLI": 90.5,
                        "SST-2": 93.5, "CoLA MCC": 52.1, "STS-B Spearman": 85.8, "MRPC F1": 88.9,
                        "RTE": 66.4, "Average": 79.6}


def resolve_tasks(names: Optional[list[str]]) -> list[Task]:
  """The tasks of --tasks (all nine when empty), in the paper's order; unknown names fail."""
  if not names:
    return list(TASKS.values())
  out = []
  for name in names:
    key = name.strip().lower().replace("-", "")
    if key not in TASKS:
      raise UserError(f"--tasks: unknown GLUE task {name!r}; expected some of "
                      f"{', '.join(TASKS)}")
    out.append(TASKS[key])
  order = list(TASKS)
  return sorted(dict.fromkeys(out), key=lambda t: order.index(t.name))


def server_label(task: Task, label) -> str:
  """A predicted label (a name of the model's label list, or a value) as the server spells it.

  Models trained on tfds data name labels as tfds does (`acceptable`); models trained
  on the GLUE download's files name them as the files do (`1`, `entailment`).
  """
  if task.server_labels == "float":
    return f"{min(5.0, max(0.0, float(label))):.3f}"
  label = str(label)
  names = task.label_names
  if task.server_labels == "index":
    if label in names:
      return str(names.index(label))
    if label in ("0", "1"):
      return label
  elif label in names:
    return label
  elif label.isdigit() and int(label) < len(names):
    return names[int(label)]
  raise UserError(f"{task.name}: predicted label {label!r} is not one of {list(names)}")


def server_label_set(task: Task) -> Optional[set[str]]:
  """The labels the server accepts for `task` (None: a float)."""
  if task.server_labels == "float":
    return None
  if task.server_labels == "index":
    return {str(i) for i in range(len(task.label_names))}
  return set(task.label_names)
