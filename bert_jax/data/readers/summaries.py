"""Extractive-summary data (BertSum, Liu & Lapata 2019): articles, references, oracle labels.

Sources: local JSONL `{"article": str, "highlights" (or "summary"): str}` and
tfds `cnn_dailymail` (`article`, `highlights`, read through `tfds.data_source`,
no TensorFlow). Articles are split into sentences by
`bert_jax.data.sentences.split_sentences`; the reference is the highlights
with its lines joined by spaces.

Encoding is BertSum's: `[CLS] s1 [SEP] [CLS] s2 [SEP] ...` with segment ids
alternating 0/1 per sentence; the head scores each sentence's `[CLS]`. Long
articles are truncated as BertSum does, to the sentences that fit whole in
`max_seq_length` (a first sentence longer than a row is cut to fit so that
every article keeps one); `EncodeStats` counts them.

ROUGE lives here (not in the head) because the oracle labels need it and the
data layer imports nothing above it. It is rouge-score's (Google's
reimplementation of ROUGE-1.5.5) with its default tokenisation and no stemming:
lowercase, every run of characters outside [a-z0-9] is a space; ROUGE-N
F-measure from clipped n-gram counts, ROUGE-L from the longest common
subsequence of the whole token sequences (rouge-score's `rougeL`, not the
per-line `rougeLsum`). The oracle is BertSum's greedy one: repeatedly add the
sentence that most increases ROUGE-1 F + ROUGE-2 F of the selection against the
reference, at most 3, stopping when none increases it (BertSum scores n-gram
sets; counts are used here, like the evaluation).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Optional, Sequence

import numpy as np

from bert_jax import files
from bert_jax.data.sentences import split_sentences
from bert_jax.data.readers import tfds_source
from bert_jax.errors import UserError

ORACLE_SENTENCES = 3
_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")


@dataclasses.dataclass(frozen=True)
class SummaryExample:
  sentences: tuple[str, ...]  # the article's sentences, in order
  reference: Optional[str]  # the highlights (None when the input has none)


# --- ROUGE (rouge-score's, without stemming). ---

def rouge_tokens(text: str) -> list[str]:
  return _NON_ALPHANUM.sub(" ", text.lower()).split()


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f(overlap: float, predicted: int, wanted: int) -> float:
  p, r = overlap / max(predicted, 1), overlap / max(wanted, 1)
  return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rouge_n(target: Sequence[str], prediction: Sequence[str], n: int) -> float:
  t, p = _ngrams(target, n), _ngrams(prediction, n)
  overlap = sum(min(c, p[g]) for g, c in t.items())
  return _f(overlap, sum(p.values()), sum(t.values()))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
  row = [0] * (len(b) + 1)
  for x in a:
    prev_diag = 0
    for j, y in enumerate(b, 1):
      prev_diag, row[j] = row[j], (prev_diag + 1 if x == y else max(row[j], row[j - 1]))
  return row[-1]


def rouge_l(target: Sequence[str], prediction: Sequence[str]) -> float:
  if not target or not prediction:
    return 0.0
  return _f(_lcs(target, prediction), len(prediction), len(target))


def rouge(target: str, prediction: str) -> dict[str, float]:
  """{'rouge1', 'rouge2', 'rougeL'} F-measures of `prediction` against `target`."""
  t, p = rouge_tokens(target), rouge_tokens(prediction)
  return {"rouge1": rouge_n(t, p, 1), "rouge2": rouge_n(t, p, 2), "rougeL": rouge_l(t, p)}


def oracle(sentences: Sequence[str], reference: str, limit: int = ORACLE_SENTENCES) -> list[int]:
  """BertSum's greedy ROUGE oracle: sentence indices (sorted) whose selection scores best."""
  target = rouge_tokens(reference)
  tokens = [rouge_tokens(s) for s in sentences]
  chosen: list[int] = []
  best = 0.0
  while len(chosen) < limit:
    scores = {}
    for i in range(len(sentences)):
      if i in chosen:
        continue
      selection = [w for j in sorted(chosen + [i]) for w in tokens[j]]
      scores[i] = rouge_n(target, selection, 1) + rouge_n(target, selection, 2)
    if not scores:
      break
    i = max(scores, key=lambda k: (scores[k], -k))
    if scores[i] <= best:
      break
    chosen.append(i)
    best = scores[i]
  return sorted(chosen)


def trigrams(sentence: str) -> set:
  return set(_ngrams(rouge_tokens(sentence), 3))


