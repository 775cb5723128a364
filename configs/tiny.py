r"""CPU-sized pretraining: a 'tiny' BERT (2 layers, hidden 128) at seq 128, in minutes.

Build a vocabulary and prepare the shipped sample corpus once, then train:

  python launch/build_vocab.py --input=bert_jax/data/sample_corpus.txt \
      --output=/tmp/bert_tiny_vocab --vocab_size=2000 --lowercase
  python launch/prepare_data.py --input=bert_jax/data/sample_corpus.txt \
      --vocab=/tmp/bert_tiny_vocab --output=/tmp/bert_tiny_data --max_seq_length=128 \
      --eval_fraction=0.05
  python launch/pretrain.py --config=configs/tiny.py --workdir=/tmp/bert_tiny

Measured (2-core CPU shared with other jobs; the numbers are deterministic, the times not):
300 steps in 1-4 minutes at 50-220 seq/s; loss 8.3 -> 5.9, mlm_accuracy 0.00 -> 0.15,
eval_mlm_accuracy 0.155 and eval_nsp_accuracy 0.69 at step 300 (unigram level: checks the
plumbing). With --config.num_train_steps=1500 (4.5 minutes): eval_mlm_accuracy 0.29 and
eval_nsp_accuracy 0.84 at step 1500, as the model starts to learn the corpus' facts.
"""

import importlib.util
import os

# Load default.py next to this file (config files are loaded by path, not as a package).
_spec = importlib.util.spec_from_file_location(
    "bert_jax_configs_default", os.path.join(os.path.dirname(__file__), "default.py"))
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)


def get_config():
  """Tiny model, small batch, frequent logs/evals/checkpoints."""
  c = default.get_config()
  # Prepared sample corpus (see the docstring); override with --config.train_data.
  c.train_data = "/tmp/bert_tiny_data"
  # Model size preset.
  c.model.preset = "tiny"
  # Rows per step.
  c.batch_size = 32
  # Steps: a few minutes on a laptop CPU.
  c.num_train_steps = 300
  # A higher peak LR suits the tiny model and the short run.
  c.learning_rate = 1e-3
  # Warmup over the first 10% of steps.
  c.warmup_steps = 30
  # Log often.
  c.log_every_steps = 10
  # Evaluate a few times per run.
  c.eval_every_steps = 100
  # Small fixed evaluation.
  c.num_eval_batches = 4
  # Checkpoint a few times per run.
  c.checkpoint_every_steps = 100
  # Masked positions per 128-token row.
  c.max_predictions_per_seq = 20
  return c
