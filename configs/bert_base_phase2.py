r"""BERT-base phase 2: seq 512 for the last 10% of training, from a phase-1 checkpoint.

  python launch/prepare_data.py --input=... --vocab=VOCAB_DIR \
      --output=gs://BUCKET/bert_data_512 --max_seq_length=512
  python launch/pretrain.py --config=configs/bert_base_phase2.py \
      --workdir=gs://BUCKET/bert_base_p2 --config.train_data=gs://BUCKET/bert_data_512 \
      --config.init_checkpoint=gs://BUCKET/bert_base

init_checkpoint is any model path (here the phase-1 workdir: its newest checkpoint's
params); the optimizer state starts fresh. Expect MLM accuracy to dip for a few hundred
steps (new position rows 128-511 are barely trained) and recover to phase-1 levels; the
whole phase takes ~1/4 of phase 1's time (the paper: 100k of 1M steps).
"""

import importlib.util
import os

# Load default.py next to this file (config files are loaded by path, not as a package).
_spec = importlib.util.spec_from_file_location(
    "bert_jax_configs_default", os.path.join(os.path.dirname(__file__), "default.py"))
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)


def get_config():
  """Seq 512, 80 predictions per row, 100k steps, lr 1e-4 with a short warmup."""
  c = default.get_config()
  # Model size preset (must match the phase-1 model).
  c.model.preset = "base"
  # bfloat16 compute.
  c.dtype = "bfloat16"
  # Phase-1 model: a workdir, an export dir or a Hugging Face / Google BERT dir.
  c.init_checkpoint = ""
  # Tokens per row.
  c.max_seq_length = 512
  # Masked positions per row at seq 512.
  c.max_predictions_per_seq = 80
  # Global batch (paper: 256 sequences of 512 tokens).
  c.batch_size = 256
  # 10% of the paper's total steps.
  c.num_train_steps = 100_000
  # Peak learning rate.
  c.learning_rate = 1e-4
  # Short warmup: the weights are already trained.
  c.warmup_steps = 1_000
  # Logging period.
  c.log_every_steps = 1000
  # Evaluation and checkpoint periods.
  c.eval_every_steps = 10_000
  # Checkpoint period.
  c.checkpoint_every_steps = 5_000
  return c
