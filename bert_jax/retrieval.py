"""Dense retrieval: embed a corpus once into an index dir, answer queries with the nearest vectors.

Why the index is a directory of plain files: `vectors.npy` (float32, or float16
to halve the size) is memory-mapped at load, so a large index costs no parse time
and search reads it block by block; `items.jsonl` holds each row's `id` and
`text`; `index.json` records the model path, a fingerprint of its weights and
vocabulary, and the pooling settings, so queries are always embedded exactly as
the corpus was, and an index searched with another model or pooling is refused
with the setting named.

Why chunks and a staging dir: embedding a large corpus takes hours. The build
writes one `chunk-NNNNN.npy` per `chunk_lines` lines into `OUTPUT.partial/` (each
written atomically) and only at the end assembles the index in a temporary
sibling and renames it into place. A rerun after an interruption skips the chunks
already there. The same staging dir is the multi-host protocol: chunk k belongs to
process k % process_count, each process writes its chunks and a `done-P-of-N`
marker into the (shared) staging dir, process 0 waits for every marker and
finalises. Within a process, batches are sharded over `jax.local_devices()`.

Why exact search in numpy blocks: one query block times one corpus block is a
BLAS matmul; a running top-k is merged after each block, so memory stays at
query_block x corpus_block scores, never queries x corpus. Scores are inner
products, which is cosine similarity when the index was built with `normalize`.

ANN (`ann=True`): faiss-cpu's HNSW graph (`IndexHNSWFlat`, inner-product
metric). Both faiss-cpu (1.15.1) and usearch (2.26.6) install as wheels from PyPI
here; faiss was chosen because its `IndexFlatIP` is also the peer the exact
search is benchmarked against (one optional dependency instead of two), it is
the most widely used library for this job, and its HNSW takes float32 vectors
and the inner-product metric directly. Recall@10 against exact search is
measured by `recall_at_k` (tests, bench/search_vs_faiss.py). faiss is imported
only when an ANN graph is built or searched (`pip install faiss-cpu`, extra `ann`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from bert_jax import files
from bert_jax import inference
from bert_jax import progress as progress_lib
from bert_jax.errors import UserError

INDEX_FILE, VECTORS_FILE, ITEMS_FILE, ANN_FILE = "index.json", "vectors.npy", "items.jsonl", "ann.faiss"
FORMAT_VERSION = 1
SETTINGS = ("pooling", "normalize", "layer", "max_seq_length")


# --- Corpus and model identity. ---

def read_corpus(paths: Sequence[str]) -> tuple[list[Any], list[str]]:
  """(ids, texts) of text files (one text a line) and `.jsonl` files (`text`, optional `id`).

  A row without an id gets its 0-based position in the whole corpus.
  """
  ids, texts = [], []
  for path in paths:
    if path.endswith(".jsonl"):
      for number, row in files.jsonl_objects(files.read_lines(path), path):
        if not isinstance(row.get("text"), str):
          raise UserError(f"{path}:{number}: expected a JSON object with a string 'text'")
        ids.append(row.get("id", len(texts)))
        texts.append(row["text"])
    else:
      for line in files.read_lines(path):
        ids.append(len(texts))
        texts.append(line)
  return ids, texts


def model_fingerprint(pre) -> str:
  """sha256 (16 hex) of the encoder weights, config and vocabulary: 'same model' means this."""
  import jax  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(repr(pre.config).encode())
  tree = {k: v for k, v in pre.params["bert"].items() if k != "pooler"}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(leaf, np.float32).tobytes())
  if pre.tokenizer is not None:
    digest.update("\n".join(pre.tokenizer.convert_ids_to_tokens(range(pre.tokenizer.vocab_size)))
                  .encode())
  return digest.hexdigest()[:16]


def _describe(settings: dict) -> str:
  flags = [f"--model={settings['model']}", f"--pooling={settings['pooling']}",
           f"--layer={settings['layer']}"]
  if settings["normalize"]:
    flags.append("--normalize")
  if settings["max_seq_length"] is not None:
    flags.append(f"--max_seq_length={settings['max_seq_length']}")
  return " ".join(flags)


# --- Building. ---

@dataclasses.dataclass(frozen=True)
class IndexOptions:
  """How an index is built (`launch/build_index.py` flags of the same names)."""

  # Pooling, L2 normalisation, hidden state and truncation, as `launch/embed.py`.
  pooling: str = "mean"
  normalize: bool = False
  layer: int = -1
  max_seq_length: Optional[int] = None
  # Store the vectors as float16 (search computes in float32).
  float16: bool = False
  # Also build a faiss HNSW graph (`ann_m` links per node) for `search(ann=True)`.
  ann: bool = False
  ann_m: int = 32
  # Lines per resumable chunk.
  chunk_lines: int = 10000
  # The Embedder's token budget per batch (None: per platform).
  tokens_per_batch: Optional[int] = None
  # Replace an existing index dir.
  overwrite: bool = False


def _wait_for(paths: list[str], timeout_s: float, what: str) -> None:
  deadline, said = time.monotonic() + timeout_s, False
  while not all(os.path.exists(p) for p in paths):
    if time.monotonic() > deadline:
      missing = [os.path.basename(p) for p in paths if not os.path.exists(p)]
      raise UserError(f"gave up waiting {timeout_s:.0f} s for {what}: missing {missing}")
    if not said:
      print(f"waiting for {what}", file=sys.stderr, flush=True)
      said = True
    time.sleep(0.5)


def _check_output(output: str, options: IndexOptions) -> None:
  """Everything about `output` that can be refused before any text is embedded."""
  files.check_output(output, "--output", kind="dir")
  if os.path.exists(output) and not options.overwrite:
    raise UserError(f"output dir {output} already exists (use --overwrite to replace it)")


def _open_staging(staging: str, manifest: dict, process_index: int, wait_timeout_s: float) -> None:
  """Creates (process 0) or joins the staging dir of this corpus and these settings."""
  manifest_path = os.path.join(staging, "manifest.json")
  if process_index == 0:
    if os.path.exists(manifest_path) and files.read_json(manifest_path) != manifest:
      print(f"{staging} holds chunks of another corpus or settings: starting over",
            file=sys.stderr, flush=True)
      shutil.rmtree(staging)
    os.makedirs(staging, exist_ok=True)
    if not os.path.exists(manifest_path):
      files.write_file_atomically(manifest_path, lambda f: f.write(json.dumps(manifest).encode()))
  else:
    _wait_for([manifest_path], wait_timeout_s, f"process 0 to create {manifest_path}")
    if files.read_json(manifest_path) != manifest:
      raise UserError(f"{manifest_path} does not match this process's corpus or settings")


def _embed_chunks(embedder, texts: list[str], staging: str, chunks: list[int], chunk_lines: int,
                  progress: bool, on_chunk: Optional[Callable[[int], None]]) -> None:
  """Embeds and saves each chunk of `chunks` (atomically, so a rerun can skip it)."""
  total = sum(len(texts[k * chunk_lines:(k + 1) * chunk_lines]) for k in chunks)
  report = progress_lib.Progress("embedded", "lines") if progress else None
  done_before = 0
  for k in chunks:
    chunk = texts[k * chunk_lines:(k + 1) * chunk_lines]
    step = (lambda d, _t, base=done_before: report(base + d, total)) if report else None
    vectors = embedder.embed(chunk, progress=step)
    files.write_file_atomically(_chunk_path(staging, k), lambda f, v=vectors: np.save(f, v))
    done_before += len(chunk)
    if on_chunk:
      on_chunk(k)


def _write_index(tmp: str, staging: str, meta: dict, ids: list, texts: list[str],
                 options: IndexOptions) -> None:
  """Fills `tmp` with the index files from the staged chunks."""
  num_chunks = -(-len(texts) // options.chunk_lines)
  out = np.lib.format.open_memmap(os.path.join(tmp, VECTORS_FILE), mode="w+",
                                  dtype=np.float16 if options.float16 else np.float32,
                                  shape=(len(texts), meta["dim"]))
  for k in range(num_chunks):
    part = np.load(_chunk_path(staging, k))
    out[k * options.chunk_lines:k * options.chunk_lines + len(part)] = part
  out.flush()
  with open(os.path.join(tmp, ITEMS_FILE), "w", encoding="utf-8") as f:
    for i, t in zip(ids, texts):
      f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
  if options.ann:
    _write_ann(os.path.join(tmp, ANN_FILE), np.asarray(out, np.float32), options.ann_m)
  with open(os.path.join(tmp, INDEX_FILE), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)


def build_index(model: str, inputs: str | Sequence[str], output: str,
                options: IndexOptions = IndexOptions(), *, progress: bool = True,
                process_index: Optional[int] = None, process_count: Optional[int] = None,
                wait_timeout_s: float = 86400.0,
                on_chunk: Optional[Callable[[int], None]] = None) -> Optional[str]:
  """Embeds every text of `inputs` into an index dir at `output` (see the module docstring).

  Args:
    model: any model path (`bert_jax.from_pretrained`).
    inputs: text files (one text a line) and/or `.jsonl` files (`text`, optional `id`);
      comma-separated lists and globs as everywhere.
    output: the index directory to create.
    options: pooling, storage, chunking (`IndexOptions`).
    progress: lines done, rate and ETA on stderr.
    process_index, process_count: this host's share (default: `jax.process_index()`,
      `jax.process_count()`); process 0 writes the index.
    wait_timeout_s: how long process 0 waits for the other processes' chunks.
    on_chunk: called with each chunk number after that chunk is saved (tests).

  Returns:
    `output` on the process that wrote it, None on the others.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  if options.chunk_lines < 1:
    raise UserError(f"--chunk_lines={options.chunk_lines}: must be >= 1")
  output = os.path.abspath(os.path.expanduser(output))
  _check_output(output, options)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  paths = files.expand_inputs(inputs)
  ids, texts = read_corpus(paths)
  if not texts:
    raise UserError(f"the corpus is empty: no text in {', '.join(paths)}")
  pre = convert.from_pretrained(model)
  embedder = inference.Embedder(pre, options.pooling, normalize=options.normalize,
                                layer=options.layer, max_seq_length=options.max_seq_length,
                                tokens_per_batch=options.tokens_per_batch,
                                devices=jax.local_devices())
  digest = hashlib.sha256()
  for i, t in zip(ids, texts):
    digest.update(json.dumps([i, t], ensure_ascii=False).encode() + b"\n")
  settings = {"model": os.path.abspath(os.path.expanduser(model)),
              "model_fingerprint": model_fingerprint(pre), "pooling": options.pooling,
              "normalize": options.normalize, "layer": options.layer,
              "max_seq_length": options.max_seq_length}
  manifest = dict(settings, count=len(texts), chunk_lines=options.chunk_lines,
                  corpus_sha256=digest.hexdigest())
  staging = output + ".partial"
  _open_staging(staging, manifest, process_index, wait_timeout_s)
  num_chunks = -(-len(texts) // options.chunk_lines)
  mine = [k for k in range(num_chunks) if k % process_count == process_index]
  todo = [k for k in mine if not os.path.exists(_chunk_path(staging, k))]
  _embed_chunks(embedder, texts, staging, todo, options.chunk_lines, progress, on_chunk)
  marker = os.path.join(staging, f"done-{process_index}-of-{process_count}")
  files.write_file_atomically(marker, lambda f: None)
  if process_index != 0:
    return None
  _wait_for([os.path.join(staging, f"done-{p}-of-{process_count}") for p in range(process_count)],
            wait_timeout_s, f"all {process_count} processes to finish their chunks")
  meta = dict(settings, format_version=FORMAT_VERSION, count=len(texts),
              dim=pre.config.hidden_size, dtype="float16" if options.float16 else "float32",
              metric="cosine" if options.normalize else "inner_product", inputs=paths,
              ann=options.ann)
  files.write_dir_atomically(
      output, lambda tmp: _write_index(tmp, staging, meta, ids, texts, options),
      overwrite=options.overwrite)
  shutil.rmtree(staging, ignore_errors=True)
  return output


def _chunk_path(staging: str, k: int) -> str:
  return os.path.join(staging, f"chunk-{k:05d}.npy")



# --- ANN (faiss). ---

def _faiss():
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("--ann needs faiss: pip install faiss-cpu") from None
  return faiss


def _write_ann(path: str, vectors_NxD: np.ndarray, m: int) -> None:
  _faiss().write_index(build_ann(vectors_NxD, m), path)


def build_ann(vectors_NxD: np.ndarray, m: int = 32, ef_construction: int = 200):
  """An in-memory faiss HNSW (inner product) over `vectors_NxD` (bench and tests)."""
  faiss = _faiss()
  graph = faiss.IndexHNSWFlat(vectors_NxD.shape[1], m, faiss.METRIC_INNER_PRODUCT)
  graph.hnsw.efConstruction = ef_construction
  graph.add(np.ascontiguousarray(vectors_NxD, np.float32))
  return graph


def ann_search(graph, queries_QxD: np.ndarray, top_k: int,
               ef_search: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """(scores [Q, k], rows [Q, k]) from a faiss HNSW graph; rows -1 where it found fewer."""
  graph.hnsw.efSearch = max(ef_search, top_k)
  scores, rows = graph.search(np.ascontiguousarray(queries_QxD, np.float32), top_k)
  return scores, rows


# --- Exact search. ---

def exact_search(corpus_NxD: np.ndarray, queries_QxD: np.ndarray, top_k: int,
                 query_block: int = 256,
                 corpus_block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k by inner product, block by block: (scores [Q, k] float32, rows [Q, k] int64).

  Ties are broken by the lower row. At most query_block x (corpus_block + k)
  scores are held at a time.
  """
  n = corpus_NxD.shape[0]
  k = min(top_k, n)
  queries_QxD = np.asarray(queries_QxD, np.float32)
  all_scores = np.empty((len(queries_QxD), k), np.float32)
  all_rows = np.empty((len(queries_QxD), k), np.int64)
  for q0 in range(0, len(queries_QxD), query_block):
    q_BxD = queries_QxD[q0:q0 + query_block]
    best_s = np.full((len(q_BxD), 0), -np.inf, np.float32)
    best_r = np.zeros((len(q_BxD), 0), np.int64)
    for c0 in range(0, n, corpus_block):
      block_CxD = np.asarray(corpus_NxD[c0:c0 + corpus_block], np.float32)
      s_BxC = q_BxD @ block_CxD.T
      if s_BxC.shape[1] > k:
        part = np.argpartition(-s_BxC, k - 1, axis=1)[:, :k]
        s_BxC = np.take_along_axis(s_BxC, part, 1)
        r_BxC = part + c0
      else:
        r_BxC = np.broadcast_to(np.arange(c0, c0 + s_BxC.shape[1]), s_BxC.shape)
      best_s = np.concatenate([best_s, s_BxC], 1)
      best_r = np.concatenate([best_r, r_BxC], 1)
      if best_s.shape[1] > k:
        order = np.lexsort((best_r, -best_s), axis=1)[:, :k]
        best_s = np.take_along_axis(best_s, order, 1)
        best_r = np.take_along_axis(best_r, order, 1)
    order = np.lexsort((best_r, -best_s), axis=1)
    all_scores[q0:q0 + len(q_BxD)] = np.take_along_axis(best_s, order, 1)
    all_rows[q0:q0 + len(q_BxD)] = np.take_along_axis(best_r, order, 1)
  return all_scores, all_rows


def recall_at_k(exact_rows_QxK: np.ndarray, approx_rows_QxK: np.ndarray) -> float:
  """Mean fraction of each query's exact top-k that the approximate top-k found."""
  k = exact_rows_QxK.shape[1]
  hits = [len(set(e.tolist()) & set(a.tolist())) for e, a in zip(exact_rows_QxK, approx_rows_QxK)]
  return float(np.mean(hits) / k) if hits else 0.0


# --- Loading and searching. ---

@dataclasses.dataclass
class Index:
  """A loaded index dir: `Index.load(dir).search(["a query"], top_k=10)`."""

  directory: str
  meta: dict
  vectors: np.ndarray  # [N, D] float32 or float16, memory-mapped
  ids: list
  texts: list[str]
  _embedder: Optional[inference.Embedder] = None
  _ann: Any = None

  @classmethod
  def load(cls, directory: str) -> "Index":
    directory = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isdir(directory):
      partial = " (a build was interrupted: rerun build_index)" if os.path.isdir(
          directory + ".partial") else ""
      raise UserError(f"index dir {directory} does not exist{partial}")
    meta_path = os.path.join(directory, INDEX_FILE)
    if not os.path.isfile(meta_path):
      raise UserError(f"{directory} is not an index dir (no {INDEX_FILE})")
    meta = files.read_json(meta_path)
    if meta.get("format_version") != FORMAT_VERSION:
      raise UserError(f"{meta_path}: unknown index format_version {meta.get('format_version')}")
    try:
      vectors = np.load(os.path.join(directory, VECTORS_FILE), mmap_mode="r")
    except (OSError, ValueError) as exc:
      raise UserError(f"{os.path.join(directory, VECTORS_FILE)}: cannot read vectors ({exc})") from None
    ids, texts = [], []
    with open(os.path.join(directory, ITEMS_FILE), encoding="utf-8") as f:
      for line in f:
        row = json.loads(line)
        ids.append(row["id"])
        texts.append(row["text"])
    if vectors.shape != (meta["count"], meta["dim"]) or len(texts) != meta["count"]:
      raise UserError(f"index {directory} is inconsistent: {vectors.shape} vectors, {len(texts)} "
                      f"items, {meta['count']} expected")
    return cls(directory, meta, vectors, ids, texts)

  def __len__(self) -> int:
    return len(self.texts)

  def check_settings(self, model: Optional[str] = None, **settings) -> None:
    """Refuses a model or settings other than the index was built with, naming them.

    Args:
      model: a model path; the same weights and vocabulary (by fingerprint, so a
        converted copy passes) are required.
      **settings: any of pooling, normalize, layer, max_seq_length (None = unchecked).
    """
    built = _describe(self.meta)
    for key, value in settings.items():
      if key not in SETTINGS:
        raise TypeError(f"unknown setting {key}")
      if value is not None and value != self.meta[key]:
        raise UserError(f"index {self.directory} was built with {key}={self.meta[key]!r}, not "
                        f"{value!r} ({built}): queries must be embedded as the corpus was")
    if model is not None:
      self._load_embedder(model)

  def _load_embedder(self, model: Optional[str] = None) -> inference.Embedder:
    import jax  # pylint: disable=g-import-not-at-top
    from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
    path = model or self.meta["model"]
    if self._embedder is not None and model is None:
      return self._embedder
    if model is None and not os.path.exists(path):
      raise UserError(f"index {self.directory} needs its model {path} ('model' in {INDEX_FILE}), "
                      "which is missing: restore it, or pass --model=PATH of the same model "
                      "(checked by its weights)")
    pre = convert.from_pretrained(path)
    if model_fingerprint(pre) != self.meta["model_fingerprint"]:
      what = ("has changed since the index was built" if model is None else
              "is another model (weights or vocabulary differ)")
      raise UserError(f"model {path} {what}: index {self.directory} was built with "
                      f"{_describe(self.meta)}; rebuild the index or search with that model")
    self._embedder = inference.Embedder(
        pre, self.meta["pooling"], normalize=self.meta["normalize"], layer=self.meta["layer"],
        max_seq_length=self.meta["max_seq_length"], devices=jax.local_devices())
    return self._embedder

  def embed(self, queries: Sequence[str]) -> np.ndarray:
    """[Q, D] query vectors, embedded with the index's model and settings."""
    return self._load_embedder().embed(list(queries))

  def search(self, queries: str | Sequence[str] | np.ndarray, top_k: int = 10, *,
             ann: bool = False, ef_search: int = 128) -> list[list[dict]]:
    """Per query, its top-k as [{rank, score, id, text}] (rank from 1, best first).

    Args:
      queries: one text, texts, or already embedded query vectors [Q, D].
      top_k: hits per query; an index of fewer vectors returns all of them.
      ann: search the faiss HNSW graph built with `build_index(ann=True)`.
      ef_search: HNSW candidate list size (higher: better recall, slower).
    """
    if top_k < 1:
      raise UserError(f"--top_k={top_k}: must be >= 1")
    top_k = min(top_k, len(self))  # all there are (launch/search.py says so)
    if isinstance(queries, str):
      queries = [queries]
    if isinstance(queries, np.ndarray):
      vectors_QxD = np.asarray(queries, np.float32)
      if vectors_QxD.ndim != 2 or vectors_QxD.shape[1] != self.meta["dim"]:
        raise UserError(f"query vectors of shape {vectors_QxD.shape}: expected [Q, {self.meta['dim']}]")
    else:
      vectors_QxD = self.embed(queries)
    if ann:
      scores, rows = ann_search(self._load_ann(), vectors_QxD, top_k, ef_search)
    else:
      scores, rows = exact_search(self.vectors, vectors_QxD, top_k)
    return [[{"rank": r + 1, "score": float(s), "id": self.ids[i], "text": self.texts[i]}
             for r, (s, i) in enumerate(zip(row_s, row_i)) if i >= 0]
            for row_s, row_i in zip(scores, rows)]

  def _load_ann(self):
    if self._ann is None:
      path = os.path.join(self.directory, ANN_FILE)
      if not os.path.isfile(path):
        raise UserError(f"index {self.directory} has no ANN graph: build it with --ann")
      self._ann = _faiss().read_index(path)
    return self._ann
