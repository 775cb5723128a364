"""After a complete fine-tuning run: the Hugging Face export and the test file's predictions.

Why its own module: the trainer trains, evaluates and checkpoints; what is made
from the best model afterwards (WORKDIR/best_hf with `config.export_hf`,
WORKDIR/test_predictions.tsv from `config.test_file`) is export and inference,
which the trainer should not import.
"""

from __future__ import annotations

import os

from absl import logging
import jax
import ml_collections

from bert_jax import loop as loop_lib


def after_training(config: ml_collections.ConfigDict, workdir: str, head) -> None:
  """Process 0 only; a run without a `best/` export (no evaluation, pretraining) does nothing."""
  best = os.path.join(workdir, loop_lib.BEST_DIR)
  if jax.process_index() != 0:
    return
  if not os.path.isdir(best):
    if head.main_metric and config.eval_every_steps:
      logging.warning("no best/ export: eval_%s was never logged or never finite (see "
                      "metrics.jsonl)", head.main_metric)
    return
  if config.export_hf:
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    convert.convert(best, os.path.join(workdir, "best_hf"), "hf", overwrite=True)
    logging.info("exported %s as a Hugging Face dir: %s", best, os.path.join(workdir, "best_hf"))
  if config.test_file:
    from bert_jax import predict  # pylint: disable=g-import-not-at-top
    out = os.path.join(workdir, "test_predictions.tsv")
    predict.predict_file(best, config.test_file, out)
    logging.info("predictions of %s -> %s", config.test_file, out)
