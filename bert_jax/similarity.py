"""Cosine similarity of words and sentences, as a matrix, a table and a heatmap.

Why two kinds of word vector: the input word-embedding rows are what the
classic word-embedding notebooks compare (static, no context); a BERT word in
context is a different object. With `contextual=False` a word's vector is its
row of the input embedding table, or the mean of its pieces' rows when WordPiece
splits it (reported in `Vectors.notes`). With `contextual=True` each word is
encoded alone as a one-word sentence, `[CLS] word [SEP]`, and its vector is the
mean of its pieces' last-layer vectors ([CLS] and [SEP] left out): the closest
thing to a context-free contextual vector, and the same for every call.
Sentences use the Embedder's pooling (`cls`, `mean`, `max`), `layer` and
`normalize`, exactly as `launch/embed.py`. `in_context` compares one word in
several sentences ("bank" by a river and at a counter): each occurrence's
vector is the mean of its pieces' vectors from `layer` in its own sentence.

A word the vocabulary cannot spell (every piece `[UNK]`) has the `[UNK]` row as
its vector, so any two such words would show cosine 1.0: they are left out of
the matrix and named in `Vectors.left_out` (the launcher says so on stderr).

Cosines are computed in float64 from the float32 vectors. The heatmap uses
matplotlib's Agg backend (no display needed); matplotlib is imported only when a
heatmap is drawn (`pip install matplotlib`, extra `plot`).
"""

from __future__ import annotations

import dataclasses
import io
import re
import textwrap
from typing import Optional, Sequence

import numpy as np

from bert_jax import files
from bert_jax import inference
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained


@dataclasses.dataclass
class Vectors:
  labels: list[str]
  vectors: np.ndarray  # [N, E] float32
  notes: list[str]  # e.g. "apple = a ##p ##p ##l ##e (mean of 5 pieces)"
  left_out: list[str] = dataclasses.field(default_factory=list)  # words that are all [UNK]


def _word_pieces(pre: Pretrained, words: Sequence[str]) -> list[np.ndarray]:
  if not words:
    raise UserError("--words: no words given")
  pieces = pre.tokenizer.encode_plain(list(words))
  for word, ids in zip(words, pieces):
    if not ids.size:
      raise UserError(f"--words: {word!r} has no tokens (empty or only characters the "
                      "tokenizer drops)")
  return pieces


def word_vectors(pre: Pretrained, words: Sequence[str], contextual: bool = False) -> Vectors:
  """One vector per word: embedding-table rows (mean over pieces) or contextual (see above).

  Words whose pieces are all [UNK] are left out (`Vectors.left_out`); if no word is left,
  that is an error naming them.
  """
  words = [w.strip() for w in words]
  pieces = _word_pieces(pre, words)
  unk = pre.tokenizer.unk_id
  left_out = [w for w, ids in zip(words, pieces) if np.all(ids == unk)]
  kept = [(w, ids) for w, ids in zip(words, pieces) if not np.all(ids == unk)]
  if not kept:
    raise UserError(f"--words: none of {', '.join(words)} is in the model's vocabulary "
                    "(every piece is [UNK]): nothing to compare")
  words, pieces = [w for w, _ in kept], [ids for _, ids in kept]
  notes = [f"{w} = {' '.join(pre.tokenizer.convert_ids_to_tokens(ids))} (mean of {ids.size} "
           "pieces)" for w, ids in zip(words, pieces) if ids.size > 1]
  if not contextual:
    table_VxE = np.asarray(pre.params["bert"]["embeddings"]["word_embeddings"]["embedding"],
                           np.float32)
    return Vectors(words, np.stack([table_VxE[ids].mean(0) for ids in pieces]), notes, left_out)
  out = inference.Embedder(pre, "token").embed(words)
  starts = np.concatenate([[0], np.cumsum(out.lengths)[:-1]])
  rows = [out.vectors[s + 1:s + n - 1].mean(0) for s, n in zip(starts, out.lengths)]
  return Vectors(words, np.stack(rows).astype(np.float32), notes, left_out)


def parse_in_context(value: str) -> tuple[str, str]:
  """"SENTENCE::WORD" -> (sentence, word); the last '::' splits."""
  sentence, sep, word = value.rpartition("::")
  if not sep or not sentence.strip() or not word.strip():
    raise UserError(f"--in_context={value!r}: expected SENTENCE::WORD, e.g. "
                    "\"He sat by the bank of the river.::bank\"")
  return sentence, word.strip()


