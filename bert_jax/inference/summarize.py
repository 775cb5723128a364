"""Unsupervised extractive summarization from any model: split, embed, pick sentences.

Why this shape: with no trained summary head, the only signal is where each
sentence's vector lies among the document's. Sentences are embedded with the
model's mean pooling, L2-normalised (`inference.Embedder(pre, pooling="mean",
normalize=True)`: cosines are dot products), all documents' sentences in one
`embed` call so that batches stay full. Three ways to choose:
- `centroid`: the sentences closest (cosine) to the document's mean vector: the
  most "typical" ones (Radev et al. 2004's centroid summarizer, on BERT vectors).
- `cluster`: k-means with k = the summary length, then the sentence nearest each
  cluster centre (bert-extractive-summarizer's method, Miller 2019): one
  sentence per topic. The k-means is written here (k-means++ seeding from a
  seeded numpy generator, then Lloyd iterations) so that results are
  deterministic and need no scikit-learn.
- `mmr`: maximal marginal relevance (Carbonell & Goldstein 1998) against the
  centroid: repeatedly the sentence maximising
  lambda * cos(s, centroid) - (1 - lambda) * max cos(s, already chosen);
  lambda 0.7 by default trades relevance for less redundancy.
The chosen sentences come back in document order, each with its score (the
cosine to the centroid, to its cluster centre, or its MMR value when chosen).

Sentences come from `bert_jax.data.sentences.split_sentences` (shared with the
supervised summary head's data).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from bert_jax import inference
from bert_jax.data.sentences import PARAGRAPH, split_sentences
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained

METHODS = ("centroid", "cluster", "mmr")
# Squared distances this close count as equal (float32 vectors differ by ~1e-7 across kernels).
_TIE = 1e-6
DEFAULT_SENTENCES = 3

# --- Selection on unit vectors. ---

def summary_length(num_sentences: Optional[int], ratio: Optional[float], available: int) -> int:
  """Sentences wanted: `num_sentences`, or max(1, round(ratio * available)), or 3."""
  if num_sentences is not None and ratio is not None:
    raise UserError("give --num_sentences or --ratio, not both")
  if num_sentences is not None:
    if num_sentences < 1:
      raise UserError(f"--num_sentences={num_sentences}: must be >= 1")
    return num_sentences
  if ratio is not None:
    if not 0.0 < ratio <= 1.0:
      raise UserError(f"--ratio={ratio}: must be in (0, 1]")
    return max(1, int(round(ratio * available)))
  return DEFAULT_SENTENCES


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)


def select_centroid(vectors_NxE: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices, scores): the k sentences of highest cosine to the mean vector (ties: earlier)."""
  unit_NxE = _unit(vectors_NxE)
  scores_N = unit_NxE @ _unit(unit_NxE.mean(axis=0))
  chosen = np.argsort(-scores_N, kind="stable")[:k]
  return chosen, scores_N[chosen]


def select_mmr(vectors_NxE: np.ndarray, k: int, mmr_lambda: float = 0.7
               ) -> tuple[np.ndarray, np.ndarray]:
  """(indices, scores) in the order chosen: maximal marginal relevance against the centroid."""
  if not 0.0 <= mmr_lambda <= 1.0:
    raise UserError(f"--mmr_lambda={mmr_lambda}: must be in [0, 1]")
  unit_NxE = _unit(vectors_NxE)
  relevance_N = unit_NxE @ _unit(unit_NxE.mean(axis=0))
  similar_NxN = unit_NxE @ unit_NxE.T
  chosen, scores = [], []
  redundancy_N = np.zeros(len(unit_NxE))
  for _ in range(min(k, len(unit_NxE))):
    mmr_N = mmr_lambda * relevance_N - (1.0 - mmr_lambda) * redundancy_N
    mmr_N[chosen] = -np.inf
    best = int(np.argmax(mmr_N))
    chosen.append(best)
    scores.append(float(mmr_N[best]))
    redundancy_N = np.maximum(redundancy_N, similar_NxN[best])
  return np.asarray(chosen, np.int64), np.asarray(scores)


