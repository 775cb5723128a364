"""One command for the paper's tables: data -> sweep -> best runs -> table, plots, submission.

Why a library function behind launch/benchmark.py: the launcher only parses
flags; this is callable from a notebook or a test with a config and a trainer
(`train` defaults to `bert_jax.train.train_and_evaluate`). Order matters for a
long job: every input is checked first (task names, files, test-set sizes),
then the runs go one after another (resumable, see runs.py), and only then are
predictions, plots, the submission and the report written from the runs'
workdirs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import ml_collections

from bert_jax import plots
from bert_jax.errors import UserError
from bert_jax.suite import data as data_lib
from bert_jax.suite import glue
from bert_jax.suite import report
from bert_jax.suite import runs as runs_lib
from bert_jax.suite import scoring
from bert_jax.suite import submission

SUITES = ("glue", "squad1", "squad2", "conll")


@dataclasses.dataclass
class Options:
  suite: str
  init_checkpoint: str
  workdir: str
  tasks: Sequence[str] = ()
  learning_rates: Sequence[float] = (5e-5, 4e-5, 3e-5, 2e-5)
  seeds: int = 1
  data: str = "tfds"
  check_counts: bool = True
  task_epochs: dict = dataclasses.field(default_factory=dict)  # {task: num_epochs}


def _tasks(options: Options, tfds_data_dir: Optional[str]) -> list[data_lib.TaskData]:
  if options.suite == "glue":
    chosen = glue.resolve_tasks(list(options.tasks))
    return data_lib.glue_tasks(chosen, options.data, options.workdir, options.check_counts,
                               tfds_data_dir)
  own = {"squad1": "squad", "squad2": "squad", "conll": "conll"}[options.suite]
  if options.tasks and list(options.tasks) != [own]:
    raise UserError(f"--tasks={','.join(options.tasks)}: --suite={options.suite} has the one "
                    f"task {own!r}")
  if own == "squad":
    version = "1.1" if options.suite == "squad1" else "2.0"
    return [data_lib.squad_task(version, options.data, options.workdir, tfds_data_dir)]
  return [data_lib.conll_task(options.data, options.workdir, tfds_data_dir)]


def check_options(options: Options) -> None:
  if options.suite not in SUITES:
    raise UserError(f"--suite={options.suite}: expected one of {', '.join(SUITES)}")
  if not options.init_checkpoint:
    raise UserError("--init_checkpoint=PATH is required (the model to fine-tune)")
  if not os.path.exists(options.init_checkpoint):
    raise UserError(f"--init_checkpoint={options.init_checkpoint} does not exist")
  if options.seeds < 1:
    raise UserError(f"--seeds={options.seeds}: must be >= 1")
  if not options.learning_rates:
    raise UserError("--learning_rates: give at least one learning rate")


def _plots(workdir: str, by_task: dict[str, list[runs_lib.Run]], say: Callable) -> list[str]:
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  written = []
  for task, task_runs in by_task.items():
    metric = next((r.best["metric"] for r in task_runs if r.best), None)
    output = os.path.join(workdir, "plots", f"{task}.png")
    plots.plot_runs([r.workdir for r in task_runs], output,
                    ["loss"] + ([metric] if metric else []), title=f"{task}: runs of the sweep")
    written.append(output)
  say(f"plots -> {os.path.join(workdir, 'plots')}/ ({len(written)} file(s))")
  return written


def run(options: Options, base: ml_collections.ConfigDict, train: Optional[Callable] = None,
        say: Callable[[str], None] = print,
        predict_file: Optional[Callable[[str, str, str], int]] = None) -> dict[str, Any]:
  """Runs the suite; returns results.json's content (with `preempted` when stopped)."""
  check_options(options)
  tfds_data_dir = base.get("tfds_data_dir") or None
  tasks = _tasks(options, tfds_data_dir)
  for t in tasks:
    if t.name in options.task_epochs:
      t.config["num_epochs"] = float(options.task_epochs[t.name])
  seeds = list(range(1, options.seeds + 1))
  all_runs, preempted = runs_lib.sweep(base, tasks, options.init_checkpoint, options.workdir,
                                       options.learning_rates, seeds, train=train, report=say)
  if preempted:
    return {"preempted": True}
  best = runs_lib.best_runs(all_runs)
  missing = [t.name for t in tasks if t.name not in best]
  if missing:
    raise UserError(f"no evaluated model for {', '.join(missing)} (no validation set, or "
                    "config.eval_every_steps=0?)")
  by_task = {t.name: [r for r in all_runs if r.task == t.name] for t in tasks}
  results: dict[str, Any] = {
      "suite": options.suite, "init_checkpoint": options.init_checkpoint,
      "data": options.data, "learning_rates": list(options.learning_rates), "seeds": seeds,
      "tasks": {name: report.task_summary(by_task[name], run) for name, run in best.items()}}
  results["plots"] = _plots(options.workdir, by_task, say)
  model = lambda name: os.path.join(best[name].workdir, "best")  # pylint: disable=unnecessary-lambda-assignment
  if options.suite == "glue":
    extra = {}
    for t in tasks:
      for role, path in t.dev_files.items():  # MNLI-mm from the GLUE download's files
        out = os.path.join(options.workdir, t.name, "predictions", f"dev_{role}.tsv")
        value = scoring.accuracy_from_predictions(model(t.name), path, out, predict_file)
        extra[(t.name, f"{role}_accuracy")] = report.figure(
            value, f"{out} scored against {path} ({best[t.name].workdir}/best)")
    columns = report.glue_columns(best, extra)
    results["columns"] = columns
    results["paper"] = {"citation": glue.CITATION, "row": glue.PAPER_BERT_BASE_TEST}
    written = submission.write(options.workdir, {n: model(n) for n in best},
                               {t.name: t.test_files for t in tasks}, predict_file)
    results["submission"] = {"dir": os.path.join(options.workdir, "submission"),
                             "zip": os.path.join(options.workdir, "submission.zip"),
                             "files": written, "missing": submission.missing_files(written)}
    markdown = report.glue_markdown(columns, best)
    if results["submission"]["missing"]:
      markdown += ("\nThe submission lacks " + ", ".join(results["submission"]["missing"]) +
                   ": the GLUE server needs every file.\n")
  else:
    name = tasks[0].name
    run_ = best[name]
    if name == "squad":
      scores, path = scoring.squad_report(model(name), tasks[0].dev_files[""],
                                          os.path.join(options.workdir, name, "predictions"))
      figures = {"EM": report.from_row(run_, "exact_match"), "F1": report.from_row(run_, "f1")}
      source = f"{path} scored against {tasks[0].dev_files['']} ({run_.workdir}/best)"
      for key in ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
                  "best_f1"):
        if key in scores:
          figures[key] = report.figure(scores[key], source)
      results["predictions"] = path
      results["official"] = scores
      title = f"SQuAD v{'1.1' if options.suite == 'squad1' else '2.0'} (dev)"
    else:
      scores, path = scoring.conll_report(model(name), tasks[0].dev_files[""],
                                          os.path.join(options.workdir, name, "predictions"),
                                          predict_file)
      source = f"{path} scored against {tasks[0].dev_files['']} ({run_.workdir}/best)"
      figures = {"F1": report.from_row(run_, "f1"),
                 "precision": report.from_row(run_, "precision"),
                 "recall": report.from_row(run_, "recall")}
      for kind, s in scores.items():
        if kind != "overall":
          figures[f"{kind} F1"] = report.figure(s["f1"], source)
      results["per_type"] = scores
      results["predictions"] = path
      title = "CoNLL-2003 NER (dev, entity level)"
    figures = {k: v for k, v in figures.items() if v is not None}
    results["figures"] = figures
    results["paper"] = {"citation": report.PAPER_NOTES[options.suite],
                        "row": report.PAPER_ROWS.get(options.suite)}
    markdown = report.simple_markdown(title, figures, report.PAPER_ROWS.get(options.suite),
                                      report.PAPER_NOTES[options.suite], run_)
    if "best_f1_thresh" in results.get("official", {}):
      o = results["official"]
      markdown += (f"\nBest null threshold (null score - best span score, the official script's "
                   f"search over {results['predictions']} and null_odds.json): "
                   f"{o['best_f1_thresh']:.3f} for F1, {o['best_exact_thresh']:.3f} for EM.\n")
  results = report.clean(results)
  report.write(options.workdir, results, markdown)
  say("")
  say(markdown.rstrip())
  say(f"\n-> {os.path.join(options.workdir, 'results.md')}, results.json")
  return results
