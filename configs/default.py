r"""Defaults for MLM+NSP pretraining; every other pretraining config starts here.

`training()` holds what every training run has (model, optimisation, parallelism,
logging, checkpoints); `get_config()` adds the pretraining data keys.
`configs/finetune.py` starts from `training()` and adds the fine-tuning keys, so
neither namespace carries the other's keys. Configs are a package: presets
`from configs import default` (the launchers put the repository root on the path).

Not meant to be run by itself (it has no data). Presets import it and override:

  python launch/pretrain.py --config=configs/tiny.py --workdir=/tmp/bert_tiny

Any key can be overridden on the command line, e.g.
`--config.batch_size=64 --config.model.preset=mini --config.mesh_shape='(1,-1,1)'`.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """The default pretraining config (BERT-base, phase 1 recipe of Devlin et al.)."""
  c = training()

  # --- Data ---------------------------------------------------------------
  # Directory written by launch/prepare_data.py (meta.json, tokenizer/, *.array_record).
  c.train_data = ""
  # Split of `train_data` to train on.
  c.train_split = "train"
  # Directory with an evaluation split ('' = use `train_data`); no eval if the split is missing.
  c.eval_data = ""
  # Split of `eval_data` evaluated every `eval_every_steps`.
  c.eval_split = "eval"
  # Masked positions per row (P): 20 for seq 128, 80 for seq 512 in the original recipe.
  c.max_predictions_per_seq = 20
  # Fraction of tokens masked (80% [MASK], 10% random, 10% kept).
  c.mask_rate = 0.15
  # Mask whole words (all WordPiece pieces of a word together).
  c.whole_word_mask = False
  return c


def training() -> ml_collections.ConfigDict:
  """What every training run has: model, optimisation, parallelism, logging, checkpoints."""
  c = ml_collections.ConfigDict()
  # What to train: 'pretraining' (MLM+NSP on prepared data); configs/finetune.py sets others.
  c.task = "pretraining"
  # Tokens per row; for pretraining it must equal the prepared data's meta.json max_seq_length.
  c.max_seq_length = 128

  # --- Model --------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  # Size preset of bert_jax.model.PRESETS: tiny, mini, small, medium, base, large.
  c.model.preset = "base"
  # Optional size overrides of the preset (None = the preset's value; with an empty preset the
  # size comes from init_checkpoint).
  c.model.num_layers = config_dict.placeholder(int)
  # Hidden (embedding) width.
  c.model.hidden_size = config_dict.placeholder(int)
  # Attention heads; must divide hidden_size.
  c.model.num_heads = config_dict.placeholder(int)
  # Feed-forward width.
  c.model.intermediate_size = config_dict.placeholder(int)
  # Position table size (>= max_seq_length); 512 as BERT so phase 2 can grow the length.
  c.model.max_position_embeddings = 512
  # Dropout on hidden states (embeddings, attention and feed-forward outputs).
  c.model.hidden_dropout_rate = 0.1
  # Dropout on the attention probabilities. None = per platform: 0.1 (BERT) on CPU, 0.0 on
  # GPU/TPU, where the fused attention kernels (no dropout) then run in training; 600 tiny CPU
  # steps lost no held-out MLM accuracy without it (BENCHMARKS.md). 0.1 = the paper, at XLA speed.
  c.model.attention_dropout_rate = config_dict.placeholder(float)
  # Attention kernel: 'auto' (cudnn on GPU for bf16/fp16, splash on TPU for lengths that are
  # multiples of 128, xla otherwise), or force 'xla', 'cudnn', 'splash' (bert_jax/attention.py).
  c.model.attention_impl = "auto"
  # Stack layers with nn.scan (faster compiles for deep models; checkpoints keep this layout).
  c.model.scan_layers = False
  # Rematerialisation: none, full, dots, dots_no_batch.
  c.model.remat_policy = "none"
  # Compute dtype of activations/matmuls (mixed precision): 'auto' (bfloat16 on GPU/TPU, float32
  # on CPU; bert_jax.model.resolve_dtype), float32, bfloat16 or float16. Params stay fp32.
  c.dtype = "auto"

  # --- Optimisation -------------------------------------------------------
  # Global batch size (rows per optimizer step, over all hosts and micro-batches).
  c.batch_size = 256
  # Optimizer steps.
  c.num_train_steps = 1_000_000
  # Peak learning rate.
  c.learning_rate = 1e-4
  # Linear warmup steps from 0 to learning_rate.
  c.warmup_steps = 10_000
  # 'adamw' (BERT's recipe) or 'lamb' (large-batch recipe, You et al. 2019).
  c.optimizer = "adamw"
  # Adam/LAMB first-moment decay.
  c.adam_b1 = 0.9
  # Adam/LAMB second-moment decay.
  c.adam_b2 = 0.999
  # Adam/LAMB epsilon (BERT: 1e-6).
  c.adam_eps = 1e-6
  # Decoupled weight decay, not applied to LayerNorm parameters or biases.
  c.weight_decay = 0.01
  # Decay after warmup: 'linear' (BERT), 'polynomial', 'cosine', 'constant' or 'wsd'
  # (warmup-stable-decay: flat at the peak, then linear decay over the last steps).
  c.schedule = "linear"
  # Exponent of the 'polynomial' schedule (1.0 = linear).
  c.schedule_power = 1.0
  # 'wsd': fraction of the steps spent decaying at the end.
  c.wsd_decay_fraction = 0.1
  # Final learning rate as a fraction of the peak.
  c.end_learning_rate_ratio = 0.0
  # Micro-batches per step (gradient accumulation); must divide the per-device batch. 0 = per
  # platform: 1 on GPU/TPU; on CPU micro-batches of ~512 tokens per device (4 rows at seq 128),
  # measured ~1.45x faster than whole batches (bert_jax.train.auto_grad_accum_steps); packed
  # fine-tuning rows (each micro-batch's examples in rows of their own): 1 on GPU/TPU, on CPU
  # micro-batches of <= 1,024 real tokens (finetune_pipeline.packed_micro_batches).
  c.grad_accum_steps = 0
  # Clip gradients to this global norm (0 = no clipping).
  c.max_grad_norm = 1.0
  # On a non-finite loss or gradient: 'stop' (error naming the step, last good checkpoint kept)
  # or 'skip' (the update is dropped, the step still counts and is reported).
  c.nonfinite = "stop"

  # --- Parallelism --------------------------------------------------------
  # Device mesh (data, fsdp, tensor); one -1 takes the remaining devices.
  c.mesh_shape = (-1, 1, 1)
  # Logical axis name -> mesh axis (or None = replicated); see bert_jax/sharding.py.
  c.logical_axis_rules = (
      ("activation_batch", ("data", "fsdp")),
      ("activation_length", None),
      ("activation_embed", None),
      ("activation_heads", "tensor"),
      ("activation_kv", None),
      ("activation_mlp", "tensor"),
      ("vocab", "tensor"),
      ("embed", "fsdp"),
      ("embed_out", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("mlp", "tensor"),
      ("layers", None),
  )

  # --- Logging, evaluation, checkpoints ------------------------------------
  # Steps between metric lines (metrics.jsonl, TensorBoard, console).
  c.log_every_steps = 100
  # Steps between evaluations (0 = never, -1 = once per epoch of the training set).
  c.eval_every_steps = 10_000
  # Batches per evaluation, from the start of the eval split in order, with deterministic masks
  # (0 = one exact pass over the whole split).
  c.num_eval_batches = 50
  # Global batch size of evaluation (0 = batch_size).
  c.eval_batch_size = 0
  # Steps between (asynchronous) checkpoints (-1 = once per epoch of the training set).
  c.checkpoint_every_steps = 10_000
  # Checkpoints kept (the newest K).
  c.keep_checkpoints = 3
  # Steps between the cross-host check for a preemption signal (multi-host only).
  c.preemption_check_every_steps = 10
  # Peak FLOP/s of one device for MFU (None = from a table by device kind; unknown kinds, CPU
  # included, log mfu as null).
  c.peak_flops_per_device = config_dict.placeholder(float)

  # --- Misc ---------------------------------------------------------------
  # Persistent XLA compilation cache ('' = off): a restarted/resumed job skips recompiling.
  c.compilation_cache_dir = ""
  # Seed of parameter init, dropout and data order/masking.
  c.seed = 0
  # Start from this model (any path bert_jax.formats.convert.from_pretrained reads) with fresh
  # optimizer state; '' = random init. Ignored when WORKDIR already has a checkpoint.
  c.init_checkpoint = ""
  return c
