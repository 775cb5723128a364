"""Cosine similarity matrix of words or sentences, as a table, JSON or a heatmap PNG.

  python launch/similarity.py --model=PATH (--words=king,queen,man | --sentences=FILE) \
      [--contextual] [--pooling=mean] [--layer=-1] [--normalize] [--output=FILE.png] [--json]

--words compares input word-embedding rows (a word WordPiece splits: the mean of its
pieces' rows, said on stderr); --contextual instead encodes each word alone as a
sentence and takes the mean of its pieces' last-layer vectors. --sentences (one
text a line) pools like launch/embed.py. --json prints {"labels": [...], "matrix":
[[...]]}; otherwise a table. --output writes a heatmap (matplotlib).
"""

import json
import sys

from absl import flags

from bert_jax.errors import UserError
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_WORDS = flags.DEFINE_list("words", None, "Comma-separated words.")
_SENTENCES = flags.DEFINE_string("sentences", None, "UTF-8 file, one text a line.")
_CONTEXTUAL = flags.DEFINE_bool("contextual", False,
                                "Words: last-layer vectors of the word encoded alone.")
_POOLING = flags.DEFINE_enum("pooling", "mean", ["cls", "mean", "max"], "Sentences: pooling.")
_LAYER = flags.DEFINE_integer("layer", -1, "Sentences: hidden state to pool.")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "Sentences: L2-normalise (cosines unchanged).")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None, "Sentences: tokens per text.")
_OUTPUT = flags.DEFINE_string("output", None, "Heatmap PNG to write.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def main(argv):
  del argv
  from bert_jax import similarity  # pylint: disable=g-import-not-at-top
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  if (_WORDS.value is None) == (_SENTENCES.value is None):
    raise UserError("give exactly one of --words=a,b,c or --sentences=FILE")
  if _OUTPUT.value is not None and not _OUTPUT.value.lower().endswith(".png"):
    raise UserError(f"--output={_OUTPUT.value}: the heatmap is a PNG; name it *.png")
  texts = inference.read_lines(_SENTENCES.value) if _SENTENCES.value is not None else None
  pre = convert.from_pretrained(_MODEL.value)
  if texts is None:
    got = similarity.word_vectors(pre, _WORDS.value, contextual=_CONTEXTUAL.value)
    kind = "contextual word vectors" if _CONTEXTUAL.value else "input word embeddings"
  else:
    got = similarity.sentence_vectors(pre, texts, _POOLING.value, layer=_LAYER.value,
                                      normalize=_NORMALIZE.value,
                                      max_seq_length=_MAX_SEQ_LENGTH.value)
    kind = f"{_POOLING.value}-pooled sentence vectors"
  for note in got.notes:  # on stdout with the table, on stderr beside JSON
    print(f"note: {note}", file=sys.stderr if _JSON.value else sys.stdout)
  matrix = similarity.cosine_matrix(got.vectors)
  if _JSON.value:
    print(json.dumps({"labels": got.labels, "matrix": matrix.tolist()}, ensure_ascii=False))
  else:
    print(f"cosine similarity of {kind}")
    print(similarity.format_table(got.labels, matrix))
  if _OUTPUT.value:
    similarity.save_heatmap(_OUTPUT.value, got.labels, matrix, f"cosine similarity, {kind}")
    print(f"heatmap -> {_OUTPUT.value}", file=sys.stderr)


if __name__ == "__main__":
  run_main(main, quiet=True)
