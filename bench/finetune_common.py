"""Shared parts of the fine-tuning benchmarks (tagging, QA): one recipe, two frameworks.

The recipe both sides follow: AdamW (b1 0.9, b2 0.999, eps 1e-6, weight decay
0.01 except biases and LayerNorm), linear warmup over `warmup_ratio` of the
steps then linear decay to 0, gradient clipping at global norm 1.0, dropout
0.1, float32, the same number of steps and batch size, rows shuffled each
epoch. bert_jax runs its user-facing command (`launch/finetune.py`) in a
subprocess and reports what its loop logs (`seq_per_sec` excludes the compile
step and evaluation); transformers is timed around its training steps (first
step excluded), each batch padded to its longest row as a `DataCollator` would.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Callable, Iterator

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = dict(batch_size=32, learning_rate=5e-4, warmup_ratio=0.1, weight_decay=0.01,
              max_grad_norm=1.0, seed=0)


def load_line() -> str:
  one, five, fifteen = os.getloadavg()
  return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def run_bert_jax(workdir: str, overrides: dict) -> dict:
  """`launch/finetune.py` with configs/finetune.py and `overrides`; its logged figures."""
  args = [sys.executable, os.path.join(REPO, "launch", "finetune.py"),
          f"--config={os.path.join(REPO, 'configs', 'finetune.py')}", f"--workdir={workdir}"]
  args += [f"--config.{k}={v}" for k, v in overrides.items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  start = time.perf_counter()
  proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if proc.returncode:
    raise SystemExit(f"bert_jax fine-tuning failed:\n{proc.stderr[-3000:]}")
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  speeds = [r["seq_per_sec"] for r in rows if r.get("seq_per_sec")]
  evals = [r for r in rows if any(k.startswith("eval_") for k in r)]
  return {"seq_per_sec": float(np.median(speeds)), "eval": evals[-1], "wall_s": wall}


def seed_torch() -> None:
  """Seeds torch before the model is built, so its fresh head is the same every run."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(RECIPE["seed"])
  torch.set_num_threads(os.cpu_count() or 1)


def torch_optimizer(model, steps: int):
  import torch  # pylint: disable=g-import-not-at-top
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": RECIPE["weight_decay"]},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=RECIPE["learning_rate"], betas=(0.9, 0.999), eps=1e-6)
  warmup = int(round(RECIPE["warmup_ratio"] * steps))

  def factor(step):
    if step < warmup:
      return step / max(warmup, 1)
    return max(0.0, (steps - step) / max(steps - warmup, 1))

  return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def shuffled_batches(num_rows: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
  """Row indices of each batch, a fresh permutation every epoch (the last rows of an
  epoch continue into the next one, as the bert_jax stream does)."""
  rng = np.random.default_rng(seed)
  pending = np.zeros(0, np.int64)
  while True:
    while len(pending) < batch_size:
      pending = np.concatenate([pending, rng.permutation(num_rows)])
    yield pending[:batch_size]
    pending = pending[batch_size:]


def torch_train(model, make_inputs: Callable[[np.ndarray], dict], num_rows: int,
                steps: int) -> float:
  """Trains `steps` steps; returns seq/s over steps 2..N."""
  import torch  # pylint: disable=g-import-not-at-top
  opt, schedule = torch_optimizer(model, steps)
  model.train()
  batches = shuffled_batches(num_rows, RECIPE["batch_size"], RECIPE["seed"])
  start = None
  for step in range(steps):
    if step == 1:
      start = time.perf_counter()
    loss = model(**make_inputs(next(batches))).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE["max_grad_norm"])
    opt.step()
    schedule.step()
    opt.zero_grad(set_to_none=True)
  model.eval()
  return (steps - 1) * RECIPE["batch_size"] / (time.perf_counter() - start)


def steps_for(num_rows: int, epochs: float) -> int:
  return max(2, math.ceil(epochs * num_rows / RECIPE["batch_size"]))


def pad(rows: list, value: int = 0):
  import torch  # pylint: disable=g-import-not-at-top
  width = max(len(r) for r in rows)
  out = np.full((len(rows), width), value, np.int64)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return torch.tensor(out)
