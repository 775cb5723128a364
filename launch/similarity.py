"""Cosine similarity matrix of words, sentences or words in context, as a table, JSON or a PNG.

  python launch/similarity.py --model=PATH (--words=king,queen,man | --sentences=FILE |
      --in_context="SENTENCE::WORD" --in_context=...) [--contextual] [--pooling=mean]
      [--layer=-1] [--normalize] [--output=FILE.png] [--json]

--words compares input word-embedding rows (a word WordPiece splits: the mean of its
pieces' rows, said on stderr); --contextual instead encodes each word alone as a
sentence and takes the mean of its pieces' last-layer vectors. A word the vocabulary
cannot spell (all [UNK]) is left out, and stderr names it. --sentences (one text a
line) pools like launch/embed.py. --in_context (repeatable) compares each occurrence
of a word in its sentence: the mean of its pieces' vectors from --layer. --json
prints {"labels": [...], "matrix": [[...]]} (6 decimals); otherwise a table.
--output writes a heatmap (matplotlib); its directory is checked before any work.
"""

import json
import sys

from absl import flags

from bert_jax.errors import UserError
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_WORDS = flags.DEFINE_list("words", None, "Comma-separated words.")
_SENTENCES = flags.DEFINE_string("sentences", None, "UTF-8 file, one text a line.")
_IN_CONTEXT = flags.DEFINE_multi_string(
    "in_context", None, "SENTENCE::WORD (repeatable): the word's contextual vector there.")
_CONTEXTUAL = flags.DEFINE_bool("contextual", False,
                                "Words: last-layer vectors of the word encoded alone.")
_POOLING = flags.DEFINE_enum("pooling", "mean", ["cls", "mean", "max"], "Sentences: pooling.")
_LAYER = flags.DEFINE_integer("layer", -1, "Sentences and --in_context: hidden state to use.")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "Sentences: L2-normalise (cosines unchanged).")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None,
                                       "Sentences and --in_context: tokens per text.")
_OUTPUT = flags.DEFINE_string("output", None, "Heatmap PNG to write.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def main(argv):
  del argv
  from bert_jax import files  # pylint: disable=g-import-not-at-top
  from bert_jax import similarity  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  given = [_WORDS.value is not None, _SENTENCES.value is not None, bool(_IN_CONTEXT.value)]
  if sum(given) != 1:
    raise UserError("give exactly one of --words=a,b,c, --sentences=FILE or "
                    "--in_context=SENTENCE::WORD")
  if _OUTPUT.value is not None:
    if not _OUTPUT.value.lower().endswith(".png"):
      raise UserError(f"--output={_OUTPUT.value}: the heatmap is a PNG; name it *.png")
    files.check_output(_OUTPUT.value)
  occurrences = [similarity.parse_in_context(v) for v in _IN_CONTEXT.value or []]
  texts = files.read_lines(_SENTENCES.value) if _SENTENCES.value is not None else None
  pre = convert.from_pretrained(_MODEL.value)
  if _WORDS.value is not None:
    got = similarity.word_vectors(pre, _WORDS.value, contextual=_CONTEXTUAL.value)
    kind = "contextual word vectors" if _CONTEXTUAL.value else "input word embeddings"
  elif texts is not None:
    got = similarity.sentence_vectors(pre, texts, _POOLING.value, layer=_LAYER.value,
                                      normalize=_NORMALIZE.value,
                                      max_seq_length=_MAX_SEQ_LENGTH.value)
    kind = f"{_POOLING.value}-pooled sentence vectors"
  else:
    got = similarity.occurrence_vectors(pre, occurrences, layer=_LAYER.value,
                                        max_seq_length=_MAX_SEQ_LENGTH.value)
    kind = f"words in context, layer {_LAYER.value}"
  if got.left_out:
    print(f"note: left out {', '.join(got.left_out)}: not in the model's vocabulary (every "
          "piece is [UNK], so any two would show cosine 1.0)", file=sys.stderr)
  for note in got.notes:
    print(f"note: {note}", file=sys.stderr)
  matrix = similarity.cosine_matrix(got.vectors)
  if _JSON.value:
    rounded = [[round(float(x), 6) for x in row] for row in matrix]
    print(json.dumps({"labels": got.labels, "matrix": rounded}, ensure_ascii=False))
  else:
    print(f"cosine similarity of {kind}")
    print(similarity.format_table(got.labels, matrix))
  if _OUTPUT.value:
    similarity.save_heatmap(_OUTPUT.value, got.labels, matrix, f"cosine similarity, {kind}")
    print(f"heatmap -> {_OUTPUT.value}", file=sys.stderr)


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
