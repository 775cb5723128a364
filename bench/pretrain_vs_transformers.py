r"""BERT-base pretraining throughput: bert_jax's train loop vs transformers' BertForPreTraining.

Same batch (8 x 128 tokens, 20 masked positions per row, NSP labels), same optimizer
step (AdamW), float32, on this machine's CPU. bert_jax's figure is the `seq_per_sec`
its own loop logs to metrics.jsonl (compile step excluded); transformers is timed
around `loss.backward(); optimizer.step()`. MFU uses the same model-FLOPs count for
both (matmuls, MLM decoder at the masked positions only, 3x forward) over this CPU's
measured float32 matmul peak (there is no datasheet peak for a CPU).

  python bench/pretrain_vs_transformers.py [--steps=5] [--batch_size=8]

Prints one line per framework and the ratio (bert_jax / transformers).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Both sides on this machine's CPU: on a GPU host JAX would otherwise take the GPU while
# torch stays on the CPU, and the ratio would compare different hardware.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax.data import synthetic
from bert_jax import train
from bert_jax.model import BertConfig

SEQ, PREDS, VOCAB = 128, 20, 30522


def measured_matmul_peak(n: int = 2048, reps: int = 5) -> float:
  """float32 FLOP/s of a large matmul on the default device: the practical CPU peak."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def run_bert_jax(batch_size: int, steps: int, peak: float) -> dict:
  spec_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "bert_base.py")
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("bert_base_cfg", spec_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.update(dtype="float32", batch_size=batch_size, num_train_steps=steps, log_every_steps=steps,
           eval_every_steps=0, checkpoint_every_steps=10 ** 9, max_seq_length=SEQ,
           max_predictions_per_seq=PREDS, peak_flops_per_device=peak, warmup_steps=10)
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(c, workdir, data=synthetic.synthetic_data(c, vocab_size=VOCAB))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      row = [json.loads(line) for line in f][-1]
  return {"seq_per_sec": row["seq_per_sec"], "mfu": row["mfu"], "loss": row["loss"]}


def run_transformers(batch_size: int, steps: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=768, num_hidden_layers=12,
                                num_attention_heads=12, intermediate_size=3072)
  model = transformers.BertForPreTraining(cfg).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                          weight_decay=0.01)
  b = next(synthetic.SyntheticIterator(vocab_size=VOCAB, seq_len=SEQ, max_predictions=PREDS,
                                   global_batch_size=batch_size))
  labels = np.full((batch_size, SEQ), -100, np.int64)
  rows = np.arange(batch_size)[:, None]
  real = b["masked_weights"] > 0
  labels[rows.repeat(PREDS, 1)[real], b["masked_positions"][real]] = b["masked_ids"][real]
  inputs = dict(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
                token_type_ids=torch.tensor(b["token_type_ids"], dtype=torch.long),
                attention_mask=torch.tensor(b["attention_mask"], dtype=torch.long),
                labels=torch.tensor(labels),
                next_sentence_label=torch.tensor(b["next_sentence_labels"], dtype=torch.long))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(**inputs).loss
    loss.backward()
    opt.step()
    return float(loss.detach())

  step()  # warm-up (allocations, first-touch)
  t = time.perf_counter()
  for _ in range(steps - 1):
    loss = step()
  elapsed = time.perf_counter() - t
  return {"seq_per_sec": (steps - 1) * batch_size / elapsed, "loss": loss}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=5, help="steps per framework (1 warm-up)")
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args()
  peak = measured_matmul_peak()
  flops = metrics_lib.pretraining_flops_per_sequence(BertConfig.preset("base"), SEQ, PREDS)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} CPUs; "
        f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
        f"{flops / 1e9:.1f} GFLOP per training sequence (BERT-base, seq {SEQ})")
  ours = run_bert_jax(args.batch_size, args.steps, peak)
  theirs = run_transformers(args.batch_size, args.steps)
  theirs["mfu"] = theirs["seq_per_sec"] * flops / peak
  print(f"bert_jax      : {ours['seq_per_sec']:.2f} seq/s  MFU {ours['mfu']:.3f}  "
        f"(logged by the train loop, batch {args.batch_size})")
  print(f"transformers  : {theirs['seq_per_sec']:.2f} seq/s  MFU {theirs['mfu']:.3f}  "
        f"(torch {__import__('torch').__version__}, BertForPreTraining + AdamW)")
  print(f"ratio bert_jax / transformers: {ours['seq_per_sec'] / theirs['seq_per_sec']:.2f}x")


if __name__ == "__main__":
  main()
