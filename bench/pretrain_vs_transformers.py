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
import os

# Both sides on this machine's CPU: on a GPU host JAX would otherwise take the GPU while
# torch stays on the CPU, and the ratio would compare different hardware.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

import common  # pylint: disable=g-bad-import-order  (bench/: puts this checkout first on the path)
import pretrain_peers  # pylint: disable=g-bad-import-order
from bert_jax import metrics as metrics_lib  # pylint: disable=g-bad-import-order
from bert_jax.data import synthetic  # pylint: disable=g-bad-import-order
from bert_jax.model import BertConfig  # pylint: disable=g-bad-import-order

SEQ, PREDS, VOCAB = 128, 20, 30522


def run_bert_jax(batch_size: int, steps: int, peak: float) -> dict:
  c = common.load_config("bert_base.py")
  c.update(dtype="float32", batch_size=batch_size, num_train_steps=steps, log_every_steps=steps,
           eval_every_steps=0, checkpoint_every_steps=10 ** 9, max_seq_length=SEQ,
           max_predictions_per_seq=PREDS, peak_flops_per_device=peak, warmup_steps=10)
  return pretrain_peers.run_bert_jax(c, synthetic.synthetic_data(c, vocab_size=VOCAB))


def run_transformers(batch_size: int, steps: int) -> dict:
  batch = next(synthetic.SyntheticIterator(vocab_size=VOCAB, seq_len=SEQ, max_predictions=PREDS,
                                           global_batch_size=batch_size))
  return pretrain_peers.run_transformers(
      dict(vocab_size=VOCAB, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
           intermediate_size=3072), batch, steps, threads=os.cpu_count() or 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=5, help="steps per framework (1 warm-up)")
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args()
  peak = common.measured_matmul_peak()
  flops = metrics_lib.pretraining_flops_per_sequence(BertConfig.preset("base"), SEQ, PREDS)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} CPUs; "
        f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
        f"{flops / 1e9:.1f} GFLOP per training sequence (BERT-base, seq {SEQ})")
  ours = run_bert_jax(args.batch_size, args.steps, peak)
  ours_load = os.getloadavg()[0]
  theirs = run_transformers(args.batch_size, args.steps)
  theirs_load = os.getloadavg()[0]
  theirs["mfu"] = theirs["seq_per_sec"] * flops / peak
  print(f"bert_jax      : {ours['seq_per_sec']:.2f} seq/s  MFU {ours['mfu']:.3f}  "
        f"(logged by the train loop, batch {args.batch_size}; load {ours_load:.2f})")
  print(f"transformers  : {theirs['seq_per_sec']:.2f} seq/s  MFU {theirs['mfu']:.3f}  "
        f"(torch {__import__('torch').__version__}, BertForPreTraining + AdamW; "
        f"load {theirs_load:.2f})")
  print(f"ratio bert_jax / transformers: {ours['seq_per_sec'] / theirs['seq_per_sec']:.2f}x")


if __name__ == "__main__":
  main()
