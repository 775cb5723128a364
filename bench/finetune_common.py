"""Shared parts of the fine-tuning benchmarks (tagging, QA): one recipe, two frameworks.

The recipe both sides follow: AdamW (b1 0.9, b2 0.999, eps 1e-6, weight decay
0.01 except biases and LayerNorm), linear warmup over `warmup_ratio` of the
steps then linear decay to 0, gradient clipping at global norm 1.0, dropout
0.1, float32, the same number of steps and batch size, rows shuffled each
epoch. bert_jax runs its user-facing command (`launch/finetune.py`) in a
subprocess and reports what its loop logs (`seq_per_sec` excludes the compile
step and evaluation); transformers is timed around its training steps (first
step excluded), each batch padded to its longest row as a `DataCollator` would.
The task benches (tagging, QA) also share their command line, data files and
report lines from here; the machine's figures and subprocess runs are bench/common.py's.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path

RECIPE = dict(batch_size=32, learning_rate=5e-4, warmup_ratio=0.1, weight_decay=0.01,
              max_grad_norm=1.0, seed=0)


def parse_args(doc: str, data_help: str, epochs: float) -> argparse.Namespace:
  """The command line the task benches share: --model, --data, --epochs."""
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--model", required=True, help="Hugging Face BERT dir")
  parser.add_argument("--data", default="", help=data_help)
  parser.add_argument("--epochs", type=float, default=epochs)
  return parser.parse_args()


def task_files(data_dir: str, tmp: str, ext: str, sample: str) -> dict:
  """{"train", "validation"}: DATA_DIR/{split}.EXT, or without --data the project's sample
  set `sample` of `bert_jax.data.sample_tasks`, written into `tmp`."""
  if data_dir:
    return {s: os.path.join(data_dir, f"{s}.{ext}") for s in ("train", "validation")}
  from bert_jax.data import sample_tasks  # pylint: disable=g-import-not-at-top
  return sample_tasks.write(os.path.join(tmp, "data"))[sample]


def run_bert_jax(workdir: str, overrides: dict) -> dict:
  """`launch/finetune.py` with configs/finetune.py and `overrides`; its logged figures."""
  rows, wall = common.run_launcher("finetune.py", workdir, "finetune.py", overrides,
                                   env=common.child_env(JAX_PLATFORMS="cpu"))
  speeds = [r["seq_per_sec"] for r in common.speed_rows(rows)]
  evals = [r for r in rows if any(k.startswith("eval_") for k in r)]
  return {"seq_per_sec": float(np.median(speeds)), "eval": evals[-1], "wall_s": wall}


def run_bert_jax_recipe(workdir: str, task: str, model: str, paths: dict, max_seq_length: int,
                        steps: int, **extra) -> dict:
  """`run_bert_jax` with RECIPE on `paths` (train, validation): one evaluation, at the end."""
  return run_bert_jax(workdir, {
      "task": task, "init_checkpoint": model, "train_file": paths["train"],
      "validation_file": paths["validation"], "max_seq_length": max_seq_length, **extra,
      "num_train_steps": steps, "eval_every_steps": steps, "batch_size": RECIPE["batch_size"],
      "learning_rate": RECIPE["learning_rate"], "warmup_ratio": RECIPE["warmup_ratio"],
      "warmup_steps": -1, "log_every_steps": max(1, steps // 10),
      "checkpoint_every_steps": steps})


def print_results(ours: dict, theirs: dict, steps: int, scores: Sequence[tuple[str, float, float]],
                  peer: str, ratio_label: str) -> None:
  """Three lines: each side's seq/s and `scores` (label, ours, theirs), then the ratios
  (speed, and the first score as `ratio_label`) with the load."""
  train_s = (steps - 1) * RECIPE["batch_size"] / theirs["seq_per_sec"]
  ours_scores = "  ".join(f"{label} {a:.4f}" for label, a, _ in scores)
  theirs_scores = "  ".join(f"{label} {b:.4f}" for label, _, b in scores)
  print(f"bert_jax     : {ours['seq_per_sec']:8.1f} seq/s  {ours_scores}  "
        f"(launch/finetune.py, {ours['wall_s']:.0f} s wall incl. start-up and compile)")
  print(f"transformers : {theirs['seq_per_sec']:8.1f} seq/s  {theirs_scores}  "
        f"({peer}; {train_s:.0f} s of training steps)")
  _, a, b = scores[0]
  print(f"ratio bert_jax / transformers: speed {ours['seq_per_sec'] / theirs['seq_per_sec']:.2f}x, "
        f"{ratio_label} {a / max(b, 1e-9):.3f}; {common.load_line()}")


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
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_decay(steps))


def warmup_then_decay(steps: int, warmup_ratio: float = RECIPE["warmup_ratio"]
                      ) -> Callable[[int], float]:
  """The lr factor of step `step`: linear warmup over `warmup_ratio` of the steps, then linear
  decay to 0 (bert_jax's schedule), for torch's LambdaLR."""
  warmup = int(round(warmup_ratio * steps))

  def factor(step):
    if step < warmup:
      return step / max(warmup, 1)
    return max(0.0, (steps - step) / max(steps - warmup, 1))

  return factor


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


def update(model, loss, opt, schedule) -> None:
  """One optimizer step of the recipe: backward, clip at `max_grad_norm`, AdamW, schedule."""
  import torch  # pylint: disable=g-import-not-at-top
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE["max_grad_norm"])
  opt.step()
  schedule.step()
  opt.zero_grad(set_to_none=True)


def torch_train(model, make_inputs: Callable[[np.ndarray], dict], num_rows: int,
                steps: int, stats: Optional[dict] = None) -> float:
  """Trains `steps` steps; returns seq/s over steps 2..N. `stats` (optional) receives
  `tokens_computed` / `tokens_real` (rows x padded width, and attention_mask's sum) of the
  timed steps and their `seconds`."""
  import torch  # pylint: disable=g-import-not-at-top
  opt, schedule = torch_optimizer(model, steps)
  model.train()
  batches = shuffled_batches(num_rows, RECIPE["batch_size"], RECIPE["seed"])
  start = None
  computed = real = 0
  for step in range(steps):
    if step == 1:
      start = time.perf_counter()
    inputs = make_inputs(next(batches))
    if step >= 1 and "attention_mask" in inputs:
      computed += int(inputs["attention_mask"].numel())
      real += int(inputs["attention_mask"].sum())
    update(model, model(**inputs).loss, opt, schedule)
  model.eval()
  seconds = time.perf_counter() - start
  if stats is not None:
    stats.update(tokens_computed=computed, tokens_real=real, seconds=seconds)
  return (steps - 1) * RECIPE["batch_size"] / seconds


def steps_for(num_rows: int, epochs: float) -> int:
  return max(2, math.ceil(epochs * num_rows / RECIPE["batch_size"]))


def pad(rows: list, value: int = 0):
  import torch  # pylint: disable=g-import-not-at-top
  width = max(len(r) for r in rows)
  out = np.full((len(rows), width), value, np.int64)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return torch.tensor(out)
