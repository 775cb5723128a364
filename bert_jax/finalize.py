"""After a complete fine-tuning run: the Hugging Face export and the test file's predictions.

Why its own module: the trainer trains, evaluates and checkpoints; what is made
from the best model afterwards (WORKDIR/best_hf with `config.export_hf`,
WORKDIR/test_predictions.tsv from `config.test_file`) is export and inference,
which the trainer should not import. A LoRA run's best/ is first split here into
WORKDIR/best_lora (the adapters and head alone, with lora.json) and a plain best/
with the adapters merged into the kernels, so every later step (and every tool)
reads an ordinary model.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

from absl import logging
import jax
import ml_collections

from bert_jax import files
from bert_jax import lora as lora_lib
from bert_jax import loop as loop_lib
from bert_jax.formats import model_dir

BEST_LORA_DIR = "best_lora"


def after_training(config: ml_collections.ConfigDict, workdir: str, head,
                   lora: Optional[lora_lib.Settings] = None,
                   lora_modules: tuple[str, ...] = ()) -> None:
  """Process 0 only; a run without a `best/` export (no evaluation, pretraining) does nothing."""
  best = os.path.join(workdir, loop_lib.BEST_DIR)
  if jax.process_index() != 0:
    return
  if not os.path.isdir(best):
    if head.main_metric and config.eval_every_steps:
      logging.warning("no best/ export: eval_%s was never logged or never finite (see "
                      "metrics.jsonl)", head.main_metric)
    return
  if lora is not None:
    merge_lora_export(best, os.path.join(workdir, BEST_LORA_DIR), lora, lora_modules,
                      config.init_checkpoint, head)
  if config.export_hf:
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    convert.convert(best, os.path.join(workdir, "best_hf"), "hf", overwrite=True)
    logging.info("exported %s as a Hugging Face dir: %s", best, os.path.join(workdir, "best_hf"))
  if config.test_file:
    from bert_jax import predict  # pylint: disable=g-import-not-at-top
    out = os.path.join(workdir, "test_predictions.tsv")
    predict.predict_file(best, config.test_file, out)
    logging.info("predictions of %s -> %s", config.test_file, out)


def merge_lora_export(best: str, adapters_dir: str, lora: lora_lib.Settings,
                      modules: tuple[str, ...], base_model: str, head) -> None:
  """best/ with adapters -> ADAPTERS_DIR (adapters + head, lora.json, and peft's files when
  the head has a transformers class) and a merged best/.

  Each output is replaced whole (Orbax saves to a temporary name and renames); a best/
  already merged (a finished run started again) is left as it is. Process 0 only.
  """
  params_dir = os.path.abspath(os.path.join(best, model_dir.PARAMS_DIR))
  params = lora_lib.process0_checkpointer().restore(params_dir)
  if not lora_lib.has_adapters(params):
    return
  best_record = files.read_json(os.path.join(best, loop_lib.BEST_FILE))
  also = None
  if head.architecture is not None:
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    config = convert.read_model_config(best)
    also = lambda tmp: lora_lib.write_peft_adapter(  # pylint: disable=g-long-lambda
        tmp, params, lora, config, head, head.spec.num_labels, base_model)
  lora_lib.save_adapters(adapters_dir, params, lora, modules,
                         {"base_model": base_model, "best": best_record}, also)
  merged_dir, old_dir = params_dir + ".merged", params_dir + ".old"
  for stale in (merged_dir, old_dir):
    if os.path.exists(stale):
      shutil.rmtree(stale)
  checkpointer = lora_lib.process0_checkpointer()
  checkpointer.save(merged_dir, lora_lib.merge(params, lora.scale))
  checkpointer.wait_until_finished()
  checkpointer.close()
  os.replace(params_dir, old_dir)
  os.replace(merged_dir, params_dir)
  shutil.rmtree(old_dir)
  logging.info("LoRA: adapters merged into %s; adapters and head alone in %s", best,
               adapters_dir)
