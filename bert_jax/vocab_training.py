"""Vocabulary training: a BERT WordPiece vocabulary or a SentencePiece model from text.

Why a module of its own: training runs once per corpus (`launch/build_vocab.py`)
and needs the trainers and corpus reading; encoding (`bert_jax/tokenization.py`)
runs everywhere and needs neither. The output directory is, by construction, what
`tokenization.load_tokenizer` reads: `vocab.txt` or `spm.model`, plus
`tokenizer_config.json`, written atomically.
"""

from __future__ import annotations

import io
import os
from typing import Iterator, Optional, Sequence

import sentencepiece as spm
from tokenizers import trainers

from bert_jax import files as files_lib
from bert_jax.data import text_corpus
from bert_jax import tokenization
from bert_jax.errors import UserError
from bert_jax.tokenization import (CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK,
                                   SentencePieceTokenizer, WordPieceTokenizer)


def train_wordpiece(files: str | Sequence[str], output_dir: str, vocab_size: int,
                    lowercase: bool = False, *, limit_alphabet: Optional[int] = None,
                    min_frequency: int = 2, overwrite: bool = False) -> dict:
  """Trains a BERT WordPiece vocabulary ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4).

  Args:
    files: paths, globs or comma-separated lists; plain text, or JSONL (.jsonl/.json)
      with a 'text' field. Bytes that are not UTF-8 are replaced and counted.
    output_dir: written via a temporary sibling dir renamed at the end.
    vocab_size: target number of tokens.
    lowercase: uncased (lower-case and strip accents) or cased.
    limit_alphabet: most distinct characters kept (rarer ones become [UNK]); default
      min(1000, vocab_size // 4), since each character also takes a '##' entry.
    min_frequency: least count of a merged pair.
    overwrite: replace an existing output_dir.

  Returns:
    A summary: files, lines, bad_utf8_lines, vocab_size, output_dir.

  Note: the `tokenizers` trainer numbers `##` continuations in hash-map order, and
  equal-count merges are broken by those numbers, so two trainings on the same corpus
  can give a slightly different vocabulary. Build a vocabulary once and keep it with
  the data (prepare_data copies it); everything downstream of it is deterministic.
  """
  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise UserError(f"vocab_size={vocab_size} is too small")
  corpus = _Corpus(files_lib.expand_inputs(files))
  # Uncased strips accents, as BERT's uncased models (WordPieceTokenizer's default too).
  tok = tokenization.bert_pipeline(None, lowercase, strip_accents=lowercase)
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
      special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
      limit_alphabet=limit_alphabet or max(1, min(1000, vocab_size // 4)))
  tok.train_from_iterator(corpus, trainer)
  corpus.raise_error()
  vocab = tok.get_vocab()
  id_to_token = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
  assert [vocab[t] for t in id_to_token] == list(range(len(vocab))), "ids must be contiguous"
  tokenizer = WordPieceTokenizer(id_to_token, lowercase)
  files_lib.write_dir_atomically(output_dir, tokenizer.save, overwrite)
  return corpus.summary(output_dir, tokenizer.vocab_size)


def train_sentencepiece(files: str | Sequence[str], output_dir: str, vocab_size: int,
                        model_type: str = "unigram", lowercase: bool = False, *,
                        character_coverage: float = 0.9995, overwrite: bool = False) -> dict:
  """Trains a SentencePiece model with [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.

  [CLS], [SEP] and [MASK] are user-defined symbols (never split); there is no
  BOS/EOS. With `lowercase`, text is lower-cased before training and encoding.
  Arguments as `train_wordpiece`; model_type is 'unigram' or 'bpe'.
  """
  if model_type not in ("unigram", "bpe"):
    raise UserError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
  corpus = _Corpus(files_lib.expand_inputs(files), lowercase=lowercase)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=0, pad_piece=PAD, unk_id=1, unk_piece=UNK, bos_id=-1, eos_id=-1,
        user_defined_symbols=[CLS, SEP, MASK], hard_vocab_limit=False,
        max_sentence_length=1 << 16, input_sentence_size=10_000_000, shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1, minloglevel=2)
  except RuntimeError as e:  # e.g. "Vocabulary size is smaller than required_chars"
    corpus.raise_error()
    raise UserError(f"SentencePiece training failed: {str(e).split('] ')[-1]}") from None
  corpus.raise_error()
  tokenizer = SentencePieceTokenizer(model.getvalue(), lowercase)
  files_lib.write_dir_atomically(output_dir, tokenizer.save, overwrite)
  return corpus.summary(output_dir, tokenizer.vocab_size)


class _Corpus:
  """Iterates the non-empty lines (sentences) of a corpus, as `text_corpus` reads it.

  Plain text, JSONL (its 'text' split into sentences) and `.gz` of either; bad
  UTF-8 replaced and counted. Errors found while a library pulls lines (a bad
  JSON line) stop the iteration and are re-raised by `raise_error` after
  training, since exceptions raised inside the libraries' callbacks do not
  always come back intact.
  """

  def __init__(self, paths: list[str], lowercase: bool = False):
    self.paths, self.lowercase = paths, lowercase
    self.lines = 0
    self.stats = text_corpus.ReadStats()
    self.error: Optional[Exception] = None
    if not any(True for _ in self._texts()):  # reads up to the first non-empty line
      raise UserError(f"the corpus ({', '.join(paths)}) holds no text")

  def _texts(self) -> Iterator[str]:
    self.stats = text_corpus.ReadStats()
    for document in text_corpus.read_documents(self.paths, self.stats):
      for sentence in document:
        yield sentence.lower() if self.lowercase else sentence

  def __iter__(self) -> Iterator[str]:
    self.lines = 0
    try:
      for text in self._texts():
        self.lines += 1
        yield text
    except UserError as e:
      self.error = e

  def raise_error(self) -> None:
    if self.error is not None:
      raise self.error

  def summary(self, output_dir: str, vocab_size: int) -> dict:
    return {"files": len(self.paths), "lines": self.lines,
            "bad_utf8_lines": self.stats.bad_lines,
            "vocab_size": vocab_size, "output_dir": os.path.abspath(output_dir)}
