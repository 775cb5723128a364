"""Logged metrics: weighted averages over the window, the learning rate of the logged step."""

import numpy as np

from bert_jax import loop
from bert_jax import metrics
from bert_jax import heads
from bert_jax.tasks import pretraining
from conftest import tiny_config


def test_window_row_weights_by_denominators_and_keeps_the_last_learning_rate():
  acc = metrics.Accumulator()
  acc.add(dict(mlm_loss_sum=np.float32(6.0), mlm_correct=1.0, mlm_weight=3.0, nsp_loss_sum=1.0,
               nsp_correct=1.0, nsp_count=2.0, grad_norm=1.0, learning_rate=1e-5))
  acc.add(dict(mlm_loss_sum=1.0, mlm_correct=1.0, mlm_weight=1.0, nsp_loss_sum=0.0,
               nsp_correct=2.0, nsp_count=2.0, grad_norm=3.0, learning_rate=2e-5))
  task = heads.for_spec(pretraining.spec_of(tiny_config(), {"vocab_size": 128}))
  out = loop.summarize(task, acc.sums, acc.steps, acc.last)
  # Per-token averages over the whole window (1.75 and 0.5), not the mean of the per-step
  # averages (1.5 and 0.667): steps with more masked tokens weigh more.
  assert out["mlm_loss"] == 7.0 / 4.0 and out["mlm_accuracy"] == 2.0 / 4.0
  assert out["nsp_loss"] == 0.25 and out["nsp_accuracy"] == 0.75
  assert out["loss"] == out["mlm_loss"] + out["nsp_loss"]
  assert out["grad_norm"] == 2.0
  assert out["learning_rate"] == 2e-5
