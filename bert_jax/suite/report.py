"""results.md / results.json: the paper's table from the runs, each figure with its source.

Why sources on every figure: a table someone quotes must be traceable to the run
that produced it. A figure is either a metrics.jsonl row of a run workdir (the
eval row at the step of its `best/` model) or a score of a predictions file the
suite wrote (scoring.py), and the report says which, with the workdir. Nothing
is typed in except the BERT paper's published row, shown beside ours as a
reference with its citation (and it is the test set, ours the dev set).
Figures are percentages with one decimal, as the paper prints them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

from bert_jax import files
from bert_jax.suite import glue
from bert_jax.suite.runs import Run

# Published reference rows (percent) for the non-GLUE suites; see `PAPER_NOTES`.
PAPER_ROWS = {
    "squad1": {"EM": 80.8, "F1": 88.5},
    "conll": {"F1": 96.4},
}
PAPER_NOTES = {
    "squad1": "Devlin et al. 2019 (arXiv:1810.04805), Table 2, BERT-base single model, "
              "SQuAD v1.1 dev",
    "squad2": "Devlin et al. 2019 (arXiv:1810.04805), Table 3 reports BERT-large only "
              "(no BERT-base row to compare with)",
    "conll": "Devlin et al. 2019 (arXiv:1810.04805), Table 7, BERT-base fine-tuning, "
             "CoNLL-2003 NER dev F1",
}


def figure(value: Optional[float], source: str) -> dict[str, Any]:
  return {"value": value, "source": source}


def _pct(value: Optional[float]) -> str:
  if value is None or not math.isfinite(value):
    return "—"
  return f"{100 * value:.1f}"


def row_source(run: Run) -> str:
  return f"{os.path.join(run.workdir, 'metrics.jsonl')} step {run.best['step']}"


def from_row(run: Run, key: str) -> Optional[dict[str, Any]]:
  """The figure `eval_<key>` of the run's best-step eval row, or None if not logged."""
  if run.row is None or f"eval_{key}" not in run.row:
    return None
  value = run.row[f"eval_{key}"]
  return figure(float(value) if isinstance(value, (int, float)) else None, row_source(run))


def task_summary(runs: Sequence[Run], best: Run) -> dict[str, Any]:
  return {"learning_rate": best.learning_rate, "seed": best.seed, "workdir": best.workdir,
          "best_step": best.best["step"], "selected_by": best.best["metric"],
          "runs": [{"learning_rate": r.learning_rate, "seed": r.seed, "workdir": r.workdir,
                    "metric": r.best["metric"] if r.best else None,
                    "value": r.best["value"] if r.best else None} for r in runs]}


def glue_columns(best: dict[str, Run], extra: dict[tuple[str, str], dict]) -> list[dict]:
  """The paper's columns: our dev figure and source, the paper's test figure."""
  out = []
  for column, task, key in glue.COLUMNS:
    got = extra.get((task, key)) or (from_row(best[task], key) if task in best else None)
    out.append({"column": column, "task": task,
                "dev": got["value"] if got else None, "source": got["source"] if got else None,
                "paper_test": glue.PAPER_BERT_BASE_TEST.get(column)})
  values = {c["column"]: c["dev"] for c in out}
  parts = [values[c] for c in glue.AVERAGE_OF]
  average = (sum(parts) / len(parts)) if all(v is not None for v in parts) else None
  out.append({"column": "Average", "task": None, "dev": average,
              "source": f"mean of {', '.join(glue.AVERAGE_OF)}" if average is not None else
              f"needs all of {', '.join(glue.AVERAGE_OF)}",
              "paper_test": glue.PAPER_BERT_BASE_TEST["Average"]})
  return out


def glue_markdown(columns: list[dict], best: dict[str, Run]) -> str:
  shown = [c for c in columns if c["dev"] is not None or c["column"] == "Average"]
  head = "| | " + " | ".join(c["column"] for c in shown) + " |"
  rule = "|---|" + "---|" * len(shown)
  ours = "| bert_jax, dev | " + " | ".join(_pct(c["dev"]) for c in shown) + " |"
  lrs = "| learning rate | " + " | ".join(
      f"{best[c['task']].learning_rate:g}" if c["task"] in best else "" for c in shown) + " |"
  paper = "| BERT-base, test (paper) | " + " | ".join(
      f"{c['paper_test']:.1f}" if c["paper_test"] is not None else "—" for c in shown) + " |"
  lines = ["# GLUE (dev)", "", head, rule, ours, lrs, paper, "",
           f"Paper row: {glue.CITATION}. It is the test set (GLUE server); ours is the dev "
           "set, so the two rows are a reference, not a comparison.", "", "## Sources", ""]
  lines += [f"- {c['column']}: {c['source']}" for c in shown if c["source"]]
  return "\n".join(lines) + "\n"


def simple_markdown(title: str, figures: dict[str, dict], paper: Optional[dict],
                    note: str, best: Optional[Run]) -> str:
  names = list(figures)
  lines = [f"# {title}", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
           "| bert_jax, dev | " + " | ".join(_pct(figures[n]["value"]) for n in names) + " |"]
  if paper:
    lines.append("| BERT-base (paper) | " + " | ".join(
        f"{paper[n]:.1f}" if n in paper else "—" for n in names) + " |")
  if best is not None:
    lines += ["", f"Chosen learning rate {best.learning_rate:g} (seed {best.seed}), "
              f"{best.workdir}."]
  lines += ["", f"Paper: {note}.", "", "## Sources", ""]
  lines += [f"- {n}: {figures[n]['source']}" for n in names]
  return "\n".join(lines) + "\n"


def write(workdir: str, results: dict, markdown: str) -> None:
  body = (json.dumps(results, indent=1, allow_nan=False, default=_json_default) + "\n").encode()
  files.write_file_atomically(os.path.join(workdir, "results.json"), lambda f: f.write(body))
  files.write_file_atomically(os.path.join(workdir, "results.md"),
                              lambda f: f.write(markdown.encode("utf-8")))


def _json_default(value):
  raise TypeError(f"not JSON serialisable: {value!r}")


def clean(obj):
  """NaN/inf -> None, so results.json is strict JSON."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [clean(v) for v in obj]
  return obj
