"""Embed each line of a text file with any model path.

  python launch/embed.py --model=PATH --input=FILE --output=OUT.npy \
      --pooling=cls|mean|max|token [--normalize] [--max_seq_length=N] [--layer=-1]

cls/mean/max write one float32 vector per input line, in input order, to a .npy
[N, E]. token writes an .npz: `vectors` [T, E] (every real token, [CLS]/[SEP]
included, lines concatenated), `token_ids` [T], `offsets` [T, 2] (char start/end
in the line, (0, 0) for special tokens) and `lengths` [N] (tokens per line).
Longer texts are truncated to --max_seq_length (default: the model's limit,
capped at 512). --output is checked up front (its directory exists and is
writable) and written to a temporary name and renamed. Progress (a bar on a
terminal, a line every few seconds when piped) goes to stderr.
"""

import sys
import time

from absl import flags
import numpy as np

from bert_jax.formats import convert
from bert_jax import files
from bert_jax import inference
from bert_jax import progress
from bert_jax.errors import UserError
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_INPUT = flags.DEFINE_string("input", None, "UTF-8 text file, one text per line.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, ".npy (or .npz for --pooling=token).", required=True)
_POOLING = flags.DEFINE_enum("pooling", "mean", list(inference.POOLINGS), "How to pool tokens.")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "L2-normalise each vector.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None,
                                       "Tokens per text incl. [CLS]/[SEP]; default model limit <= 512.")
_LAYER = flags.DEFINE_integer("layer", -1, "Hidden state to pool: 0 = embeddings, -1 = last layer.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None,
                                   "Largest rows per batch (default: from --tokens_per_batch).")
_TOKENS_PER_BATCH = flags.DEFINE_integer(
    "tokens_per_batch", 0, "Token budget of a batch; 0 = per platform (512 per CPU device, "
    "2048 per accelerator).")


def _save(path: str, result) -> None:
  def write(f):
    if isinstance(result, inference.TokenEmbeddings):
      np.savez(f, vectors=result.vectors, token_ids=result.token_ids, offsets=result.offsets,
               lengths=result.lengths)
    else:
      np.save(f, result)

  files.write_file_atomically(path, write)


def main(argv):
  del argv
  start = time.monotonic()
  output = _OUTPUT.value
  if _POOLING.value == "token" and not output.endswith(".npz"):
    raise UserError(f"--output={output}: --pooling=token writes an .npz archive; name it *.npz")
  files.check_output(output)
  texts = files.read_lines(_INPUT.value)
  pre = convert.from_pretrained(_MODEL.value)
  embedder = inference.Embedder(pre, _POOLING.value, normalize=_NORMALIZE.value, layer=_LAYER.value,
                                max_seq_length=_MAX_SEQ_LENGTH.value,
                                tokens_per_batch=_TOKENS_PER_BATCH.value,
                                batch_size=_BATCH_SIZE.value)
  result = embedder.embed(texts, progress=progress.Progress("embedded", "lines"))
  _save(output, result)
  print(f"embedded {len(texts)} lines in {time.monotonic() - start:.1f} s -> {output}",
        file=sys.stderr)


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
