"""Unsupervised extractive summaries from any model: the sentences that best stand for a text.

  python launch/summarize.py --model=PATH (--input=FILE | --text=T) \
      [--num_sentences=3 | --ratio=0.2] [--method=centroid|cluster|mmr] [--mmr_lambda=0.7] \
      [--json] [--per_document]

Sentences are embedded with the model's mean pooling and chosen by closeness to
the document centroid, by k-means clusters or by maximal marginal relevance
(bert_jax/inference/summarize.py); the summary keeps document order. --input is
plain UTF-8 text (one document; with --per_document, documents separated by a
blank line) or JSONL (`*.jsonl`, one document a line, field "text"). Prints each
summary (a blank line between documents), or with --json one line per document:
{"summary": str, "sentences": [{"index", "text", "score"}]}.
"""

import json
import sys

from absl import flags

from bert_jax import progress
from bert_jax.errors import UserError
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_INPUT = flags.DEFINE_string("input", None, "A UTF-8 text or JSONL file.")
_TEXT = flags.DEFINE_string("text", None, "The text to summarize.")
_NUM_SENTENCES = flags.DEFINE_integer("num_sentences", None, "Sentences per summary (default 3).")
_RATIO = flags.DEFINE_float("ratio", None, "Or: this fraction of each document's sentences.")
_METHOD = flags.DEFINE_enum("method", "centroid", ["centroid", "cluster", "mmr"],
                            "How sentences are chosen.")
_MMR_LAMBDA = flags.DEFINE_float("mmr_lambda", 0.7, "mmr: weight of relevance vs. redundancy.")
_SEED = flags.DEFINE_integer("seed", 0, "cluster: seed of the k-means++ initialisation.")
_PER_DOCUMENT = flags.DEFINE_bool("per_document", False,
                                  "Plain text: one document per blank-line-separated block.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None, "Tokens per sentence.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line per document.")


def main(argv):
  del argv
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  from bert_jax.inference import summarize  # pylint: disable=g-import-not-at-top
  if (_INPUT.value is None) == (_TEXT.value is None):
    raise UserError("give exactly one of --input=FILE or --text=T")
  summarize.summary_length(_NUM_SENTENCES.value, _RATIO.value, 1)  # bad pairs fail first
  if _INPUT.value is not None:
    documents, names = summarize.read_documents(_INPUT.value, _PER_DOCUMENT.value)
  else:
    documents, names = summarize.split_documents(_TEXT.value, _PER_DOCUMENT.value, "--text")
  summarizer = summarize.Summarizer(
      convert.from_pretrained(_MODEL.value), _METHOD.value, num_sentences=_NUM_SENTENCES.value,
      ratio=_RATIO.value, mmr_lambda=_MMR_LAMBDA.value, seed=_SEED.value,
      max_seq_length=_MAX_SEQ_LENGTH.value)
  bar = progress.Progress("summarized", "documents") if len(documents) > 1 else None
  for number, summary in enumerate(summarizer.summarize(documents, names)):
    if bar is not None:
      bar(number + 1, len(documents))
    if summary.note:
      print(f"note: {summary.note}", file=sys.stderr)
    if _JSON.value:
      print(json.dumps(summary.to_json(), ensure_ascii=False))
    else:
      print(("\n" if number else "") + summary.to_json()["summary"])


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
