r"""Throughput of the pretraining input pipeline: read + decode + mask + batch.

  python bench/input_pipeline_throughput.py                   # prepares the sample corpus
  python bench/input_pipeline_throughput.py --data_dir=DIR    # any prepared dataset

Prints sequences per second for each configuration, measured on the calling
thread (prefetch=0, the raw cost) and through the prefetching iterator, as
median, min and max of `--repeats` runs (a shared machine is noisy), and the
machine load before and after. Rows are read by random access in the global
order (bert_jax.data.stream): from the in-memory cache of the whole split, or
(`cache_mb=0`) record by record from disk, as for a split larger than
`cache_mb`; `computed order` uses the Feistel permutation that splits above
4M records use. The target is 30,000 seq/s at max_seq_length 128 on a 2-core
machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import common  # pylint: disable=unused-import  (bench/: puts this checkout's bert_jax first)
from bert_jax.data import pretrain_pipeline
from bert_jax.data import prepare_pretraining
from bert_jax.data import stream
from bert_jax.data import text_corpus
from bert_jax.data import sample_corpus
from bert_jax import vocab_training


def prepare_sample(workdir: str, mode: str) -> str:
  vocab = os.path.join(workdir, "vocab")
  if not os.path.exists(vocab):
    vocab_training.train_wordpiece([sample_corpus.shipped_path()], vocab, 4096, lowercase=True)
  out = os.path.join(workdir, mode)
  stats = text_corpus.ReadStats()
  docs = text_corpus.read_documents([sample_corpus.shipped_path()], stats)
  options = prepare_pretraining.PrepareOptions(max_seq_length=128, mode=mode, num_output_shards=4,
                                            num_workers=os.cpu_count() or 1)
  prepare_pretraining.prepare(docs, stats, vocab, out, options)
  return out


def measure(data_dir: str, batch_size: int, num_batches: int, prefetch: int, repeats: int,
            computed_order: bool = False, **kwargs) -> list[float]:
  """Sequences per second of `repeats` runs of `num_batches` batches each."""
  it = pretrain_pipeline.make_pretraining_iterator(
      data_dir, "train", global_batch_size=batch_size, seed=0, max_predictions_per_seq=20,
      process_index=0, process_count=1, prefetch=prefetch, **kwargs)
  if computed_order:
    it.order = stream.GlobalOrder(it.num_records, batch_size, 0, max_stored=0)
  for _ in range(3):  # Loads the in-memory cache, starts the prefetch thread.
    next(it)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(num_batches):
      next(it)
    rates.append(num_batches * batch_size / (time.perf_counter() - start))
  it.close()
  return sorted(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", help="a prepared dataset (default: prepare the sample corpus)")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--num_batches", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"({os.cpu_count()} cores)")
  with tempfile.TemporaryDirectory() as workdir:
    if args.data_dir:
      dirs = {pretrain_pipeline.read_meta(args.data_dir)["mode"]: args.data_dir}
    else:
      dirs = {mode: prepare_sample(workdir, mode) for mode in ("nsp", "packed")}
    for mode, data_dir in dirs.items():
      meta = pretrain_pipeline.read_meta(data_dir)
      print(f"{mode}: {meta['splits']['train']['num_examples']:,} sequences of "
            f"{meta['max_seq_length']}, batch {args.batch_size}")
      configs = [dict(whole_word_mask=wwm, prefetch=prefetch)
                 for wwm in (False, True) for prefetch in (0, 2)]
      configs += [dict(whole_word_mask=False, prefetch=prefetch, cache_mb=0)
                  for prefetch in (0, 2)]
      configs.append(dict(whole_word_mask=False, prefetch=0, computed_order=True))
      for config in configs:
        rates = measure(data_dir, args.batch_size, args.num_batches, repeats=args.repeats,
                        **config)
        median = rates[len(rates) // 2]
        label = "  ".join(f"{k}={v!s:5}" for k, v in config.items())
        print(f"  {label:58} median {median:9,.0f} seq/s  (min {rates[0]:,.0f}, "
              f"max {rates[-1]:,.0f}; {median / 30000:.1f}x the 30,000 seq/s target)")
        sys.stdout.flush()
  print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