def _short(text: str, width: int = 28) -> str:
  """`text` cut to `width` characters with '…', at a word boundary when there is one."""
  if len(text) <= width:
    return text
  head = text[:width - 1]
  if " " in head.strip() and not text[width - 1].isspace():
    head = head.rsplit(" ", 1)[0]
  return head.rstrip() + "…"


def occurrence_vectors(pre: Pretrained, occurrences: Sequence[tuple[str, str]], *,
                       layer: int = -1, max_seq_length: Optional[int] = None) -> Vectors:
  """One vector per (sentence, word): the mean of the word's pieces in `layer` of its sentence.

  The word is found case-insensitively as a whole word (its first occurrence); one that
  does not occur (or lies past the truncation) is an error naming both.
  """
  if not occurrences:
    raise UserError("--in_context: no SENTENCE::WORD given")
  spans = []
  for sentence, word in occurrences:
    found = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", sentence, flags=re.IGNORECASE)
    if found is None:
      raise UserError(f"--in_context: the word {word!r} does not occur in {sentence!r}")
    spans.append(found.span())
  sentences = [sentence for sentence, _ in occurrences]
  embedder = inference.Embedder(pre, "token", layer=layer, max_seq_length=max_seq_length)
  out = embedder.embed(sentences)
  enc = pre.tokenizer.encode_batch(sentences, max_length=embedder.max_length, padding="none",
                                   return_offsets=True)
  starts = np.concatenate([[0], np.cumsum(out.lengths)[:-1]])
  vectors, labels, notes = [], [], []
  for (sentence, word), (begin, end), first, offsets, ids in zip(
      occurrences, spans, starts, enc["offsets"], enc["input_ids"]):
    pieces = [t for t, (a, b) in enumerate(offsets) if b > a and a < end and b > begin]
    if not pieces:
      raise UserError(f"--in_context: the word {word!r} in {_short(sentence, 60)!r} lies past "
                      f"the {embedder.max_length}-token limit")
    vectors.append(out.vectors[first + np.asarray(pieces)].mean(0))
    labels.append(f"{word} ({_short(sentence)})")
    if len(pieces) > 1:
      names = pre.tokenizer.convert_ids_to_tokens([ids[t] for t in pieces])
      notes.append(f"{word} = {' '.join(names)} (mean of {len(pieces)} pieces)")
  return Vectors(labels, np.stack(vectors).astype(np.float32), list(dict.fromkeys(notes)))


def sentence_vectors(pre: Pretrained, texts: Sequence[str], pooling: str = "mean", *,
                     layer: int = -1, normalize: bool = False,
                     max_seq_length: Optional[int] = None) -> Vectors:
  """One pooled vector per text, as launch/embed.py computes it."""
  if not texts:
    raise UserError("--sentences: no lines to compare")
  if pooling == "token":
    raise UserError("--pooling=token gives no sentence vector: use cls, mean or max")
  embedder = inference.Embedder(pre, pooling, normalize=normalize, layer=layer,
                                max_seq_length=max_seq_length)
  return Vectors(list(texts), embedder.embed(list(texts)), [])


def cosine_matrix(vectors_NxE: np.ndarray) -> np.ndarray:
  """[N, N] float64 cosine similarities (a zero vector has cosine 0 with everything)."""
  v = np.asarray(vectors_NxE, np.float64)
  norms = np.linalg.norm(v, axis=1, keepdims=True)
  unit = v / np.where(norms > 0, norms, 1.0)
  return unit @ unit.T


def format_table(labels: Sequence[str], matrix: np.ndarray, width: int = 12) -> str:
  """A fixed-width table, one row and one column per label.

  Labels longer than `width` would be cut past recognition in the column heads, so then
  rows are numbered (`#1 bank (He sat by…`, up to 40 characters) and columns are headed
  by those numbers.
  """
  if all(len(l) <= width for l in labels):
    row_labels, heads = list(labels), list(labels)
  else:
    row_labels = [_short(f"#{i} {l}", 40) for i, l in enumerate(labels, start=1)]
    heads = [f"#{i}" for i in range(1, len(labels) + 1)]
  rows_width = max([width] + [len(l) for l in row_labels])
  head = " " * rows_width + " " + " ".join(f"{h:>{width}}" for h in heads)
  rows = [f"{l:<{rows_width}} " + " ".join(f"{x:>{width}.4f}" for x in row)
          for l, row in zip(row_labels, matrix)]
  return "\n".join([head, *rows])


