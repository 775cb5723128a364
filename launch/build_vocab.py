r"""Trains a WordPiece vocabulary or a SentencePiece model for bert_jax.

The output dir is what `load_tokenizer(dir)` and `launch/prepare_data.py
--vocab=DIR` read: `vocab.txt` (or `spm.model`) and `tokenizer_config.json`.

  python launch/build_vocab.py --input='corpus/*.txt' --output=/tmp/vocab \
      --vocab_size=30522 --kind=wordpiece --lowercase
  python launch/build_vocab.py --input=docs.jsonl --output=/tmp/spm \
      --vocab_size=32000 --kind=sentencepiece --model_type=unigram
"""

import json

from absl import flags
from absl import logging

from bert_jax import vocab_training
from bert_jax.errors import UserError, run_main

_INPUT = flags.DEFINE_string(
    "input", None, "Files: globs and/or comma-separated paths; plain text, or JSONL "
    "(.jsonl/.json) with a 'text' field.")
_OUTPUT = flags.DEFINE_string("output", None, "Output dir (must not exist unless --overwrite).")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 30522, "Number of tokens.")
_KIND = flags.DEFINE_enum("kind", "wordpiece", ["wordpiece", "sentencepiece"], "Tokenizer kind.")
_LOWERCASE = flags.DEFINE_bool("lowercase", False, "Uncased: lower-case (WordPiece also strips accents).")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "SentencePiece algorithm.")
_LIMIT_ALPHABET = flags.DEFINE_integer(
    "limit_alphabet", None, "WordPiece: most distinct characters kept (default min(1000, vocab_size/4)).")
_CHARACTER_COVERAGE = flags.DEFINE_float(
    "character_coverage", 0.9995, "SentencePiece: share of characters the model covers.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output dir.")

flags.mark_flags_as_required(["input", "output"])


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _KIND.value == "wordpiece":
    summary = vocab_training.train_wordpiece(
        _INPUT.value, _OUTPUT.value, _VOCAB_SIZE.value, _LOWERCASE.value,
        limit_alphabet=_LIMIT_ALPHABET.value, overwrite=_OVERWRITE.value)
  else:
    summary = vocab_training.train_sentencepiece(
        _INPUT.value, _OUTPUT.value, _VOCAB_SIZE.value, _MODEL_TYPE.value, _LOWERCASE.value,
        character_coverage=_CHARACTER_COVERAGE.value, overwrite=_OVERWRITE.value)
  if summary["bad_utf8_lines"]:
    logging.warning("%d lines were not UTF-8; bad bytes were replaced by U+FFFD",
                    summary["bad_utf8_lines"])
  print(json.dumps(summary))


if __name__ == "__main__":
  run_main(main)
