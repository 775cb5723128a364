r"""CPU-sized ModernBERT: configs/tiny.py's size (2 layers, 128 wide) with ModernBERT's
switches (configs/modernbert_base.py): RoPE, GeGLU, pre-LN, no biases, sliding window,
30% MLM only, warmup-stable-decay.

The sample corpus prepared as full rows (no NSP pairs):

  python launch/build_vocab.py --input=bert_jax/data/sample_corpus.txt \
      --output=/tmp/bert_tiny_vocab --vocab_size=4000 --lowercase
  python launch/prepare_data.py --input=bert_jax/data/sample_corpus.txt \
      --vocab=/tmp/bert_tiny_vocab --output=/tmp/modern_tiny_data --max_seq_length=64 \
      --eval_fraction=0.05 --mode=packed
  python launch/pretrain.py --config=configs/modern_tiny.py --workdir=/tmp/modern_tiny

With 3 layers the pattern is global, local, local: the window of 32 (16 either side) is
half the 64-token row, so the local layers do see less.

Measured (2026-12-03, 2 shared cores, load ~4; BENCHMARKS.md "Modern tiny vs classic
tiny"): held-out eval_mlm_accuracy 0.66 after 300 steps and 0.70 after 600 (configs/tiny.py:
0.20 and 0.31), at 0.68x its seq/s (165 vs 242); RoPE is what makes the difference.
"""

from configs import modernbert_base
from configs import tiny


def get_config():
  """tiny.py's run (batch, steps, logging) with the ModernBERT architecture at tiny size."""
  c = modernbert_base.get_config()
  t = tiny.get_config()
  for key in ("batch_size", "num_train_steps", "learning_rate", "warmup_steps",
              "log_every_steps", "eval_every_steps", "num_eval_batches",
              "checkpoint_every_steps", "max_seq_length"):
    c[key] = t[key]
  # Prepared with --mode=packed (see the docstring).
  c.train_data = "/tmp/modern_tiny_data"
  # tiny's width; 3 layers so that one global and two local layers alternate.
  c.model.preset = "tiny"
  c.model.num_layers = 3
  # GeGLU has three E x M matrices where GELU has two: M = 384 gives 147k feed-forward
  # parameters per layer against tiny's 131k (M = 512).
  c.model.intermediate_size = 384
  c.model.max_position_embeddings = 512
  c.model.local_window = 32
  # 30% of 64 tokens.
  c.max_predictions_per_seq = 20
  c.wsd_decay_fraction = 0.2
  c.weight_decay = 0.01
  c.adam_b2 = 0.999
  return c
