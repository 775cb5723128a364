r"""Fine-tuning the quick start's tiny BERT on the sample pair task, on CPU, in about a minute.

  bash launch/quickstart.sh                  # pretrains /tmp/bert_quickstart/run, then runs:
  python -m bert_jax.data.sample_pairs /tmp/bert_quickstart/pairs
  python launch/finetune.py --config=configs/finetune_tiny.py --workdir=/tmp/bert_quickstart/ft
  python launch/predict.py --model=/tmp/bert_quickstart/ft/best \
      --text="Brom Tefaix is a teacher." --text_pair="Brom earns a living as a gardener."

The task (bert_jax/data/sample_pairs.py): is a claim about one of the sample corpus's people
entailed by, contradicted by, or unrelated to a two-fact premise (3 balanced classes, 3,000
training and 600 validation pairs). Measured on a 2-core CPU (load ~6): eval_accuracy 0.68
after 5 epochs (470 steps, ~1 minute), against 0.33 for chance. The tiny model needs a larger
learning rate than BERT-base's 2e-5 (with 2e-5 it reaches 0.41 in 3 epochs).

Per class on the 600 test pairs (the quick start's run): entailment 0.71, neutral 1.00,
contradiction 0.28. The model learns which attribute a claim is about but not whether its value
matches the premise's: its eval loss stops at 0.463 = (2/3) ln 2, a coin flip between entailment
and contradiction. Not changed by 20 epochs, learning rates 3e-4 to 1e-3 (3e-3 diverges),
no dropout, 6,000 training pairs, one-fact premises or claims in the premise's own words
(measured, not kept).
"""

from configs import finetune


def get_config():
  """configs/finetune.py with the sample pair task and a tiny model's learning rate."""
  c = finetune.get_config()
  # Local JSONL files of bert_jax.data.sample_pairs.
  c.task = "local"
  # The quick start's pretraining workdir.
  c.init_checkpoint = "/tmp/bert_quickstart/run"
  # Written by `python -m bert_jax.data.sample_pairs /tmp/bert_quickstart/pairs`.
  c.train_file = "/tmp/bert_quickstart/pairs/train.jsonl"
  # Evaluated once per epoch; the best model goes to WORKDIR/best.
  c.validation_file = "/tmp/bert_quickstart/pairs/validation.jsonl"
  # Predicted after training into WORKDIR/test_predictions.tsv.
  c.test_file = "/tmp/bert_quickstart/pairs/test.jsonl"
  # The pretraining length of the quick start (pairs are ~30 tokens).
  c.max_seq_length = 64
  # A tiny model learns slowly at 2e-5.
  c.learning_rate = 1e-3
  # Five passes over 3,000 pairs.
  c.num_epochs = 5.0
  return c