def kmeans_plus_plus(x_NxE: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): [k, E] initial centres, seeded."""
  x_NxE = np.asarray(x_NxE, np.float64)
  rng = np.random.default_rng(seed)
  centres = [x_NxE[rng.integers(len(x_NxE))]]
  closest_N = ((x_NxE - centres[0]) ** 2).sum(-1)
  for _ in range(1, k):
    total = closest_N.sum()
    if total <= 0:  # fewer distinct points than k: repeat the first
      centres.append(centres[0])
      continue
    pick = int(np.searchsorted(np.cumsum(closest_N), rng.random() * total, side="right"))
    centres.append(x_NxE[min(pick, len(x_NxE) - 1)])
    closest_N = np.minimum(closest_N, ((x_NxE - centres[-1]) ** 2).sum(-1))
  return np.stack(centres)


def kmeans(x_NxE: np.ndarray, k: int, *, seed: int = 0, init: Optional[np.ndarray] = None,
           max_iter: int = 300, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
  """Lloyd's k-means: (centres [k, E], labels [N]).

  Stops when the labels stop changing or the centres move (squared) less than
  `tol` times the mean per-feature variance, scikit-learn's rule. An empty
  cluster takes the point farthest from its current centre.
  """
  x_NxE = np.asarray(x_NxE, np.float64)
  if not 1 <= k <= len(x_NxE):
    raise UserError(f"k-means: k={k} needs 1..{len(x_NxE)} points")
  centres_KxE = (kmeans_plus_plus(x_NxE, k, seed) if init is None
                 else np.array(init, np.float64, copy=True))
  threshold = tol * float(np.mean(np.var(x_NxE, axis=0)))
  labels_N = None
  for _ in range(max_iter):
    distances_NxK = ((x_NxE[:, None, :] - centres_KxE[None]) ** 2).sum(-1)
    new_labels_N = np.argmin(distances_NxK, axis=1)
    new_KxE = centres_KxE.copy()
    for c in range(k):
      members = new_labels_N == c
      if members.any():
        new_KxE[c] = x_NxE[members].mean(axis=0)
      else:
        far = int(np.argmax(distances_NxK[np.arange(len(x_NxE)), new_labels_N]))
        new_KxE[c] = x_NxE[far]
    shift = float(((new_KxE - centres_KxE) ** 2).sum())
    unchanged = labels_N is not None and np.array_equal(labels_N, new_labels_N)
    centres_KxE, labels_N = new_KxE, new_labels_N
    if unchanged or shift <= threshold:
      break
  labels_N = np.argmin(((x_NxE[:, None, :] - centres_KxE[None]) ** 2).sum(-1), axis=1)
  return centres_KxE, labels_N


def select_cluster(vectors_NxE: np.ndarray, k: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(indices, scores): per k-means centre, the nearest sentence not taken yet (the earlier one
  within `_TIE` of a tie); score = its cosine to that centre."""
  unit_NxE = _unit(vectors_NxE)
  k = min(k, len(unit_NxE))
  centres_KxE, _ = kmeans(unit_NxE, k, seed=seed)
  chosen, scores = [], []
  for centre_E in centres_KxE:
    distances_N = ((unit_NxE - centre_E) ** 2).sum(-1)
    distances_N[chosen] = np.inf
    # A two-sentence cluster's centre is equidistant from both: float noise must not decide.
    best = int(np.flatnonzero(distances_N <= distances_N.min() + _TIE)[0])
    chosen.append(best)
    scores.append(float(unit_NxE[best] @ _unit(centre_E)))
  return np.asarray(chosen, np.int64), np.asarray(scores)


# --- Documents. ---

@dataclasses.dataclass
class Summary:
  sentences: list[dict]  # {"index", "text", "score"}, in document order
  note: Optional[str] = None  # e.g. fewer sentences than asked for

  def to_json(self) -> dict:
    return {"summary": " ".join(s["text"] for s in self.sentences), "sentences": self.sentences}


