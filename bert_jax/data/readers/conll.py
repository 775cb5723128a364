"""Tagging data: CoNLL-style files and tfds `conll2003` -> word-labelled sentences -> features.

Why this shape: a tagging set is sentences of (word, label); what the model
sees is WordPiece rows. The label of a word goes on its first piece; the other
pieces carry label -1 (ignored by the loss and the metrics), as in BERT's NER
recipe. A sentence whose pieces do not fit one row is cut into consecutive
windows of whole words, each word labelled in exactly one window, so nothing
is dropped; a single word with more pieces than a row keeps its first pieces.
Features remember (sentence, first word, piece positions), so predictions go
back to words and entity metrics are computed on whole sentences.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Optional, Sequence

from absl import logging
import numpy as np

from bert_jax.data import finetune_pipeline
from bert_jax.errors import UserError

IGNORE = -1  # label id of pieces that are not a word's first piece
DOCSTART = "-DOCSTART-"


@dataclasses.dataclass
class Sentence:
  words: list[str]
  labels: list[str]


def read_conll(path: str, require_labels: bool = True) -> list[Sentence]:
  """Sentences of a CoNLL file: a token per line, its label in the last column.

  Columns are separated by whitespace; a blank line ends a sentence; `-DOCSTART-`
  lines are skipped. A line with a single column is an error naming the file and
  line, unless `require_labels` is False (a file to predict: its labels are '').
  """
  sentences, words, labels = [], [], []
  try:
    with open(path, "rb") as f:
      for line_number, raw in enumerate(f, 1):
        try:
          line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
          raise UserError(f"{path}:{line_number}: not UTF-8 text") from None
        if not line or line.startswith(DOCSTART):
          if words:
            sentences.append(Sentence(words, labels))
            words, labels = [], []
          continue
        columns = line.split()
        if len(columns) < 2 and require_labels:
          raise UserError(f"{path}:{line_number}: no label column in {line!r} (expected a token "
                          "and its label, separated by whitespace)")
        words.append(columns[0])
        labels.append(columns[-1] if len(columns) > 1 else "")
  except IsADirectoryError:
    raise UserError(f"{path} is a directory, expected a CoNLL file") from None
  if words:
    sentences.append(Sentence(words, labels))
  if not sentences:
    raise UserError(f"{path} has no sentences")
  return sentences


def read_conll2003_tfds(split: str, data_dir: Optional[str] = None,
                        name: str = "conll2003") -> tuple[list[Sentence], list[str]]:
  """(sentences, label names in the dataset's id order) of a tfds CoNLL dataset split.

  Read with `tfds.data_source` (ArrayRecord, no TensorFlow). Splits are
  'train', 'dev' and 'test'.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    importlib.import_module(f"tensorflow_datasets.text.{name}")  # registers the builder
  except ImportError:
    raise UserError(f"config.task={name} needs tensorflow-datasets: pip install "
                    "tensorflow-datasets") from None
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    names = list(tfds.builder(name, data_dir=data_dir).info.features["ner"].feature.names)
  except Exception as exc:  # tfds raises many types for a missing dataset
    reason = " ".join(str(exc).split()).split(". ")[0]
    raise UserError(f"tfds dataset {name}:{split} cannot be read ({reason}); prepare it with "
                    f"`tfds build {name} --file_format=array_record`") from None
  sentences = []
  for i in range(len(source)):
    example = source[i]
    words = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in example["tokens"]]
    if len(words) != len(example["ner"]):
      raise UserError(f"tfds {name}:{split} example {i} has {len(words)} tokens but "
                      f"{len(example['ner'])} ner tags")
    sentences.append(Sentence(words, [names[int(t)] for t in example["ner"]]))
  return sentences, names


def label_list(sentences: Sequence[Sentence]) -> list[str]:
  """The labels that occur, 'O' first (when present), then sorted by entity type and B/I."""
  seen = {label for s in sentences for label in s.labels}

  def key(label):
    prefix, _, kind = label.partition("-")
    return (label != "O", kind if kind else prefix, label)

  return sorted(seen, key=key)


