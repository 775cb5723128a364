"""Training curves of one or several runs, from each run's metrics.jsonl.

Why from metrics.jsonl and not TensorBoard: it is the record every run writes
(train rows and `eval_*` rows, one JSON object per logged step), so a plot can
be redrawn from a copied workdir with nothing else installed, and what is drawn
is exactly what the run logged. `curves` returns the plotted data (the figure's
lines hold the same numbers), so a test checks values, not pixels.

Runs are named by their directory's basename; two runs with the same basename
(`a/seed1` and `b/seed1`) get as many parent directories as it takes to tell
them apart (`a/seed1`, `b/seed1`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional, Sequence

from bert_jax import files
from bert_jax.errors import UserError

X_AXES = ("step", "tokens")
DEFAULT_METRICS = ("loss", "eval_accuracy")

# {metric: {run name: (x values, y values)}}
Curves = dict[str, dict[str, tuple[list[float], list[float]]]]


def read_metrics(workdir: str) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl (a torn last line of a killed run is skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isdir(workdir):
    raise UserError(f"run dir {workdir} does not exist")
  if not os.path.exists(path):
    raise UserError(f"{workdir} has no metrics.jsonl (not a training workdir?)")
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and "step" in row:
        rows.append(row)
  return rows


def run_names(workdirs: Sequence[str]) -> list[str]:
  """The basename of each dir, with parent dirs added until the names differ."""
  parts = [os.path.abspath(d).rstrip(os.sep).split(os.sep) for d in workdirs]
  depth = [1] * len(parts)
  while True:
    names = ["/".join(p[-k:]) for p, k in zip(parts, depth)]
    clashes = {n for n in names if names.count(n) > 1}
    if not clashes:
      return names
    grown = False
    for i, name in enumerate(names):
      if name in clashes and depth[i] < len(parts[i]):
        depth[i] += 1
        grown = True
    if not grown:  # the same dir given twice
      return [f"{n} ({i + 1})" if n in clashes else n for i, n in enumerate(names)]


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _x_value(row: dict, x: str, tokens_per_step: Optional[float]) -> Optional[float]:
  if x == "step":
    return float(row["step"])
  if _finite(row.get("tokens")):
    return float(row["tokens"])
  return float(row["step"]) * tokens_per_step if tokens_per_step else None


def _tokens_per_step(rows: list[dict]) -> Optional[float]:
  """Tokens per step from a run's own rows: tokens / step of a row that logs `tokens`."""
  for row in rows:
    if _finite(row.get("tokens")) and row["step"]:
      return float(row["tokens"]) / float(row["step"])
  return None


def curves(workdirs: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS,
           x: str = "step") -> Curves:
  """{metric: {run: (xs, ys)}} of each finite logged value, in step order.

  A metric no run has is a UserError naming it and the metrics that exist; a run
  without a metric the others have is left out of that subplot.
  """
  if x not in X_AXES:
    raise UserError(f"--x={x}: expected one of {list(X_AXES)}")
  if not workdirs:
    raise UserError("no run dirs given")
  if not metrics:
    raise UserError("no metrics given")
  runs = {name: read_metrics(d) for name, d in zip(run_names(workdirs), workdirs)}
  out: Curves = {}
  for metric in metrics:
    out[metric] = {}
    for name, rows in runs.items():
      per_step = _tokens_per_step(rows) if x == "tokens" else None
      if x == "tokens" and per_step is None and any(metric in r for r in rows):
        raise UserError(f"--x=tokens: run {name} logs no 'tokens' column; use --x=step")
      points = sorted((_x_value(r, x, per_step), float(r[metric])) for r in rows
                      if _finite(r.get(metric)))
      if points:
        out[metric][name] = ([p[0] for p in points], [p[1] for p in points])
    if not out[metric]:
      known = sorted({k for rows in runs.values() for r in rows for k, v in r.items()
                      if k != "step" and _finite(v)})
      raise UserError(f"no run logged metric {metric!r}; logged: {', '.join(known)}")
  return out


def draw(data: Curves, x: str = "step", title: str = ""):
  """A matplotlib Figure: one subplot per metric, one line per run (legend by run name)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(data)
  fig, axes = plt.subplots(n, 1, figsize=(7, 3 * n), squeeze=False, sharex=True)
  for ax, (metric, runs) in zip(axes[:, 0], data.items()):
    for name, (xs, ys) in runs.items():
      ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=name)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
  axes[-1, 0].set_xlabel(x)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def save(fig, output: str) -> None:
  """Writes the figure as PNG atomically; the output dir must exist."""
  directory = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(directory):
    raise UserError(f"--output={output}: directory {directory} does not exist")
  if not output.lower().endswith(".png"):
    raise UserError(f"--output={output}: the plot is a PNG; name it *.png")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  files.write_file_atomically(output, lambda f: fig.savefig(f, format="png", dpi=110))
  plt.close(fig)


def plot_runs(workdirs: Sequence[str], output: str, metrics: Sequence[str] = DEFAULT_METRICS,
              x: str = "step", title: str = "") -> Curves:
  """Reads, draws and writes `output`; returns the plotted data."""
  directory = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(directory):  # before any work
    raise UserError(f"--output={output}: directory {directory} does not exist")
  data = curves(workdirs, metrics, x)
  save(draw(data, x, title), output)
  return data
