r"""Prepares pretraining data: text -> token ids -> sharded ArrayRecord files.

  python launch/prepare_data.py --input='corpus/*.txt' --vocab=vocab_dir \
      --output=data/wiki128 --max_seq_length=128 [--mode=nsp|packed] [--eval_fraction=0.01]

Input: plain text (one sentence per line, a blank line between documents),
JSONL with a `text` field (`.jsonl`), `.gz` of either, or a tfds text dataset
(`--tfds_dataset=wikipedia/20230601.en:train --tfds_text_key=text`, needs the
`[tf]` extra). On a pod, every host runs it with `--num_shards=N
--shard_index=I` into the same (shared) output directory; the parts are found
by `bert_jax.data.pretrain_pipeline.read_meta`. Masking happens later, at read time.
"""

from __future__ import annotations

import os
import time

from absl import flags
from absl import logging

from bert_jax import files
from bert_jax import progress as progress_lib
from bert_jax.data import prepare_pretraining
from bert_jax.data import text_corpus
from bert_jax.errors import UserError, run_main

_INPUT = flags.DEFINE_list("input", [], "Text or JSONL files or globs, comma-separated.")
_TFDS = flags.DEFINE_string("tfds_dataset", None,
                            "tfds text dataset NAME[:SPLIT] instead of --input.")
_TFDS_KEY = flags.DEFINE_string("tfds_text_key", "text",
                                "Feature of --tfds_dataset holding the text.")
_TFDS_DIR = flags.DEFINE_string("tfds_data_dir", None, "tfds data_dir.")
_TEXT_KEY = flags.DEFINE_string("jsonl_text_key", "text",
                                "Field of JSONL records holding the text.")
_VOCAB = flags.DEFINE_string("vocab", None, "Tokenizer: a dir, vocab.txt or SentencePiece .model.")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", 128, "Tokens per row, specials included.")
_MODE = flags.DEFINE_enum("mode", "nsp", prepare_pretraining.MODES,
                          "nsp: sentence pairs with NSP labels; packed: full rows of text, no NSP.")
_DUPE = flags.DEFINE_integer("dupe_factor", 1, "Passes over each document, each with new splits. "
                             "Masks are fresh every epoch anyway, so 1 is usually enough.")
_SHORT = flags.DEFINE_float("short_seq_prob", 0.1, "NSP: probability of a shorter target length.")
_EVAL = flags.DEFINE_float("eval_fraction", 0.0, "Fraction of whole documents held out as 'eval'.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Hosts that prepare the corpus together.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "This host's index among --num_shards.")
_NUM_OUTPUT = flags.DEFINE_integer("num_output_shards", 1, "Train files written by this host.")
_SEED = flags.DEFINE_integer("seed", 12345, "Seed; the same input and seed give the same bytes.")
_WORKERS = flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Worker processes.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace prepared data already in --output.")
_CHUNK_MB = flags.DEFINE_float("chunk_mb", 1.0, "Text per work unit (MB); changes the output.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _VOCAB.value:
    raise UserError("--vocab is required (a tokenizer dir, vocab.txt or .model)")
  if not _OUTPUT.value:
    raise UserError("--output is required")
  stats = text_corpus.ReadStats()
  paths: list[str] = []
  given = _INPUT.value if isinstance(_INPUT.value, str) else ",".join(_INPUT.value or [])
  source = f"tfds dataset {_TFDS.value}" if _TFDS.value else given
  if _TFDS.value:
    documents = text_corpus.documents_from_texts(
        text_corpus.tfds_texts(_TFDS.value, _TFDS_KEY.value, _TFDS_DIR.value), stats)
  elif _INPUT.value:
    paths = files.expand_inputs(_INPUT.value)
    documents = text_corpus.read_documents(paths, stats, text_key=_TEXT_KEY.value)
  else:
    raise UserError("give --input=FILES or --tfds_dataset=NAME")
  options = prepare_pretraining.PrepareOptions(
      max_seq_length=_MAX_SEQ_LENGTH.value, mode=_MODE.value, dupe_factor=_DUPE.value,
      short_seq_prob=_SHORT.value, eval_fraction=_EVAL.value,
      num_output_shards=_NUM_OUTPUT.value, num_shards=_NUM_SHARDS.value,
      shard_index=_SHARD_INDEX.value, seed=_SEED.value, num_workers=_WORKERS.value,
      chunk_bytes=max(1, int(_CHUNK_MB.value * (1 << 20))))

  # Plain text inputs: a bar (terminal) or lines (piped) with ETA over the bytes to read.
  total_mb = (sum(os.path.getsize(p) for p in paths) / 1e6
              if _INPUT.value and not any(p.endswith(".gz") for p in paths) else 0.0)
  bar = progress_lib.Progress("read", "% of the input") if total_mb else None

  def progress(p):
    logging.info("%d documents, %.1f MB read (%.2f MB/s), %d sequences written",
                 p["documents"], p["text_mb"], p["mb_per_s"], p["sequences"])
    if bar is not None:
      bar(min(99, int(100 * p["text_mb"] / total_mb)), 100)

  start = time.time()
  meta = prepare_pretraining.prepare(documents, stats, _VOCAB.value, _OUTPUT.value, options,
                                  progress=progress, overwrite=_OVERWRITE.value, source=source)
  if bar is not None:
    bar(100, 100)
  seconds = time.time() - start
  print(prepare_pretraining.summarize(meta))
  print(f"wrote {_OUTPUT.value} in {seconds:.1f} s ({stats.text_bytes / 1e6 / seconds:.2f} MB/s)")


if __name__ == "__main__":
  run_main(main)
