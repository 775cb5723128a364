r"""Data preparation throughput against raw `tokenizers` batch encoding of the same text.

  python bench/prepare_data_vs_tokenizers.py                       # the sample corpus
  python bench/prepare_data_vs_tokenizers.py --input=corpus.txt --vocab=VOCAB_DIR

Both sides run in this process on the same machine, on the same text:
- tokenizers: `BertWordPieceTokenizer(vocab.txt).encode_batch(all lines)` and
  `encode_batch_fast` (no offsets), the library's own Rust thread pool, text
  already in memory; the faster of the two is the reference;
- prepare_data: `bert_jax.data.prepare_pretraining.prepare` end to end (read files,
  split documents, tokenize in `--num_workers` processes, build NSP or packed
  examples, write ArrayRecord shards and meta.json).
It prints MB of text per second for both and their ratio; the target is a
ratio within 2x. Each side runs `--repeats` times alternately, the best counts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import common  # pylint: disable=unused-import  (bench/: puts this checkout's bert_jax first)
from bert_jax import files
from bert_jax.data import prepare_pretraining
from bert_jax.data import text_corpus
from bert_jax.data import sample_corpus
from bert_jax import tokenization
from bert_jax import vocab_training


def time_tokenizers(paths, vocab_dir: str, lowercase: bool) -> tuple[float, float]:
  """Seconds of `encode_batch` and of `encode_batch_fast` (no offsets) over all lines."""
  from tokenizers import BertWordPieceTokenizer  # pylint: disable=g-import-not-at-top
  tok = BertWordPieceTokenizer(os.path.join(vocab_dir, "vocab.txt"), lowercase=lowercase,
                               strip_accents=lowercase)
  lines = []
  for path in paths:
    with open(path, encoding="utf-8", errors="replace") as f:
      lines += [line for line in f.read().splitlines() if line.strip()]
  start = time.perf_counter()
  tok.encode_batch(lines, add_special_tokens=False)
  middle = time.perf_counter()
  tok._tokenizer.encode_batch_fast(lines, add_special_tokens=False)  # pylint: disable=protected-access
  return middle - start, time.perf_counter() - middle


def time_prepare(paths, vocab_dir: str, mode: str, num_workers: int, workdir: str) -> float:
  start = time.perf_counter()
  stats = text_corpus.ReadStats()
  docs = text_corpus.read_documents(paths, stats)
  options = prepare_pretraining.PrepareOptions(max_seq_length=128, mode=mode, num_workers=num_workers,
                                            num_output_shards=4)
  prepare_pretraining.prepare(docs, stats, vocab_dir, os.path.join(workdir, "out"), options,
                           overwrite=True)  # the same output dir on every repeat
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", nargs="*", default=[sample_corpus.shipped_path()])
  parser.add_argument("--vocab", help="WordPiece vocab dir (default: train 8192 on the input)")
  parser.add_argument("--mode", default="nsp", choices=prepare_pretraining.MODES)
  parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  paths = files.expand_inputs(args.input)
  megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
  with tempfile.TemporaryDirectory() as workdir:
    vocab = args.vocab
    if vocab is None:
      vocab = os.path.join(workdir, "vocab")
      vocab_training.train_wordpiece(paths, vocab, 8192, lowercase=True)
    lowercase = tokenization.load_tokenizer(vocab).lowercase
    ours, plain, fast = [], [], []
    for _ in range(args.repeats):
      seconds_plain, seconds_fast = time_tokenizers(paths, vocab, lowercase)
      plain.append(seconds_plain)
      fast.append(seconds_fast)
      ours.append(time_prepare(paths, vocab, args.mode, args.num_workers, workdir))
  ours_rate = megabytes / min(ours)
  plain_rate, fast_rate = megabytes / min(plain), megabytes / min(fast)
  best = max(plain_rate, fast_rate)
  print(f"text: {megabytes:.1f} MB in {len(paths)} file(s), {os.cpu_count()} CPU(s)")
  print(f"tokenizers encode_batch:            {plain_rate:7.2f} MB/s")
  print(f"tokenizers encode_batch_fast:       {fast_rate:7.2f} MB/s")
  print(f"prepare_data ({args.mode}, {args.num_workers} workers):   {ours_rate:7.2f} MB/s")
  print(f"ratio fastest tokenizers / prepare_data: {best / ours_rate:5.2f}x  (target <= 2x)")


if __name__ == "__main__":
  main()