@dataclasses.dataclass
class TaggingFeatures:
  """Model rows of a tagging set, and how they map back to words.

  Row i holds words [first_word[i], first_word[i] + len(positions[i])) of
  sentence `sentence_index[i]`; positions[i][k] is the row position of the
  first piece of its k-th word.
  """

  input_ids: list[np.ndarray]  # int32 [n_i]: [CLS] pieces [SEP]
  label_ids: list[np.ndarray]  # int32 [n_i]: label id on first pieces, IGNORE elsewhere
  sentence_index: np.ndarray  # int64 [F]
  first_word: np.ndarray  # int64 [F]
  positions: list[np.ndarray]  # int32 [words in row]
  num_windowed: int = 0  # sentences cut into several rows
  num_cut_words: int = 0  # words with more pieces than a row (their first pieces kept)

  def __len__(self) -> int:
    return len(self.input_ids)

  def encoded(self, max_seq_length: int, offset: int = 0) -> finetune_pipeline.Encoded:
    """Rows padded to `max_seq_length` for the fine-tuning stream; `feature_index` (a row
    field) is the row number plus `offset`, unique over a task's evaluation sets."""
    ids = _padded(self.input_ids, max_seq_length, 0)
    return finetune_pipeline.Encoded(
        {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
         "label_ids": _padded(self.label_ids, max_seq_length, IGNORE)},
        {"feature_index": np.arange(offset, offset + len(self), dtype=np.int32)},
        np.asarray([len(r) for r in self.input_ids], np.int32))


def _padded(rows: Sequence[np.ndarray], length: int, fill: int) -> np.ndarray:
  out = np.full((len(rows), length), fill, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def word_pieces(tokenizer, words: Sequence[str]) -> list[np.ndarray]:
  """WordPiece ids of each word (a word with no pieces, e.g. only control chars, is [UNK])."""
  pieces = tokenizer.encode_plain(list(words)) if words else []
  return [p if len(p) else np.asarray([tokenizer.unk_id], np.int32) for p in pieces]


def encode(sentences: Sequence[Sentence], tokenizer, label_to_id: Optional[dict[str, int]],
           max_seq_length: int, source: str = "") -> TaggingFeatures:
  """Sentences -> rows of at most `max_seq_length` ids (windows of whole words).

  `label_to_id` None encodes without labels (prediction). A label outside it is
  an error naming `source` and the label.
  """
  if max_seq_length < 3:
    raise UserError(f"max_seq_length={max_seq_length} leaves no room for a word")
  budget = max_seq_length - 2
  flat = [w for s in sentences for w in s.words]
  pieces_all = word_pieces(tokenizer, flat)
  out = TaggingFeatures([], [], [], [], [])
  sent_idx, first_word = [], []
  k = 0
  for si, sentence in enumerate(sentences):
    pieces = pieces_all[k:k + len(sentence.words)]
    k += len(sentence.words)
    if label_to_id is not None:
      unknown = sorted({l for l in sentence.labels if l not in label_to_id})
      if unknown:
        raise UserError(f"{source or 'data'}: sentence {si + 1} has label(s) {unknown} outside "
                        f"the model's label set {list(label_to_id)}")
    windows, start, used = [], 0, 0
    for wi, p in enumerate(pieces):
      n = min(len(p), budget)
      out.num_cut_words += int(len(p) > budget)
      if used + n > budget and wi > start:
        windows.append((start, wi))
        start, used = wi, 0
      used += n
    windows.append((start, len(pieces)))
    out.num_windowed += int(len(windows) > 1)
    for a, b in windows:
      ids, labels, positions = [tokenizer.cls_id], [IGNORE], []
      for wi in range(a, b):
        p = pieces[wi][:budget]
        positions.append(len(ids))
        ids.extend(p.tolist())
        label = label_to_id[sentence.labels[wi]] if label_to_id is not None else IGNORE
        labels.extend([label] + [IGNORE] * (len(p) - 1))
      ids.append(tokenizer.sep_id)
      labels.append(IGNORE)
      out.input_ids.append(np.asarray(ids, np.int32))
      out.label_ids.append(np.asarray(labels, np.int32))
      out.positions.append(np.asarray(positions, np.int32))
      sent_idx.append(si)
      first_word.append(a)
  out.sentence_index = np.asarray(sent_idx, np.int64)
  out.first_word = np.asarray(first_word, np.int64)
  if out.num_windowed or out.num_cut_words:
    logging.warning("%s: %d sentence(s) longer than max_seq_length=%d were split into windows; "
                    "%d word(s) longer than a row kept their first %d pieces",
                    source or "tagging data", out.num_windowed, max_seq_length,
                    out.num_cut_words, budget)
  return out


def word_predictions(features: TaggingFeatures, sentences: Sequence[Sentence],
                     feature_index: np.ndarray, pred_ids_FxL: np.ndarray) -> list[list[int]]:
  """Per-sentence word label ids from per-row predicted ids (rows in any order)."""
  out = [[-1] * len(s.words) for s in sentences]
  for f, preds in zip(np.asarray(feature_index).tolist(), np.asarray(pred_ids_FxL)):
    positions = features.positions[f]
    si, w0 = int(features.sentence_index[f]), int(features.first_word[f])
    out[si][w0:w0 + len(positions)] = preds[positions].tolist()
  return out
