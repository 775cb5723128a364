"""Optimizers and learning-rate schedules for BERT pretraining.

Why here and not inline in the trainer: the recipe (AdamW with decoupled weight
decay that skips LayerNorm and bias parameters, linear warmup then decay) is
what makes a BERT run match the paper, and LAMB is the large-batch variant;
both are a function of the config only and are tested on their own.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import ml_collections
import optax

from bert_jax.errors import UserError

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "polynomial", "cosine", "constant", "wsd")

# Leaf names that never get weight decay (BERT: "LayerNorm", "layer_norm", "bias").
_NO_DECAY = ("bias", "scale", "output_bias")


def run_steps(config: ml_collections.ConfigDict,
              num_train_examples: Optional[int]) -> Optional[int]:
  """The run's optimizer steps: `num_train_steps` when > 0, else `num_epochs` of
  `num_train_examples` at `batch_size` (None when neither gives a number)."""
  if config.num_train_steps and config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.batch_size < 1:
    raise UserError(f"config.batch_size={config.batch_size} must be >= 1")
  epochs = config.get("num_epochs")
  if epochs and epochs > 0 and num_train_examples:
    return max(1, math.ceil(epochs * num_train_examples / config.batch_size))
  return None


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup 0 -> learning_rate, then the decay `config.schedule` to the end."""
  if config.schedule not in SCHEDULES:
    raise UserError(f"config.schedule={config.schedule!r} is not one of {SCHEDULES}")
  peak = float(config.learning_rate)
  warmup = int(config.warmup_steps)
  total = int(config.num_train_steps)
  end = peak * float(config.end_learning_rate_ratio)
  decay_steps = max(total - warmup, 1)
  if config.schedule == "wsd":
    if "wsd_decay_fraction" not in config:
      raise UserError("config.schedule='wsd' needs config.wsd_decay_fraction (the fraction of "
                      "num_train_steps spent decaying, e.g. 0.1)")
    return warmup_stable_decay(peak, warmup, total, float(config.wsd_decay_fraction), end)
  if config.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif config.schedule == "polynomial":
    decay = optax.polynomial_schedule(peak, end, float(config.schedule_power), decay_steps)
  elif config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  else:
    decay = optax.constant_schedule(peak)
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def warmup_stable_decay(peak: float, warmup_steps: int, total_steps: int,
                        decay_fraction: float, end: float = 0.0) -> optax.Schedule:
  """Warmup-stable-decay (the "trapezoidal" schedule of ModernBERT and MiniCPM): linear
  warmup 0 -> peak, `peak` held, then a linear decay to `end` over the last
  `decay_fraction` of `total_steps`. A run can branch off the stable phase and decay at
  any point, so one long run serves several budgets."""
  if not 0.0 <= decay_fraction <= 1.0:
    raise UserError(f"config.wsd_decay_fraction={decay_fraction} must be in [0, 1]")
  decay = int(round(total_steps * decay_fraction))
  stable = max(total_steps - warmup_steps - decay, 0)
  parts = [optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
           optax.constant_schedule(peak),
           optax.linear_schedule(peak, end, max(decay, 1))]
  return optax.join_schedules(parts, [max(warmup_steps, 0), max(warmup_steps, 0) + stable])


def weight_decay_mask(params: Any) -> Any:
  """True for the leaves that get weight decay: kernels and embedding tables."""

  def decays(path, _):
    name = getattr(path[-1], "key", str(path[-1]))
    return name not in _NO_DECAY

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                              optax.Schedule]:
  """(gradient transformation, schedule); clipping by global norm comes first."""
  if config.optimizer not in OPTIMIZERS:
    raise UserError(f"config.optimizer={config.optimizer!r} is not one of {OPTIMIZERS}")
  schedule = make_schedule(config)
  common = dict(learning_rate=schedule, b1=float(config.adam_b1), b2=float(config.adam_b2),
                eps=float(config.adam_eps), weight_decay=float(config.weight_decay),
                mask=weight_decay_mask)
  if config.optimizer == "adamw":
    opt = optax.adamw(**common)
  else:
    opt = optax.lamb(**common)
  parts = []
  if config.max_grad_norm and config.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(float(config.max_grad_norm)))
  parts.append(opt)
  return optax.chain(*parts), schedule
