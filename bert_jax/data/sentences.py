"""Sentence splitting for summarization, shared by the unsupervised summarizer
(`bert_jax/inference/summarize.py`) and the supervised summary head's data
(`bert_jax/data/readers/summaries.py`); it lives in `data/` so that the data
layer never imports from inference.

Blank lines always end a sentence; inside a paragraph a sentence ends at '.', '!' or '?'
(and closing quotes or brackets) followed by whitespace and a capital letter, a quote, a
bracket or a digit, except after common abbreviations ("Mr.", "Dr.", "e.g.", ...),
single initials ("J.") and dotted ones ("U.S."; so "... in the U.S. The next ..." stays
one sentence).
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al fig no vol pp ed eds gen col lt sgt capt "
    "gov sen rep rev jan feb mar apr jun jul aug sep sept oct nov dec inc ltd co corp dept univ "
    "approx est".split())
# A candidate end: terminal punctuation, optional closing quotes/brackets, whitespace, then
# the start of a new sentence (looked at, not consumed).
_END = re.compile(r"""[.!?]+['"’”)\]]*(?=\s+['"‘“(\[]?[A-Z0-9])""")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # "U.S", "p.m" before the final '.'
PARAGRAPH = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")  # a blank line: a paragraph break


def split_sentences(text: str) -> list[str]:
  """Sentences of `text` (see the module docstring), whitespace-normalised, in order."""
  sentences = []
  for paragraph in PARAGRAPH.split(text):
    start = 0
    for match in _END.finditer(paragraph):
      if match.group().startswith(".") and _is_abbreviation(paragraph[start:match.start()]):
        continue
      sentences.append(paragraph[start:match.end()])
      start = match.end()
    sentences.append(paragraph[start:])
  return [s for s in (" ".join(s.split()) for s in sentences) if s]


def _is_abbreviation(before: str) -> bool:
  words = before.split()
  if not words:
    return False
  word = words[-1].lstrip("(['\"‘“")
  return (len(word) == 1 and word.isalpha()) or word.lower() in _ABBREVIATIONS or bool(
      _DOTTED.fullmatch(word))
