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

from configs import bert_base


def get_config():
  """Phase 1's config at seq 512: 80 predictions per row, 100k steps, a short warmup."""
  c = bert_base.get_config()
  # Phase-1 model: a workdir, an export dir or a Hugging Face / Google BERT dir.
  c.init_checkpoint = ""
  # Tokens per row.
  c.max_seq_length = 512
  # Masked positions per row at seq 512.
  c.max_predictions_per_seq = 80
  # 10% of the paper's total steps (batch stays 256, lr 1e-4).
  c.num_train_steps = 100_000
  # Short warmup: the weights are already trained.
  c.warmup_steps = 1_000
  # Checkpoint more often: seq-512 steps are ~4x longer.
  c.checkpoint_every_steps = 5_000
  return c