def select(sentences: Sequence[str], scores: Sequence[float], k: int = ORACLE_SENTENCES,
           block_trigrams: bool = True) -> list[int]:
  """BertSum's selection: by score, skipping a sentence that shares a trigram with those
  already chosen (when `block_trigrams`), at most `k`; returned in document order."""
  chosen: list[int] = []
  seen: set = set()
  for i in sorted(range(len(sentences)), key=lambda j: (-float(scores[j]), j)):
    if len(chosen) >= k:
      break
    grams = trigrams(sentences[i])
    if block_trigrams and grams & seen:
      continue
    chosen.append(i)
    seen |= grams
  return sorted(chosen)


# --- Reading. ---

def _example(article, reference, where: str) -> SummaryExample:
  if not isinstance(article, str):
    raise UserError(f"{where}: expected a string 'article'")
  sentences = split_sentences(article)
  if not sentences:
    raise UserError(f"{where}: the article is empty")
  if reference is not None:
    if not isinstance(reference, str):
      raise UserError(f"{where}: 'highlights' (or 'summary') must be a string")
    reference = " ".join(reference.split())
  return SummaryExample(tuple(sentences), reference)


def read_jsonl(path: str, require_reference: bool = True) -> list[SummaryExample]:
  """Examples of a JSONL file of `{"article", "highlights" or "summary"}` (one-line errors)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(2, "No such data file", path)
  examples = []
  for number, row in files.jsonl_objects(files.read_lines(path), path):
    reference = row.get("highlights", row.get("summary"))
    if reference is None and require_reference:
      raise UserError(f"{path}:{number}: no 'highlights' (or 'summary'), the reference summary")
    examples.append(_example(row.get("article", row.get("text")), reference,
                             f"{path}:{number}"))
  if not examples:
    raise UserError(f"{path} has no examples")
  return examples


def read_tfds(name: str, split: str, data_dir: Optional[str] = None) -> list[SummaryExample]:
  """Articles of tfds `cnn_dailymail` (via `tfds.data_source`, no TensorFlow)."""
  source = tfds_source.open_source(name, split, data_dir)
  text = tfds_source.text

  examples = []
  for i in range(len(source)):
    ex = source[i]
    examples.append(_example(text(ex["article"]), text(ex["highlights"]), f"{name}:{split}[{i}]"))
  return examples


# --- Encoding. ---

@dataclasses.dataclass
class EncodeStats:
  articles: int = 0
  truncated: int = 0  # articles with sentences dropped (or a first sentence cut)
  dropped_sentences: int = 0


@dataclasses.dataclass
class Encoded:
  """N articles as BertSum rows: [N, L] ids/segments, [N, S] [CLS] positions."""

  input_ids: np.ndarray  # [N, L]
  token_type_ids: np.ndarray  # [N, L]
  lengths: np.ndarray  # [N]
  cls_positions: np.ndarray  # [N, S], 0 past an article's sentences
  num_sentences: np.ndarray  # [N] sentences kept (whole ones that fit)
  stats: EncodeStats

  def __len__(self) -> int:
    return len(self.lengths)

  def kept(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
    return [list(s[:int(n)]) for s, n in zip(sentences, self.num_sentences)]


def encode(tokenizer, sentences: Sequence[Sequence[str]], max_seq_length: int) -> Encoded:
  """BertSum rows of each article's `sentences` (see the module docstring)."""
  if max_seq_length < 3:
    raise UserError(f"max_seq_length={max_seq_length}: too short for one sentence")
  flat = [s for article in sentences for s in article]
  pieces = tokenizer.encode_plain(flat) if flat else []
  n = len(sentences)
  ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
  types = np.zeros((n, max_seq_length), np.int32)
  lengths = np.zeros(n, np.int32)
  counts = np.zeros(n, np.int32)
  positions: list[list[int]] = []
  stats = EncodeStats(articles=n)
  k = 0
  for a, article in enumerate(sentences):
    row, segs, cls, cut = [], [], [], False
    for s in range(len(article)):
      body = list(pieces[k + s])
      if len(row) + len(body) + 2 > max_seq_length:
        if s:
          break
        body, cut = body[:max_seq_length - 2], True  # a first sentence longer than a row
      cls.append(len(row))
      row += [tokenizer.cls_id, *body, tokenizer.sep_id]
      segs += [s % 2] * (len(body) + 2)
    kept = len(cls)
    stats.truncated += int(cut or kept < len(article))
    stats.dropped_sentences += len(article) - kept
    k += len(article)
    ids[a, :len(row)], types[a, :len(row)] = row, segs
    lengths[a], counts[a] = len(row), kept
    positions.append(cls)
  width = max([len(p) for p in positions] + [1])
  cls_positions = np.zeros((n, width), np.int32)
  for a, p in enumerate(positions):
    cls_positions[a, :len(p)] = p
  return Encoded(ids, types, lengths, cls_positions, counts, stats)