def choose(vectors_NxE: np.ndarray, k: int, method: str, *, mmr_lambda: float = 0.7,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(indices, scores) in document order for one document's sentence vectors."""
  if method == "centroid":
    chosen, scores = select_centroid(vectors_NxE, k)
  elif method == "cluster":
    chosen, scores = select_cluster(vectors_NxE, k, seed)
  elif method == "mmr":
    chosen, scores = select_mmr(vectors_NxE, k, mmr_lambda)
  else:
    raise UserError(f"--method={method!r}: expected one of {list(METHODS)}")
  order = np.argsort(chosen, kind="stable")
  return chosen[order], scores[order]


class Summarizer:
  """Documents -> extractive summaries, with one Embedder (one set of compiled shapes)."""

  def __init__(self, pre: Pretrained, method: str = "centroid", *,
               num_sentences: Optional[int] = None, ratio: Optional[float] = None,
               mmr_lambda: float = 0.7, seed: int = 0, max_seq_length: Optional[int] = None):
    if method not in METHODS:
      raise UserError(f"--method={method!r}: expected one of {list(METHODS)}")
    summary_length(num_sentences, ratio, 1)  # validates the pair up front
    if not 0.0 <= mmr_lambda <= 1.0:
      raise UserError(f"--mmr_lambda={mmr_lambda}: must be in [0, 1]")
    self.method, self.num_sentences, self.ratio = method, num_sentences, ratio
    self.mmr_lambda, self.seed = mmr_lambda, seed
    self.embedder = inference.Embedder(pre, pooling="mean", normalize=True,
                                       max_seq_length=max_seq_length)

  def summarize(self, documents: Sequence[str], names: Optional[Sequence[str]] = None
                ) -> list[Summary]:
    """One Summary per document; an empty document is a UserError naming it."""
    names = list(names) if names is not None else [f"document {i + 1}"
                                                   for i in range(len(documents))]
    if not documents:
      raise UserError("no documents to summarize")
    split = [split_sentences(d) for d in documents]
    for name, sentences in zip(names, split):
      if not sentences:
        raise UserError(f"{name} is empty: nothing to summarize")
    flat = [s for sentences in split for s in sentences]
    vectors_SxE = self.embedder.embed(flat)
    out, at = [], 0
    for name, sentences in zip(names, split):
      vectors_NxE = vectors_SxE[at:at + len(sentences)]
      at += len(sentences)
      k = summary_length(self.num_sentences, self.ratio, len(sentences))
      note = None
      if k > len(sentences):
        note = (f"{name} has {len(sentences)} sentence{'s' * (len(sentences) != 1)}, fewer "
                f"than the {k} asked for: returning all of them")
        k = len(sentences)
      chosen, scores = choose(vectors_NxE, k, self.method, mmr_lambda=self.mmr_lambda,
                              seed=self.seed)
      out.append(Summary([{"index": int(i), "text": sentences[i], "score": float(s)}
                          for i, s in zip(chosen, scores)], note))
    return out


def read_documents(path: str, per_document: bool) -> tuple[list[str], list[str]]:
  """(documents, names) of a UTF-8 file: JSONL (`*.jsonl`, one document a line, field
  `text`) or plain text (one document, or blank-line-separated ones with `per_document`)."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as exc:
    line = raw.count(b"\n", 0, exc.start) + 1
    raise UserError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                    f"{exc.start})") from None
  if path.lower().endswith(".jsonl"):
    from bert_jax import files  # pylint: disable=g-import-not-at-top
    documents, names = [], []
    for number, row in files.jsonl_objects(text.splitlines(), path):
      if not isinstance(row.get("text"), str):
        raise UserError(f"{path}:{number}: expected a string field 'text'")
      documents.append(row["text"])
      names.append(f"{path}:{number}")
    if not documents:
      raise UserError(f"{path} has no documents")
    return documents, names
  return split_documents(text, per_document, path)


def split_documents(text: str, per_document: bool, name: str) -> tuple[list[str], list[str]]:
  """Plain text as one document, or (per_document) one per blank-line-separated block."""
  if not per_document:
    return [text], [name]
  blocks = [b.strip() for b in PARAGRAPH.split(text) if b.strip()]
  if not blocks:
    raise UserError(f"{name} is empty: nothing to summarize")
  return blocks, [f"{name} document {i + 1}" for i in range(len(blocks))]
