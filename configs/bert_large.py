r"""BERT-large phase 1: the paper's recipe (batch 256, AdamW 1e-4), or LAMB at batch 64k.

  python launch/pretrain.py --config=configs/bert_large.py --workdir=gs://BUCKET/bert_large \
      --config.train_data=gs://BUCKET/bert_data_128
  # LAMB, You et al. 2019 / NVIDIA's recipe: phase 1 at batch 65536, lr 6e-3, 7038 steps:
  python launch/pretrain.py --config=configs/bert_large.py:lamb --workdir=... \
      --config.train_data=gs://BUCKET/bert_data_128

Expect (published figures, not measured in this repo): the paper trained large for 1M steps
on 64 TPU v3 chips in ~4 days (MLM accuracy ~0.70+); LAMB reports the same downstream
quality with a 64k/32k mixed-batch schedule: 7,038 steps at seq 128 (this config) then
1,563 at seq 512 (phase 2) on a TPU v3 pod. Use remat (model.remat_policy='dots') and
FSDP (mesh_shape=(1,-1,1)) when memory is short.
"""

from configs import default


def get_config(recipe: str = "adamw"):
  """'adamw' (paper) or 'lamb' (batch 65536, lr 6e-3, 7038 steps, ~28% warmup); seq 128 and
  weight decay 0.01 (not on LayerNorm or biases) come from default.py in both."""
  c = default.get_config()
  # Model size preset.
  c.model.preset = "large"
  # Remat of each layer's activations except matmul outputs: fits large at seq 128.
  c.model.remat_policy = "dots"
  # Stack the 24 layers with nn.scan: one compiled layer.
  c.model.scan_layers = True
  if recipe == "lamb":
    # LAMB large-batch recipe (You et al. 2019), phase 1 at batch 64k.
    c.optimizer = "lamb"
    # Global batch.
    c.batch_size = 65536
    # Peak learning rate.
    c.learning_rate = 6e-3
    # Steps (phase 1 of the 64k/32k recipe).
    c.num_train_steps = 7038
    # Warmup: 28.43% of phase 1.
    c.warmup_steps = 2000
    # Polynomial decay to 0 after warmup.
    c.schedule = "polynomial"
    # Fewer, larger steps: log and checkpoint more often.
    c.log_every_steps = 10
    # Evaluation period.
    c.eval_every_steps = 500
    # Checkpoint period.
    c.checkpoint_every_steps = 500
  elif recipe == "adamw":
    # The paper's recipe is default.py's (seq 128, batch 256, lr 1e-4, 10k warmup, 1M steps,
    # linear decay); log every 1000 steps.
    c.log_every_steps = 1000
  else:
    raise ValueError(f"unknown bert_large recipe {recipe!r}: use adamw or lamb")
  return c
