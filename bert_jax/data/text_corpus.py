"""Raw text -> documents (lists of sentences), for vocabulary-free corpus reading.

Why a module of its own: data preparation reads corpora that are large, messy
and in several formats, and how they are read (which bytes are bad, where a
document ends, what a sentence is) should be visible in one short file.
- Plain text: one sentence per line, a blank line between documents (the
  original BERT release format). JSONL (`.jsonl`/`.json`): one document per
  line in a `text` field, cut into sentences by a simple rule. `.gz` of either.
- Bytes that are not UTF-8 are replaced by U+FFFD and counted, never fatal.
- Everything streams: a corpus larger than memory is fine.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import importlib.util
import json
import re
from typing import Any, Iterable, Iterator, Optional, Sequence

from absl import logging

from bert_jax.errors import UserError

_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
  """Splits free text into sentences: at newlines and after . ! ? before a capital or digit."""
  sentences = []
  for line in text.splitlines():
    for piece in _SENTENCE_END.sub("\\1\n", line).split("\n"):
      piece = piece.strip()
      if piece:
        sentences.append(piece)
  return sentences


@dataclasses.dataclass
class ReadStats:
  """Counts gathered while reading raw text."""
  documents: int = 0
  sentences: int = 0
  text_bytes: int = 0
  bad_bytes: int = 0
  bad_lines: int = 0
  empty_documents: int = 0


def _decode_line(raw: bytes, stats: ReadStats) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    bad = 0

    def count(exc):
      nonlocal bad
      bad += exc.end - exc.start
      return "\ufffd", exc.end

    codecs.register_error("bert_jax_count", count)
    text = raw.decode("utf-8", errors="bert_jax_count")
    stats.bad_bytes += bad
    stats.bad_lines += 1
    return text


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _is_jsonl(path: str) -> bool:
  return re.search(r"\.jsonl?(\.gz)?$", path) is not None


def read_documents(paths: Sequence[str], stats: ReadStats, text_key: str = "text"
                   ) -> Iterator[list[str]]:
  """Yields documents (lists of sentences) from text or JSONL files, in order.

  Plain text: one sentence per line, a blank line between documents. JSONL
  (`.jsonl`/`.json`, optionally `.gz`): one document per line, `text_key` is
  split into sentences. Bad UTF-8 is replaced by U+FFFD and counted.
  """
  for path in paths:
    try:
      yield from _read_file(path, stats, text_key)
    except (OSError, EOFError) as e:  # A truncated or corrupt .gz, an unreadable file.
      if isinstance(e, (FileNotFoundError, PermissionError)):
        raise
      raise UserError(f"{path}: cannot be read ({e})") from None


def _read_file(path: str, stats: ReadStats, text_key: str) -> Iterator[list[str]]:
  jsonl = _is_jsonl(path)
  with _open(path) as f:
    doc: list[str] = []
    for line_number, raw in enumerate(f, 1):
      stats.text_bytes += len(raw)
      line = _decode_line(raw, stats).strip()
      if jsonl:
        if not line:
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise UserError(f"{path}:{line_number}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
          raise UserError(f"{path}:{line_number}: expected a JSON object with a string "
                          f"field {text_key!r}")
        yield from _document(split_sentences(record[text_key]), stats)
      elif line:
        doc.append(line)
      elif doc:
        yield from _document(doc, stats)
        doc = []
    if doc:
      yield from _document(doc, stats)


def tfds_texts(spec: str, key: str = "text", data_dir: Optional[str] = None) -> Iterator[Any]:
  """The `key` feature of every example of a tfds dataset `NAME[:SPLIT]`, in stored order.

  Reads through `tfds.data_source` (ArrayRecord, random access, no TensorFlow), so a
  prepared tfds dataset needs nothing beyond tensorflow-datasets; datasets stored as
  TFRecord fall back to `tfds.load`, which needs TensorFlow (the `[tf]` extra).
  """
  name = spec.partition(":")[0]
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)  # tfds logs each lookup it tries at INFO.
  try:
    examples = tfds_examples(spec, data_dir)
  finally:
    logging.set_verbosity(verbosity)
  for example in examples:
    if key not in example:
      raise UserError(f"tfds dataset {name} has no feature {key!r}; it has {sorted(example)}")
    yield example[key]


def tfds_examples(spec: str, data_dir: Optional[str] = None):
  """Examples (dicts of numpy values) of a tfds dataset `NAME[:SPLIT]`, in stored order.

  Through `tfds.data_source` (no TensorFlow); TFRecord datasets fall back to
  `tfds.load` when TensorFlow is installed.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"tfds dataset {spec!r} needs tensorflow-datasets: pip install "
                    "tensorflow-datasets") from None
  name, _, split = spec.partition(":")
  split = split or "train"
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return (source[i] for i in range(len(source)))
  except Exception as exc:  # tfds raises many types for a missing/unsupported dataset.
    if importlib.util.find_spec("tensorflow") is None:
      reason = " ".join(str(exc).split()).split(". ")[0]
      raise UserError(f"tfds dataset {spec!r} cannot be read ({reason}): prepare it with "
                      "`tfds build --file_format=array_record`, or install TensorFlow for "
                      "TFRecord datasets: pip install 'bert_jax[tf]'") from None
  return tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False))


def documents_from_texts(texts: Iterable[str], stats: ReadStats) -> Iterator[list[str]]:
  """Documents from free-text strings (a tfds text field, ...)."""
  for text in texts:
    if isinstance(text, bytes):
      stats.text_bytes += len(text)
      text = _decode_line(text, stats)
    else:
      stats.text_bytes += len(text.encode("utf-8"))
    yield from _document(split_sentences(text), stats)


def _document(sentences: list[str], stats: ReadStats) -> Iterator[list[str]]:
  if not sentences:
    stats.empty_documents += 1
    return
  stats.documents += 1
  stats.sentences += len(sentences)
  yield sentences
