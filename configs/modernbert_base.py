r"""ModernBERT-base's architecture and pretraining recipe (Warner et al. 2024) on bert_jax.

22 pre-LN layers of width 768 (12 heads), GeGLU feed-forward of 1152, no biases,
LayerNorm without bias (eps 1e-5), RoPE with base 160k in global layers and 10k in
local ones, a 128-token sliding window with every 3rd layer global (0, 3, 6, ...), no
token types, tied decoder; MLM only (prepare the data with `--mode=packed`: no NSP) at
30% masking, warmup-stable-decay. Hugging Face's `answerdotai/ModernBERT-base` config
maps onto exactly these switches (bert_jax/formats/modernbert.py), so a checkpoint of
this config exports with `launch/convert.py --to=hf` as a `ModernBertForMaskedLM`.

  python launch/prepare_data.py --input=CORPUS --vocab=TOKENIZER --output=DATA \
      --max_seq_length=1024 --mode=packed
  python launch/pretrain.py --config=configs/modernbert_base.py --workdir=DIR \
      --config.train_data=DATA

Not reproduced here: ModernBERT's StableAdamW (this is AdamW), its 2T-token data and
its 8192-token context extension phase; unpadding is what `config.pack` does.
"""

from configs import default


def get_config():
  """ModernBERT-base, phase 1 (1024 tokens)."""
  c = default.get_config()
  c.model.preset = "base"
  # Depth and widths of ModernBERT-base.
  c.model.num_layers = 22
  c.model.intermediate_size = 1152
  # RoPE: no position table; lengths up to this many tokens.
  c.model.max_position_embeddings = 8192
  c.model.position_embedding = "rope"
  # RoPE bases of the global and the sliding-window layers.
  c.model.rope_theta = 160_000.0
  c.model.rope_local_theta = 10_000.0
  # GeGLU: gelu(x W1) * (x Wg), then W2.
  c.model.feed_forward = "glu"
  c.model.hidden_act = "gelu"
  # Pre-LN with a final norm; layer 0 takes the normalised embeddings as they are.
  c.model.norm_placement = "pre"
  c.model.first_layer_attn_norm = False
  # No biases in dense layers and norms; LayerNorm eps 1e-5.
  c.model.use_bias = False
  c.model.norm_bias = False
  c.model.layer_norm_eps = 1e-5
  # Local layers see 64 tokens either side; layers 0, 3, 6, ... are global.
  c.model.local_window = 128
  c.model.global_every = 3
  # No token types (ModernBERT has none).
  c.model.type_vocab_size = 0
  # Pooler for the sequence heads: dense -> gelu -> norm on [CLS], no dense bias.
  c.model.pooler = "head"
  c.model.pooler_bias = False
  # No dropout (ModernBERT pretrains without it).
  c.model.hidden_dropout_rate = 0.0
  c.model.attention_dropout_rate = 0.0
  # Phase 1 length; rows of packed documents.
  c.max_seq_length = 1024
  # 30% of the tokens are masked (MosaicBERT, ModernBERT).
  c.mask_rate = 0.3
  # 30% of 1024, rounded up to a multiple of 8.
  c.max_predictions_per_seq = 312
  # Batch and steps: ModernBERT-base's phase-1 batch (4608 rows of 1024) ~ 1.7T tokens.
  c.batch_size = 4608
  c.num_train_steps = 360_000
  c.learning_rate = 8e-4
  c.warmup_steps = 3_000
  c.weight_decay = 1e-5
  # Warmup-stable-decay: the last 10% of the steps decay linearly to 0.
  c.schedule = "wsd"
  c.wsd_decay_fraction = 0.1
  c.adam_b2 = 0.98
  return c
