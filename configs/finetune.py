r"""Fine-tuning: the BERT paper's GLUE recipe (AdamW, lr 2e-5, batch 32, 3 epochs, 10% warmup).

  python launch/finetune.py --config=configs/finetune.py --workdir=/tmp/ft_sst2 \
      --config.task=glue/sst2 --config.init_checkpoint=bert-base-uncased/

  python launch/finetune.py --config=configs/finetune.py --workdir=/tmp/ft_sample \
      --config.task=local --config.init_checkpoint=/tmp/bert_quickstart/pretrain \
      --config.train_file=/tmp/bert_quickstart/pairs/train.jsonl \
      --config.validation_file=/tmp/bert_quickstart/pairs/validation.jsonl

The model's size and vocabulary come from `init_checkpoint` (a Hugging Face or Google BERT dir,
a bert_jax export or a pretraining workdir); its encoder is loaded and the classifier is new
(or kept, when the checkpoint has one with the same labels). The best model by the task's main
metric (GLUE's: MCC for CoLA, F1 for MRPC/QQP, Pearson for STS-B, accuracy otherwise) is
exported to WORKDIR/best, a model dir that launch/predict.py reads.

Expected: on GLUE, the BERT paper's figures for the checkpoint you start from (not measured
here: no downloads). On the project's own 3-class sample pair task, from the quick start's tiny
model converted to a Hugging Face dir, with a tiny model's learning rate (1e-3, 5 epochs, length
64; configs/finetune_tiny.py), `bench/finetune_vs_transformers.py` measured eval_accuracy 0.682
for bert_jax against 0.668 for transformers' Trainer with the same recipe, same run (2-core CPU,
load 6-9); see BENCHMARKS.md.
"""

import ml_collections

from configs import default


def get_config():
  """Fine-tuning defaults: default.training() plus the fine-tuning keys (no pretraining ones)."""
  c = default.training()
  # glue/<cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli> (tensorflow-datasets) or local (files);
  # tagging: conll (CoNLL files) or conll2003 (tfds); extractive QA: squad_json (SQuAD v1.1/v2.0
  # JSON files) or squad/v1.1, squad/v2.0 (tfds); multiple_choice (JSONL with context, choices,
  # label).
  c.task = "glue/sst2"
  # Labelled training file for task=local: .csv, .tsv or .jsonl with 'sentence' (or
  # 'sentence1' and 'sentence2') and 'label'.
  c.train_file = ""
  # Labelled evaluation file for task=local ('' = no evaluation).
  c.validation_file = ""
  # Unlabelled (or labelled) file to predict after training, written as WORKDIR/test_predictions.tsv.
  c.test_file = ""
  # tensorflow-datasets data_dir for glue/* ('' = tfds' default).
  c.tfds_data_dir = ""
  # Labels (1 = regression); 0 = derived from the data.
  c.num_labels = 0
  # Model to start from (required): any model path; its architecture is used as is.
  c.init_checkpoint = ""
  # The size comes from init_checkpoint.
  c.model.preset = ""
  # BERT's fine-tuning dropout on hidden states.
  c.model.hidden_dropout_rate = 0.1
  # Dropout on attention probabilities (None = 0.1 on CPU, 0.0 on GPU/TPU where the fused
  # attention kernels have none; see bert_jax/attention.py).
  c.model.attention_dropout_rate = None
  # The position table is the checkpoint's.
  c.model.max_position_embeddings = None
  # Rows per step (global).
  c.batch_size = 32
  # Tokens per row at most; batches are cut to length buckets (16, 32, 48, 64, 96, 128, ...).
  c.max_seq_length = 128
  # Padding-free batches: examples packed end to end in rows of pack_length tokens, each
  # head reading its own example back (bert_jax/data/packing.py); a batch is still
  # batch_size examples. False: padded rows, one example each.
  c.pack = True
  # Tokens per packed row (raised to the batch's longest example when that is longer).
  c.pack_length = 128
  # Epochs over the training set (used when num_train_steps <= 0).
  c.num_epochs = 3.0
  # Optimizer steps (-1 = from num_epochs).
  c.num_train_steps = -1
  # Peak learning rate.
  c.learning_rate = 2e-5
  # Warmup steps (-1 = warmup_ratio of the steps).
  c.warmup_steps = -1
  # Fraction of the steps spent warming up.
  c.warmup_ratio = 0.1
  # AdamW weight decay (not on LayerNorm and biases).
  c.weight_decay = 0.01
  # BERT's fine-tuning Adam epsilon.
  c.adam_eps = 1e-6
  # Linear decay to 0 after warmup.
  c.schedule = "linear"
  # Steps between metric lines.
  c.log_every_steps = 50
  # Evaluate once per epoch (-1) or every N steps; one exact pass over the validation set.
  c.eval_every_steps = -1
  # Whole validation set.
  c.num_eval_batches = 0
  # Global batch of evaluation (0 = batch_size).
  c.eval_batch_size = 64
  # Checkpoint once per epoch (-1) or every N steps.
  c.checkpoint_every_steps = -1
  # Checkpoints kept.
  c.keep_checkpoints = 2
  # --- Extractive QA (squad_json, squad/*): BERT's SQuAD recipe. ---
  c.qa = ml_collections.ConfigDict()
  # Context windows start every doc_stride pieces.
  c.qa.doc_stride = 128
  # Question pieces kept (longer questions are truncated and counted).
  c.qa.max_query_length = 64
  # Longest answer span (pieces) the evaluation considers.
  c.qa.max_answer_length = 30
  # Start and end candidates per window in the evaluation's n-best search.
  c.qa.n_best_size = 20
  # SQuAD v2.0: predict no answer when null score - best span score > this.
  c.qa.null_score_diff_threshold = 0.0
  # Also write WORKDIR/best_hf, a Hugging Face dir (BertFor<head> with id2label).
  c.export_hf = False
  # --- LoRA (Hu et al. 2021): the encoder frozen, low-rank adapters and the head trained. ---
  c.lora = ml_collections.ConfigDict()
  # Adapter rank (0 = off: full fine-tuning). Needs init_checkpoint; best/ is exported merged,
  # WORKDIR/best_lora/ holds the adapters and head alone.
  c.lora.rank = 0
  # The adapters' update is scaled by alpha / rank (peft's lora_alpha).
  c.lora.alpha = 16.0
  # Dropout on the adapters' input during training (peft's lora_dropout).
  c.lora.dropout = 0.0
  # Regex searched in encoder kernel paths (bert/encoder/layer_0/attention/query/kernel): the
  # kernels that get adapters. Default: the attention query and value projections.
  c.lora.targets = r"attention/(query|value)/kernel$"
  return c
