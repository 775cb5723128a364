"""Embed a corpus once into a dense retrieval index dir (see bert_jax/retrieval.py).

  python launch/build_index.py --model=PATH --input=FILE[,FILE...] --output=DIR \
      [--pooling=mean] [--normalize] [--max_seq_length=N] [--float16] [--ann]

Input: text files (one text a line) or `.jsonl` files (`text`, optional `id`).
Progress and ETA go to stderr. Chunks of --chunk_lines lines are kept in
DIR.partial/ until the index is complete; running the same command again after an
interruption skips the chunks already embedded. Multi-host: run the same command
on every host with --coordinator_address/--num_processes/--process_id (or inside
a cluster that jax.distributed.initialize() reads by itself, with --distributed)
and a shared --output: each host embeds its chunks, process 0 writes the index.
"""

import sys
import time

from absl import flags

from bert_jax.errors import UserError
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_INPUT = flags.DEFINE_list("input", None, "Text or .jsonl files (globs allowed).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Index directory to create.", required=True)
_POOLING = flags.DEFINE_enum("pooling", "mean", ["cls", "mean", "max"], "How to pool tokens.")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "L2-normalise vectors: scores are cosines.")
_LAYER = flags.DEFINE_integer("layer", -1, "Hidden state to pool: 0 = embeddings, -1 = last layer.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None,
                                       "Tokens per text incl. [CLS]/[SEP]; default model limit <= 512.")
_FLOAT16 = flags.DEFINE_bool("float16", False, "Store vectors as float16 (half the size).")
_ANN = flags.DEFINE_bool("ann", False, "Also build a faiss HNSW graph for search.py --ann.")
_ANN_M = flags.DEFINE_integer("ann_m", 32, "HNSW links per node.")
_CHUNK_LINES = flags.DEFINE_integer("chunk_lines", 10000, "Lines per resumable chunk.")
_TOKENS_PER_BATCH = flags.DEFINE_integer(
    "tokens_per_batch", 0, "Token budget of a batch; 0 = per platform (512 per CPU device, "
    "2048 per accelerator).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "jax.distributed.initialize() from the cluster environment.")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import retrieval  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  given = [_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value]
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise UserError("multi-host needs all of --coordinator_address, --num_processes and "
                      "--process_id")
    jax.distributed.initialize(*given)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  options = retrieval.IndexOptions(
      pooling=_POOLING.value, normalize=_NORMALIZE.value, layer=_LAYER.value,
      max_seq_length=_MAX_SEQ_LENGTH.value, float16=_FLOAT16.value, ann=_ANN.value,
      ann_m=_ANN_M.value, chunk_lines=_CHUNK_LINES.value,
      tokens_per_batch=_TOKENS_PER_BATCH.value, overwrite=_OVERWRITE.value)
  written = retrieval.build_index(_MODEL.value, _INPUT.value, _OUTPUT.value, options)
  if written:
    print(f"indexed in {time.monotonic() - start:.1f} s -> {written}", file=sys.stderr)


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
