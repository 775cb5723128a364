"""Extractive QA data: SQuAD v1.1/v2.0 JSON files and tfds `squad` -> windowed features.

Why this shape (BERT's SQuAD recipe): a row is [CLS] question [SEP] context
window [SEP]. The question keeps at most `max_query_length` pieces (longer ones
are truncated and counted); a context longer than the rest of the row is cut
into windows that start every `doc_stride` pieces, so every context piece is in
some window. A training row's start/end positions are the pieces that cover
the answer's characters, or [CLS] (0, 0) when the window does not contain the
whole answer or the question has none (v2.0). Rows keep, for each position,
the character span of the piece in the original context (-1 outside the
context) and whether the window is the piece's "max context" window (the one
where it has the most text on both sides), so answers are read back as
character spans of the original text.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

from absl import logging
import numpy as np

from bert_jax.data import finetune_pipeline
from bert_jax.data.readers import tfds_source
from bert_jax.errors import UserError


@dataclasses.dataclass
class QAExample:
  qid: str
  question: str
  context: str
  answers: list[tuple[str, int]]  # (text, answer_start); empty = no answer (v2.0)
  is_impossible: bool = False


@dataclasses.dataclass
class ReadStats:
  questions: int = 0
  impossible: int = 0
  misaligned_answers: int = 0  # answer text not found at answer_start (skipped for training)


def _check_answers(example: QAExample, stats: ReadStats, source: str) -> list[tuple[str, int]]:
  """The answers whose text is at their answer_start (others are counted)."""
  good = []
  for text, start in example.answers:
    if 0 <= start and example.context[start:start + len(text)] == text and text:
      good.append((text, start))
    else:
      stats.misaligned_answers += 1
      if stats.misaligned_answers <= 3:
        logging.warning("%s: question %s: answer %r is not at answer_start=%d of its context",
                        source, example.qid, text, start)
  return good


def read_squad_json(path: str) -> tuple[list[QAExample], ReadStats]:
  """Questions of a SQuAD v1.1/v2.0 JSON file (`data` -> `paragraphs` -> `qas`)."""
  try:
    with open(path, "rb") as f:
      doc = json.loads(f.read().decode("utf-8"))
  except UnicodeDecodeError:
    raise UserError(f"{path}: not UTF-8 text") from None
  except json.JSONDecodeError as exc:
    raise UserError(f"{path} is not valid JSON: {exc}") from None
  if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
    raise UserError(f"{path}: expected a SQuAD JSON object with a 'data' list")
  examples, stats = [], ReadStats()
  for a, article in enumerate(doc["data"]):
    for p, paragraph in enumerate(article.get("paragraphs", [])):
      try:
        context = paragraph["context"]
        for q, qa in enumerate(paragraph["qas"]):
          answers = [(ans["text"], int(ans["answer_start"])) for ans in qa.get("answers", [])]
          examples.append(QAExample(str(qa.get("id", f"{a}-{p}-{q}")), qa["question"], context,
                                    answers, bool(qa.get("is_impossible", False))))
      except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: data[{a}].paragraphs[{p}] is not a SQuAD paragraph "
                        f"(context, qas with question/answers): {exc!r}") from None
  if not examples:
    raise UserError(f"{path} has no questions")
  return examples, stats


def read_squad_tfds(name: str, split: str, data_dir: Optional[str] = None
                    ) -> tuple[list[QAExample], ReadStats]:
  """Questions of tfds `squad/v1.1` or `squad/v2.0` (via `tfds.data_source`, no TensorFlow)."""
  source = tfds_source.open_source(name, split, data_dir)
  text = tfds_source.text

  examples = []
  for i in range(len(source)):
    ex = source[i]
    answers = [(text(t), int(s)) for t, s in zip(ex["answers"]["text"],
                                                 ex["answers"]["answer_start"])]
    examples.append(QAExample(text(ex["id"]), text(ex["question"]), text(ex["context"]),
                              answers, bool(ex.get("is_impossible", False))))
  return examples, ReadStats()


def check_examples(examples: Sequence[QAExample], stats: ReadStats, source: str,
                   training: bool) -> list[QAExample]:
  """Counts misaligned answers; for training, keeps only examples whose answers line up.

  For evaluation every example stays (the official score reads answer texts only).
  """
  kept = []
  for ex in examples:
    stats.questions += 1
    good = _check_answers(ex, stats, source)
    if not ex.answers or ex.is_impossible:
      stats.impossible += 1
      kept.append(dataclasses.replace(ex, answers=[] if training else ex.answers,
                                      is_impossible=True))
    elif good:
      kept.append(dataclasses.replace(ex, answers=good) if training else ex)
    elif not training:
      kept.append(ex)
  answerable = sum(1 for ex in examples if ex.answers and not ex.is_impossible)
  if training and answerable and not any(ex.answers for ex in kept):
    raise UserError(f"{source}: none of the {answerable} answerable question(s) has an answer at "
                    "its answer_start (the answer text must start there in the context): "
                    "nothing left to train on but the unanswerable ones")
  if stats.misaligned_answers:
    logging.warning("%s: %d answer(s) not at their answer_start%s", source,
                    stats.misaligned_answers,
                    f"; {len(examples) - len(kept)} question(s) without a usable answer skipped "
                    "for training" if training else " (scored by text only)")
  return kept


@dataclasses.dataclass
class QAFeatures:
  """Rows of a QA set. Row i is window `window[i]` of example `example_index[i]`."""

  input_ids: list[np.ndarray]  # int32 [n_i]
  token_type_ids: list[np.ndarray]  # int32 [n_i]
  start_positions: np.ndarray  # int32 [F]; 0 = [CLS] (no answer in this window)
  end_positions: np.ndarray  # int32 [F]
  example_index: np.ndarray  # int64 [F]
  char_spans: list[np.ndarray]  # int32 [n_i, 2]: context chars of each piece, -1 outside
  max_context: list[np.ndarray]  # bool [n_i]: the piece's best window is this one
  truncated_questions: int = 0

  def __len__(self) -> int:
    return len(self.input_ids)

  def encoded(self, max_seq_length: int, offset: int = 0) -> finetune_pipeline.Encoded:
    """Rows padded to `max_seq_length` for the fine-tuning stream; `feature_index` (a row
    field) is the row number plus `offset`, unique over a task's evaluation sets."""
    seq = {k: np.zeros((len(self), max_seq_length), np.int32)
           for k in ("input_ids", "token_type_ids")}
    for i, (ids, types) in enumerate(zip(self.input_ids, self.token_type_ids)):
      seq["input_ids"][i, :len(ids)], seq["token_type_ids"][i, :len(ids)] = ids, types
    rows = {"start_positions": self.start_positions, "end_positions": self.end_positions,
            "feature_index": np.arange(offset, offset + len(self), dtype=np.int32)}
    return finetune_pipeline.Encoded(seq, rows, np.asarray([len(r) for r in self.input_ids],
                                                       np.int32))