@dataclasses.dataclass(frozen=True)
class HeatmapLayout:
  """Sizes (inches, points) that make the matrix fill the figure and every text fit."""

  figsize: tuple[float, float]
  axes: tuple[float, float, float, float]  # matrix [left, bottom, width, height], fractions
  colorbar: tuple[float, float, float, float]
  label_font: float
  number_font: Optional[float]  # None: no numbers in the cells (too many labels)
  labels: list[str]  # cut to fit
  title: str  # wrapped to the figure width


def heatmap_layout(labels: Sequence[str], title: str = "") -> HeatmapLayout:
  """Cells of 0.25-1.6 inch, margins sized by the longest label, numbers up to 15 labels."""
  n = max(len(labels), 1)
  cell = min(1.6, max(0.25, 8.0 / n))
  if n * cell > 16.0:
    cell = 16.0 / n
  side = n * cell
  label_font = min(10.0, 0.7 * cell * 72)
  if n <= 15:  # room for two lines a label: long labels wrap instead of pushing the matrix
    short = ["\n".join(textwrap.wrap(l, 20, max_lines=2, placeholder="…")) or l for l in labels]
  else:
    short = [_short(l, 28) for l in labels]
  char_in = 0.6 * label_font / 72  # average glyph width of the default sans font
  longest = max([len(line) for l in short for line in l.split("\n")] + [1])
  label_in = longest * char_in + 0.15
  extra = 0.2 if any("\n" in l for l in short) else 0.0  # the second line
  left, bottom = label_in + extra + 0.1, label_in * 0.87 + extra + 0.25  # x labels at 60 degrees
  bar = 1.3  # colour bar and its label
  width = left + side + bar
  lines = textwrap.wrap(title, max(20, int(width * 72 / (0.6 * 11)))) if title else []
  top = 0.3 + 0.22 * len(lines)
  height = bottom + side + top
  number_font = None
  if n <= 15:  # "0.97" is ~2.4 em wide: keep it inside its cell with a margin
    number_font = min(10.0, 0.8 * cell * 72 / 2.4)
  return HeatmapLayout(
      figsize=(width, height), axes=(left / width, bottom / height, side / width, side / height),
      colorbar=((left + side + 0.15) / width, bottom / height, 0.2 / width, side / height),
      label_font=label_font, number_font=number_font, labels=short, title="\n".join(lines))


def draw_heatmap(labels: Sequence[str], matrix: np.ndarray, title: str = ""):
  """The heatmap as a matplotlib Figure (Agg), laid out by `heatmap_layout`."""
  try:
    from matplotlib import figure  # pylint: disable=g-import-not-at-top
    from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("--output=*.png needs matplotlib: pip install matplotlib") from None
  layout = heatmap_layout(labels, title)
  n = len(labels)
  fig = figure.Figure(figsize=layout.figsize, dpi=100)
  backend_agg.FigureCanvasAgg(fig)  # no pyplot, no display: nothing global is touched
  ax = fig.add_axes(layout.axes)
  image = ax.imshow(matrix, cmap="viridis", vmin=float(np.min(matrix)), vmax=1.0, aspect="auto")
  ax.set_xticks(range(n), labels=layout.labels, rotation=60, ha="right", rotation_mode="anchor",
                fontsize=layout.label_font)
  ax.set_yticks(range(n), labels=layout.labels, fontsize=layout.label_font)
  if layout.number_font is not None:
    threshold = (image.norm.vmin + image.norm.vmax) / 2
    for i in range(n):
      for j in range(n):
        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                fontsize=layout.number_font,
                color="black" if matrix[i, j] > threshold else "white")
  fig.colorbar(image, cax=fig.add_axes(layout.colorbar), label="cosine similarity")
  if layout.title:
    fig.suptitle(layout.title, fontsize=11, y=1 - 0.12 / layout.figsize[1], va="top")
  return fig


def save_heatmap(path: str, labels: Sequence[str], matrix: np.ndarray, title: str = "") -> None:
  """A PNG heatmap: labels on both axes, a colour bar, values in the cells up to 15 labels."""
  fig = draw_heatmap(labels, matrix, title)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  files.write_file_atomically(path, lambda f: f.write(buffer.getvalue()))
