r"""Fine-tuning the quick start's tiny BERT on the sample pair task, on CPU, in about 2 minutes.

  bash launch/quickstart.sh                  # pretrains /tmp/bert_quickstart/run, then runs:
  python -m bert_jax.data.sample_pairs /tmp/bert_quickstart/pairs
  python launch/finetune.py --config=configs/finetune_tiny.py --workdir=/tmp/bert_quickstart/ft
  python launch/predict.py --model=/tmp/bert_quickstart/ft/best \
      --text="Pufax Mubeark works as a cook. Pufax likes the colour orange best." \
      --text_pair="Pufax has never worked as a cook."

The task (bert_jax/data/sample_pairs.py): is a claim about one of the sample corpus's people
entailed by (a premise fact in other words), contradicted by (a premise fact negated) or
unrelated to (another attribute, stated or negated) a two-fact premise; 3 balanced classes,
3,000 training, 600 validation and 600 test pairs.

Measured (`bash launch/quickstart.sh`, fresh, 2-core CPU shared with other jobs, load 4.6-7.3,
mean 6.6): 1,500 steps in 2 min 12 s (prediction of the test file included); eval_accuracy
0.967 at step 1500; on the 600 test pairs 0.968: entailment 0.99, neutral 0.93 (stated 0.89,
negated 0.97), contradiction 0.98, against 0.33 for chance; the example above comes out
`contradiction 0.994`.

Why this recipe: the tiny model is step-limited on this task (eval loss sits near 0.65 for
the first ~400 steps, then falls); batch 16 for 8 epochs (1,500 steps) took 125 s, about what
batch 32 for 5 epochs (469 steps) took (104-140 s) at that load. Measured on the 600 test
pairs from an earlier quick start model (same config, load 6-11): batch 32, lr 1e-3, 5 epochs
(469 steps): 0.857 (entailment 0.96, neutral 0.70, contradiction 0.91); the same with 10
epochs: 0.908; with lr 5e-4: 0.843; with lr 2e-3 and 10 epochs: 0.670; 9,000 pairs, 3 epochs
(844 steps): 0.898; this config: 0.987 (0.99, 0.97, 0.99; the quick start run above gave
0.968, so expect a point or two between runs). configs/finetune.py's BERT-base recipe (lr
2e-5, batch 32, 3 epochs) reaches 0.542 on the quick start's model: the tiny model needs a
larger learning rate.
"""

from configs import finetune


def get_config():
  """configs/finetune.py with the sample pair task and a tiny model's batch and learning rate."""
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
  # Half of finetune.py's 32: twice the steps for the same examples (the tiny model is
  # step-limited here, see the docstring).
  c.batch_size = 16
  # A tiny model learns slowly at 2e-5; at 1e-3 and above it stalls longer on this task.
  c.learning_rate = 5e-4
  # Eight passes over 3,000 pairs: 1,500 steps.
  c.num_epochs = 8.0
  return c