def _windows(num_pieces: int, room: int, stride: int) -> list[tuple[int, int]]:
  """[start, end) piece ranges of length <= room, starting every `stride`, covering all."""
  spans, start = [], 0
  while True:
    end = min(start + room, num_pieces)
    spans.append((start, end))
    if end >= num_pieces:
      return spans
    start += min(stride, end - start)


def encode(examples: Sequence[QAExample], tokenizer, max_seq_length: int, doc_stride: int,
           max_query_length: int, source: str = "") -> QAFeatures:
  """Examples -> windowed rows (see the module docstring)."""
  if doc_stride < 1 or max_query_length < 1:
    raise UserError(f"doc_stride={doc_stride} and max_query_length={max_query_length} must be "
                    ">= 1")
  if max_seq_length - max_query_length - 3 < 1:
    raise UserError(f"max_seq_length={max_seq_length} leaves no room for the context after "
                    f"max_query_length={max_query_length}")
  contexts = list(dict.fromkeys(ex.context for ex in examples))
  context_rows = {}
  if contexts:
    enc = tokenizer.encode_batch(contexts, padding="none", return_offsets=True)
    for text, ids, offsets in zip(contexts, enc["input_ids"], enc["offsets"]):
      context_rows[text] = (np.asarray(ids[1:-1], np.int32),
                            np.asarray(offsets[1:-1], np.int32).reshape(-1, 2))
  questions = tokenizer.encode_plain([ex.question for ex in examples]) if examples else []
  out = QAFeatures([], [], [], [], [], [], [])
  starts, ends, ex_index = [], [], []
  for ei, (ex, q_ids) in enumerate(zip(examples, questions)):
    if len(q_ids) > max_query_length:
      out.truncated_questions += 1
      q_ids = q_ids[:max_query_length]
    c_ids, c_offsets = context_rows[ex.context]
    room = max_seq_length - len(q_ids) - 3
    windows = _windows(len(c_ids), room, doc_stride)
    best_window = _max_context_windows(windows, len(c_ids))
    # The answer's piece span in the whole context (first answer, as BERT trains).
    answer_span = None
    if ex.answers and not ex.is_impossible and len(c_ids):
      text, char_start = ex.answers[0]
      char_end = char_start + len(text)
      inside = np.nonzero((c_offsets[:, 1] > char_start) & (c_offsets[:, 0] < char_end))[0]
      if len(inside):
        answer_span = (int(inside[0]), int(inside[-1]))
    for wi, (a, b) in enumerate(windows):
      head = len(q_ids) + 2  # [CLS] q [SEP]
      ids = np.concatenate([[tokenizer.cls_id], q_ids, [tokenizer.sep_id], c_ids[a:b],
                            [tokenizer.sep_id]]).astype(np.int32)
      types = np.zeros(len(ids), np.int32)
      types[head:] = 1
      spans = np.full((len(ids), 2), -1, np.int32)
      spans[head:head + b - a] = c_offsets[a:b]
      best = np.zeros(len(ids), bool)
      best[head:head + b - a] = best_window[a:b] == wi
      start = end = 0
      if answer_span is not None and a <= answer_span[0] and answer_span[1] < b:
        start, end = answer_span[0] - a + head, answer_span[1] - a + head
      out.input_ids.append(ids)
      out.token_type_ids.append(types)
      out.char_spans.append(spans)
      out.max_context.append(best)
      starts.append(start)
      ends.append(end)
      ex_index.append(ei)
  out.start_positions = np.asarray(starts, np.int32)
  out.end_positions = np.asarray(ends, np.int32)
  out.example_index = np.asarray(ex_index, np.int64)
  if out.truncated_questions:
    logging.warning("%s: %d question(s) longer than max_query_length=%d pieces were truncated",
                    source or "QA data", out.truncated_questions, max_query_length)
  return out


def _max_context_windows(windows: list[tuple[int, int]], num_pieces: int) -> np.ndarray:
  """For each piece, the window that gives it the most context: BERT's score min(left,
  right) + 0.01 * window length, the first window winning ties."""
  piece = np.arange(num_pieces)
  scores = np.full((len(windows), num_pieces), -np.inf)
  for wi, (a, b) in enumerate(windows):
    inside = (piece >= a) & (piece < b)
    scores[wi, inside] = np.minimum(piece[inside] - a, b - 1 - piece[inside]) + 0.01 * (b - a)
  return np.argmax(scores, axis=0) if num_pieces else np.zeros(0, np.int64)
