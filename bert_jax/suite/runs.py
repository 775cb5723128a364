"""The sweep: task x learning rate x seed, each a normal fine-tuning workdir, resumable.

Why in-process, one after another: each run takes the whole mesh (as the paper's
runs took a whole TPU), and a suite killed anywhere restarts where it stopped:
a run whose workdir says it finished (`suite_run.json` written after the
trainer returned, its final step in metrics.jsonl and `best/` present) is not
redone; a half-finished one is handed to the trainer again, which resumes from
its newest checkpoint bit-exactly. The best run of a task is the one with the
highest dev score of the task's main metric (the value in its `best/best.json`,
itself a metrics.jsonl row), over learning rates and seeds, as the paper picks.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

import ml_collections

from bert_jax import files
from bert_jax.errors import UserError
from bert_jax.progress import format_duration

DONE_FILE = "suite_run.json"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(path: str = os.path.join(ROOT, "configs", "finetune.py")
                ) -> ml_collections.ConfigDict:
  """A config file's get_config(), loaded by path as `--config=PATH` would load it."""
  if not os.path.isfile(path):
    raise UserError(f"config file {path} does not exist")
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # configs/ is a package at the repository root
  spec = importlib.util.spec_from_file_location("bert_jax_suite_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def parse_learning_rates(text: Sequence[str] | str) -> list[float]:
  """'5e-5,4e-5' (or a list of strings) -> floats; anything else names the bad item."""
  items = text.split(",") if isinstance(text, str) else list(text)
  out = []
  for item in items:
    try:
      value = float(str(item).strip())
    except ValueError:
      raise UserError(f"--learning_rates: {str(item).strip()!r} is not a number") from None
    if not value > 0:
      raise UserError(f"--learning_rates: {item} must be > 0")
    out.append(value)
  if not out:
    raise UserError("--learning_rates: give at least one learning rate")
  return out


def parse_task_epochs(text: Sequence[str] | str, known: Sequence[str]) -> dict[str, float]:
  """'mrpc=5,wnli=5' -> {'mrpc': 5.0, 'wnli': 5.0}: epochs for some tasks instead of the
  config's num_epochs (the paper's 3), as is common for the small MRPC and WNLI sets."""
  items = [i for i in (text.split(",") if isinstance(text, str) else list(text)) if i.strip()]
  out = {}
  for item in items:
    name, sep, value = str(item).partition("=")
    name = name.strip().lower()
    if not sep or name not in known:
      raise UserError(f"--task_epochs: {item.strip()!r} is not TASK=EPOCHS with TASK one of "
                      f"{', '.join(known)}")
    try:
      out[name] = float(value)
    except ValueError:
      raise UserError(f"--task_epochs: {value.strip()!r} (for {name}) is not a number") from None
    if out[name] <= 0:
      raise UserError(f"--task_epochs: {name}={value} must be > 0")
  return out


@dataclasses.dataclass
class Run:
  task: str
  learning_rate: float
  seed: int
  workdir: str
  best: Optional[dict] = None  # best.json: {step, metric, value}
  row: Optional[dict] = None  # the metrics.jsonl eval row at the best step
  final_step: Optional[int] = None
  seconds: float = 0.0
  skipped: bool = False

  @property
  def name(self) -> str:
    return os.path.basename(self.workdir)


def run_dir(workdir: str, task: str, lr: float, seed: int) -> str:
  return os.path.join(workdir, task, f"lr{lr:g}_seed{seed}")


def read_jsonl(path: str) -> list[dict]:
  rows = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          continue
  return rows


def finished(run_workdir: str) -> Optional[int]:
  """The final step when the run finished (see the module docstring), else None."""
  done = os.path.join(run_workdir, DONE_FILE)
  if not os.path.exists(done) or not os.path.isdir(os.path.join(run_workdir, "best")):
    return None
  step = files.read_json(done).get("final_step")
  rows = read_jsonl(os.path.join(run_workdir, "metrics.jsonl"))
  return step if any(r.get("step") == step for r in rows) else None


def collect(run: Run) -> Run:
  """Fills `best` and `row` from the run's best.json and metrics.jsonl."""
  best_file = os.path.join(run.workdir, "best", "best.json")
  if not os.path.exists(best_file):
    return run
  run.best = files.read_json(best_file)
  rows = read_jsonl(os.path.join(run.workdir, "metrics.jsonl"))
  evals = [r for r in rows if r.get("step") == run.best["step"]
           and any(k.startswith("eval_") for k in r)]
  run.row = evals[-1] if evals else None
  return run


def run_config(base: ml_collections.ConfigDict, keys: dict[str, Any], init_checkpoint: str,
               lr: float, seed: int) -> ml_collections.ConfigDict:
  c = copy.deepcopy(base)
  with c.unlocked():
    c.update(keys)
    c.update(init_checkpoint=init_checkpoint, learning_rate=lr, seed=seed, test_file="")
  return c


def sweep(base: ml_collections.ConfigDict, tasks: Sequence, init_checkpoint: str, workdir: str,
          learning_rates: Sequence[float], seeds: Sequence[int],
          train: Optional[Callable] = None, report: Callable[[str], None] = print
          ) -> tuple[list[Run], bool]:
  """Runs (or skips, or resumes) every run; returns (runs, preempted)."""
  if train is None:
    from bert_jax.train import train_and_evaluate as train  # pylint: disable=g-import-not-at-top
  runs = []
  total = len(tasks) * len(learning_rates) * len(seeds)
  for task in tasks:
    for lr in learning_rates:
      for seed in seeds:
        run = Run(task.name, lr, seed, run_dir(workdir, task.name, lr, seed))
        label = f"[{len(runs) + 1}/{total}] {task.name} lr={lr:g} seed={seed}"
        step = finished(run.workdir)
        if step is not None:
          run.final_step, run.skipped = step, True
        else:
          start = time.time()
          result = train(run_config(base, task.config, init_checkpoint, lr, seed), run.workdir)
          run.seconds = time.time() - start
          if result.get("preempted"):
            report(f"{label}: preempted at step {result['step']}; run the same command again "
                   "to resume")
            return runs, True
          run.final_step = int(result["step"])
          marker = json.dumps({"final_step": run.final_step, "learning_rate": lr,
                               "seed": seed}).encode()
          files.write_file_atomically(os.path.join(run.workdir, DONE_FILE),
                                      lambda f, m=marker: f.write(m))
        collect(run)
        runs.append(run)
        report(run_line(label, run))
  return runs, False


def run_line(label: str, run: Run) -> str:
  if run.best is None:
    score = "no evaluation (no best/ model)"
  else:
    score = (f"{run.best['metric']} {run.best['value']:.4f} (best at step {run.best['step']}/"
             f"{run.final_step})")
  how = "done before, skipped" if run.skipped else format_duration(run.seconds)
  return f"{label}: {score} | {how} | {run.workdir}"


def best_runs(runs: Sequence[Run]) -> dict[str, Run]:
  """{task: its run with the highest best.json value} (runs without one never win)."""
  out: dict[str, Run] = {}
  for run in runs:
    if run.best is None:
      continue
    if run.task not in out or run.best["value"] > out[run.task].best["value"]:
      out[run.task] = run
  return out
