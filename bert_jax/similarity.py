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
`normalize`, exactly as `launch/embed.py`.

Cosines are computed in float64 from the float32 vectors. The heatmap uses
matplotlib's Agg backend (no display needed); matplotlib is imported only when a
heatmap is drawn (`pip install matplotlib`, extra `plot`).
"""

from __future__ import annotations

import dataclasses
import io
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
  """One vector per word: embedding-table rows (mean over pieces) or contextual (see above)."""
  words = [w.strip() for w in words]
  pieces = _word_pieces(pre, words)
  notes = [f"{w} = {' '.join(pre.tokenizer.convert_ids_to_tokens(ids))} (mean of {ids.size} "
           "pieces)" for w, ids in zip(words, pieces) if ids.size > 1]
  if not contextual:
    table_VxE = np.asarray(pre.params["bert"]["embeddings"]["word_embeddings"]["embedding"],
                           np.float32)
    return Vectors(words, np.stack([table_VxE[ids].mean(0) for ids in pieces]), notes)
  out = inference.Embedder(pre, "token").embed(words)
  starts = np.concatenate([[0], np.cumsum(out.lengths)[:-1]])
  rows = [out.vectors[s + 1:s + n - 1].mean(0) for s, n in zip(starts, out.lengths)]
  return Vectors(words, np.stack(rows).astype(np.float32), notes)


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
  """A fixed-width table: one row and one column per label (long labels cut with '…')."""
  cut = [l if len(l) <= width else l[:width - 1] + "…" for l in labels]
  head = " " * width + " " + " ".join(f"{l:>{width}}" for l in cut)
  rows = [f"{l:<{width}} " + " ".join(f"{x:>{width}.4f}" for x in row) for l, row in zip(cut, matrix)]
  return "\n".join([head, *rows])


def save_heatmap(path: str, labels: Sequence[str], matrix: np.ndarray, title: str = "") -> None:
  """A PNG heatmap: labels on both axes, a colour bar, values in the cells up to 12 labels."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("--output=*.png needs matplotlib: pip install matplotlib") from None
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(labels)
  cut = 40 if n <= 12 else 28
  short = [l if len(l) <= cut else l[:cut - 1] + "…" for l in labels]
  side = min(max(5.0, 0.35 * n + 2.5), 18.0)
  font = 10 if n <= 12 else 8 if n <= 30 else 6
  fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
  image = ax.imshow(matrix, cmap="viridis", vmin=float(np.min(matrix)), vmax=1.0)
  ax.set_xticks(range(n), labels=short, rotation=60, ha="right", rotation_mode="anchor",
                fontsize=font)
  ax.set_yticks(range(n), labels=short, fontsize=font)
  if n <= 12:
    threshold = (image.norm.vmin + image.norm.vmax) / 2
    for i in range(n):
      for j in range(n):
        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=font - 1,
                color="black" if matrix[i, j] > threshold else "white")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
  if title:
    ax.set_title(title, fontsize=11)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  files.write_file_atomically(path, lambda f: f.write(buffer.getvalue()))
