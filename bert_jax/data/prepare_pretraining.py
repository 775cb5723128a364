"""Documents -> NSP sentence pairs or packed rows -> sharded ArrayRecord files.

Why it looks like this:
- Input is read as a stream of documents (lists of sentences), cut into chunks
  of about `chunk_bytes` of text in input order. Each chunk is tokenized and
  turned into examples by a worker with its own seed derived from (seed, split,
  chunk index), so the output does not depend on the number of workers, and
  `num_shards`/`shard_index` let each host of a pod prepare every N-th chunk.
- NSP mode follows the original `create_pretraining_data.py`: sentences fill
  segment A and B up to a target length (shorter with `short_seq_prob`), B is
  the true continuation half of the time and otherwise text from another
  document (the unused sentences are put back), the longer side is trimmed at a
  random end, and each document is used `dupe_factor` times with new splits.
  The random document comes from the same chunk (1 MB of text by default,
  hundreds to thousands of documents), which keeps workers independent.
- Packed mode fills each row with consecutive text, one [CLS] ... [SEP]
  sequence per document piece, so nearly no position is padding; the reader
  rebuilds position and packing ids from the [CLS] tokens.
- Masking is not done here: `bert_jax/data/masking.py` masks at read time.
- A record is a flat uint16 (or uint32 for vocabularies over 65,536) array:
  `[header, ids...]`, header = NSP label (0 = B follows A, 1 = random) or 0.
  This is 2 bytes per token and decodes a whole batch with one `frombuffer`.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Callable, Iterable, Optional, Sequence

from array_record.python.array_record_module import ArrayRecordWriter
import numpy as np

from bert_jax.errors import UserError
from bert_jax.data.text_corpus import ReadStats
from bert_jax.tokenization import load_tokenizer

MODES = ("nsp", "packed")
# One record per chunk for fast random reads; token ids barely compress per record.
_WRITER_OPTIONS = "group_size:1,uncompressed"
# A packed-row piece shorter than this many tokens is not started: pad instead.
MIN_PACKED_PIECE = 8


def chunk_seed(seed: int, split: str, chunk_index: int) -> int:
  """The deterministic seed of one chunk's example creation."""
  split_id = {"train": 0, "eval": 1}.get(split, 2)
  return int(np.random.SeedSequence([seed, split_id, chunk_index]).generate_state(1)[0])


# ----------------------------------------------------------------- NSP mode


def truncate_seq_pair(a: list, b: list, max_num_tokens: int, rng: random.Random) -> tuple:
  """Trims the longer of `a`/`b` at a random end until both fit (as original BERT)."""
  a0, a1, b0, b1 = 0, len(a), 0, len(b)
  while (a1 - a0) + (b1 - b0) > max_num_tokens:
    if a1 - a0 > b1 - b0:
      if rng.random() < 0.5:
        a0 += 1
      else:
        a1 -= 1
    elif rng.random() < 0.5:
      b0 += 1
    else:
      b1 -= 1
  return a[a0:a1], b[b0:b1]


def create_nsp_examples(documents: list[list[np.ndarray]], doc_index: int, *,
                        max_seq_length: int, short_seq_prob: float, rng: random.Random
                        ) -> list[tuple[int, np.ndarray, np.ndarray]]:
  """Sentence-pair examples from one document: a list of (is_random_next, a, b)."""
  document = documents[doc_index]
  max_num_tokens = max_seq_length - 3
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)
  examples = []
  current_chunk: list[np.ndarray] = []
  current_length = 0
  i = 0
  while i < len(document):
    segment = document[i]
    current_chunk.append(segment)
    current_length += len(segment)
    if i == len(document) - 1 or current_length >= target_seq_length:
      a_end = 1
      if len(current_chunk) >= 2:
        a_end = rng.randint(1, len(current_chunk) - 1)
      tokens_a = np.concatenate(current_chunk[:a_end])
      if len(current_chunk) == 1 or rng.random() < 0.5:
        is_random_next = 1
        target_b_length = target_seq_length - len(tokens_a)
        for _ in range(10):
          random_index = rng.randint(0, len(documents) - 1)
          if random_index != doc_index:
            break
        random_document = documents[random_index]
        random_start = rng.randint(0, len(random_document) - 1)
        pieces, n = [], 0
        for j in range(random_start, len(random_document)):
          pieces.append(random_document[j])
          n += len(random_document[j])
          if n >= target_b_length:
            break
        tokens_b = np.concatenate(pieces)
        # The sentences not used for A go back to be used by the next example.
        i -= len(current_chunk) - a_end
      else:
        is_random_next = 0
        tokens_b = np.concatenate(current_chunk[a_end:])
      tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
      examples.append((is_random_next, tokens_a, tokens_b))
      current_chunk, current_length = [], 0
    i += 1
  return examples


# -------------------------------------------------------------- packed mode


def pack_documents(documents: list[np.ndarray], *, max_seq_length: int, cls_id: int,
                   sep_id: int) -> list[np.ndarray]:
  """Fills rows of `max_seq_length` with consecutive text, [CLS] piece [SEP] per piece."""
  rows, row, space = [], [], max_seq_length

  def flush():
    nonlocal row, space
    if row:
      rows.append(np.concatenate(row))
    row, space = [], max_seq_length

  for tokens in documents:
    pos = 0
    while pos < len(tokens):
      if space - 2 < min(MIN_PACKED_PIECE, len(tokens) - pos):
        flush()
      take = min(len(tokens) - pos, space - 2)
      row += [np.array([cls_id], tokens.dtype), tokens[pos:pos + take],
              np.array([sep_id], tokens.dtype)]
      space -= take + 2
      pos += take
  flush()
  return rows


# ------------------------------------------------------------ record format


def id_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def encode_record(header: int, ids: np.ndarray, dtype: np.dtype) -> bytes:
  return np.concatenate([np.array([header], dtype), np.asarray(ids, dtype)]).tobytes()


def decode_records(records: Sequence[bytes], *, dtype: np.dtype, max_seq_length: int,
                   mode: str, pad_id: int, cls_id: int, sep_id: int) -> dict[str, np.ndarray]:
  """Decodes a batch of records into padded numpy arrays (see the batch contract)."""
  itemsize = np.dtype(dtype).itemsize
  batch, length = len(records), max_seq_length
  flat = np.frombuffer(b"".join(records), dtype)
  sizes_B = np.fromiter((len(r) for r in records), np.int64, batch) // itemsize
  starts_B = np.cumsum(sizes_B) - sizes_B
  header_B = flat[starts_B].astype(np.int32)
  num_tokens_B = sizes_B - 1
  if (num_tokens_B > length).any():
    raise ValueError(f"a record has {num_tokens_B.max()} tokens, more than max_seq_length={length}")
  pos_L = np.arange(length)
  real_BxL = pos_L[None, :] < num_tokens_B[:, None]
  ids_BxL = np.full((batch, length), pad_id, np.int32)
  ids_BxL[real_BxL] = np.delete(flat, starts_B)
  out = dict(input_ids=ids_BxL, attention_mask=real_BxL.astype(np.int32))
  if mode == "nsp":
    # Segment B starts after the first [SEP].
    first_sep_B = np.argmax(ids_BxL == sep_id, axis=1)
    out["token_type_ids"] = ((pos_L[None, :] > first_sep_B[:, None]) & real_BxL).astype(np.int32)
    out["next_sentence_labels"] = header_B
  else:
    is_cls_BxL = (ids_BxL == cls_id) & real_BxL
    out["token_type_ids"] = np.zeros((batch, length), np.int32)
    out["packing_ids"] = (np.cumsum(is_cls_BxL, axis=1) * real_BxL).astype(np.int32)
    start_BxL = np.maximum.accumulate(np.where(is_cls_BxL, pos_L[None, :], 0), axis=1)
    out["position_ids"] = ((pos_L[None, :] - start_BxL) * real_BxL).astype(np.int32)
  return out


# ------------------------------------------------------------- chunk worker


@dataclasses.dataclass
class ChunkResult:
  """The serialized examples of one chunk and its counts."""
  records: list[bytes]
  num_tokens: int
  num_segments: int


def tokenize_documents(tokenizer, documents: list[list[str]], special_ids: Sequence[int],
                       unk_id: int, max_piece: int) -> list[list[np.ndarray]]:
  """Encodes every sentence (batched), drops empty ones, splits over-long ones."""
  flat = [s for doc in documents for s in doc]
  encoded = tokenizer.encode_plain(flat) if flat else []
  lengths = np.fromiter((len(ids) for ids in encoded), np.int64, len(encoded))
  all_ids = (np.concatenate(encoded) if encoded else np.zeros(0)).astype(np.int32)
  # Literal "[CLS]" in the text must not break the row structure.
  all_ids[np.isin(all_ids, np.asarray(special_ids))] = unk_id
  sentences = np.split(all_ids, np.cumsum(lengths)[:-1]) if len(lengths) else []
  out, k = [], 0
  for doc in documents:
    pieces = []
    for ids in sentences[k:k + len(doc)]:
      if len(ids) > max_piece:
        pieces.extend(ids[j:j + max_piece] for j in range(0, len(ids), max_piece))
      elif len(ids):
        pieces.append(ids)
    k += len(doc)
    if pieces:
      out.append(pieces)
  return out


def make_chunk_examples(tokenizer, documents: list[list[str]], *, mode: str, split: str,
                        chunk_index: int, seed: int, max_seq_length: int, dupe_factor: int,
                        short_seq_prob: float) -> ChunkResult:
  """Tokenizes one chunk and serializes its examples, shuffled within the chunk."""
  dtype = id_dtype(tokenizer.vocab_size)
  cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
  specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id]
  docs = tokenize_documents(tokenizer, documents, specials, tokenizer.unk_id, max_seq_length - 3)
  records, num_tokens = [], 0
  rng = random.Random(chunk_seed(seed, split, chunk_index))
  for dupe in range(dupe_factor):
    if mode == "nsp":
      for d in range(len(docs)):
        for label, a, b in create_nsp_examples(docs, d, max_seq_length=max_seq_length,
                                               short_seq_prob=short_seq_prob, rng=rng):
          row = np.concatenate([[cls_id], a, [sep_id], b, [sep_id]])
          records.append(encode_record(label, row, dtype))
          num_tokens += len(row)
    else:
      order = list(range(len(docs)))
      if dupe:
        rng.shuffle(order)
      flat_docs = [np.concatenate(docs[d]) for d in order]
      for row in pack_documents(flat_docs, max_seq_length=max_seq_length, cls_id=cls_id,
                                sep_id=sep_id):
        records.append(encode_record(0, row, dtype))
        num_tokens += len(row)
  rng.shuffle(records)
  return ChunkResult(records, num_tokens, sum(len(d) for d in docs))


def eval_document(doc_index: int, eval_fraction: float) -> bool:
  """Whole documents go to eval evenly: the first one, then every 1/fraction-th."""
  if eval_fraction <= 0:
    return False
  c = 1.0 - eval_fraction
  return np.floor((doc_index + 1) * eval_fraction + c) > np.floor(doc_index * eval_fraction + c)


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def summarize(meta: dict) -> str:
  """A short human summary of a prepared dataset."""
  s = meta["summary"]
  lines = [f"documents {s['documents']:,}  sentences {s['sentences']:,}  "
           f"text {s['text_bytes'] / 1e6:.2f} MB  bad bytes {s['bad_bytes']:,} "
           f"(in {s['bad_lines']:,} lines)  empty documents skipped {s['empty_documents']:,}"]
  for name, split in meta["splits"].items():
    lines.append(f"{name}: {split['num_examples']:,} sequences of {meta['max_seq_length']}, "
                 f"{split['num_tokens']:,} tokens, padding {split['padding_fraction']:.2%}, "
                 f"{len(split['shards'])} shard(s)")
  return "\n".join(lines)


# ------------------------------------------------------------- orchestration


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """Everything that decides the bytes of the output (and a few that do not)."""
  max_seq_length: int = 128
  mode: str = "nsp"
  dupe_factor: int = 1
  short_seq_prob: float = 0.1
  eval_fraction: float = 0.0
  num_output_shards: int = 1
  num_shards: int = 1
  shard_index: int = 0
  seed: int = 12345
  chunk_bytes: int = 1 << 20
  # Does not change the output: only how many processes share the work.
  num_workers: int = 1

  def validate(self) -> None:
    if self.mode not in MODES:
      raise UserError(f"--mode must be one of {MODES}, got {self.mode!r}")
    if not 8 <= self.max_seq_length <= 1 << 16:
      raise UserError(f"--max_seq_length must be in [8, 65536], got {self.max_seq_length}")
    if self.dupe_factor < 1:
      raise UserError(f"--dupe_factor must be >= 1, got {self.dupe_factor}")
    if not 0.0 <= self.short_seq_prob <= 1.0:
      raise UserError(f"--short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
    if not 0.0 <= self.eval_fraction < 1.0:
      raise UserError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")
    if self.num_output_shards < 1 or self.num_workers < 1 or self.chunk_bytes < 1:
      raise UserError("--num_output_shards, --num_workers and --chunk_mb must be positive")
    if not 0 <= self.shard_index < self.num_shards:
      raise UserError(f"--shard_index={self.shard_index} is not in "
                      f"[0, --num_shards={self.num_shards})")


_WORKER_TOKENIZER = None


def _init_worker(tokenizer_path: str, in_pool: bool = False) -> None:
  global _WORKER_TOKENIZER
  if in_pool:  # One single-threaded tokenizer per process; no fork warning.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
  _WORKER_TOKENIZER = load_tokenizer(tokenizer_path)


def _run_task(task) -> tuple[str, ChunkResult]:
  split, chunk_index, documents, kwargs = task
  return split, make_chunk_examples(_WORKER_TOKENIZER, documents, split=split,
                                    chunk_index=chunk_index, **kwargs)


def _tasks(documents: Iterable[list[str]], options: PrepareOptions, kwargs: dict):
  """(split, chunk_index, documents) in input order, this host's chunks only."""
  buffers = {"train": [], "eval": []}
  sizes = {"train": 0, "eval": 0}
  counters = {"train": 0, "eval": 0}

  def emit(split):
    index = counters[split]
    counters[split] += 1
    docs, buffers[split], sizes[split] = buffers[split], [], 0
    if index % options.num_shards == options.shard_index:
      return [(split, index, docs, kwargs)]
    return []

  for doc_index, doc in enumerate(documents):
    split = "eval" if eval_document(doc_index, options.eval_fraction) else "train"
    buffers[split].append(doc)
    sizes[split] += sum(len(s) + 1 for s in doc)
    if sizes[split] >= options.chunk_bytes:
      yield from emit(split)
  for split in ("train", "eval"):
    if buffers[split]:
      yield from emit(split)


def _ordered_map(tasks, num_workers: int, tokenizer_path: str):
  """Runs tasks in worker processes, results in task order, a bounded queue ahead."""
  if num_workers == 1:
    _init_worker(tokenizer_path)
    yield from map(_run_task, tasks)
    return
  # Fork is fastest, but forking a process that has started JAX's threads can deadlock
  # (a library caller, a test run): start clean workers from a fork server then.
  methods = multiprocessing.get_all_start_methods()
  method = "fork" if "fork" in methods and "jax" not in sys.modules else (
      "forkserver" if "forkserver" in methods else "spawn")
  context = multiprocessing.get_context(method)
  with context.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer_path, True)) as pool:
    pending = collections.deque()
    for task in tasks:
      pending.append(pool.apply_async(_run_task, (task,)))
      if len(pending) >= 2 * num_workers:
        yield pending.popleft().get()
    while pending:
      yield pending.popleft().get()


def prepare(documents: Iterable[list[str]], stats: ReadStats, tokenizer_path: str,
            output_dir: str, options: PrepareOptions,
            progress: Optional[Callable[[dict], None]] = None, overwrite: bool = False,
            source: str = "the input") -> dict:
  """Writes a prepared pretraining dataset; returns its meta (also in meta.json).

  Args:
    documents: the documents (lists of sentences), e.g. from `read_documents`.
    stats: the ReadStats that `documents` fills in while it is consumed.
    tokenizer_path: anything `bert_jax.tokenization.load_tokenizer` accepts.
    output_dir: destination; files are built in a temporary directory beside
      it and moved in at the end, meta.json last.
    options: the PrepareOptions.
    progress: optional callable(dict) called every few seconds with counts.
    overwrite: replace what an earlier run (of this host) wrote to `output_dir`;
      without it, an existing prepared dataset is an error, never silently lost.
    source: what `documents` were read from, named in errors (files, a tfds dataset).
  """
  options.validate()
  tokenizer = load_tokenizer(tokenizer_path)
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise UserError(f"--output {output_dir} exists and is not a directory")
  host, hosts = options.shard_index, options.num_shards
  meta_name = "meta.json" if hosts == 1 else f"meta.part-{host:05d}-of-{hosts:05d}.json"
  if os.path.exists(os.path.join(output_dir, meta_name)) and not overwrite:
    raise UserError(f"--output {output_dir} already holds prepared data ({meta_name}); "
                    "use a new dir or --overwrite to replace it")
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
  counts = {"train": options.num_output_shards, "eval": 1}
  names = {split: [shard_name(split, host * n + j, hosts * n) for j in range(n)]
           for split, n in counts.items()}
  writers = {split: [None] * n for split, n in counts.items()}
  examples = {split: [0] * n for split, n in counts.items()}
  tokens = {"train": 0, "eval": 0}
  segments = 0
  kwargs = dict(mode=options.mode, seed=options.seed, max_seq_length=options.max_seq_length,
                dupe_factor=options.dupe_factor, short_seq_prob=options.short_seq_prob)
  results = _ordered_map(_tasks(documents, options, kwargs), options.num_workers, tokenizer_path)
  try:
    start = last = time.time()
    for split, result in results:
      tokens[split] += result.num_tokens
      segments += result.num_segments
      for record in result.records:  # Round-robin over the shards.
        j = sum(examples[split]) % counts[split]
        if writers[split][j] is None:
          writers[split][j] = ArrayRecordWriter(os.path.join(tmp, names[split][j]),
                                                _WRITER_OPTIONS)
        writers[split][j].write(record)
        examples[split][j] += 1
      if progress is not None and time.time() - last > 5:
        last = time.time()
        progress(dict(documents=stats.documents, text_mb=stats.text_bytes / 1e6,
                      sequences=sum(examples["train"]) + sum(examples["eval"]),
                      mb_per_s=stats.text_bytes / 1e6 / (last - start)))
    for split in writers:
      for j, writer in enumerate(writers[split]):
        if writer is None:  # An empty shard still exists, so shard names stay dense.
          writer = ArrayRecordWriter(os.path.join(tmp, names[split][j]), _WRITER_OPTIONS)
        writer.close()
        writers[split][j] = None
    if stats.documents == 0:
      raise UserError(f"{source} has no text: every document is empty")
    if hosts == 1 and sum(examples["train"]) == 0:
      raise UserError("no training example was made: the corpus is too small or all held out")

    splits = {}
    for split in ("train", "eval"):
      if split == "eval" and options.eval_fraction <= 0:
        os.remove(os.path.join(tmp, names[split][0]))
        continue
      n = sum(examples[split])
      splits[split] = dict(
          num_examples=n, num_tokens=tokens[split],
          padding_fraction=1.0 - tokens[split] / max(1, n * options.max_seq_length),
          shards=[dict(file=f, num_examples=c) for f, c in zip(names[split], examples[split])])
    tokenizer.save(os.path.join(tmp, "tokenizer"))
    meta = dict(
        format="bert_jax_pretraining_data", version=1,
        vocab_size=tokenizer.vocab_size, tokenizer="tokenizer", tokenizer_kind=tokenizer.kind,
        lowercase=tokenizer.lowercase, max_seq_length=options.max_seq_length,
        mode=options.mode, id_dtype=id_dtype(tokenizer.vocab_size).name,
        special_ids=dict(pad=tokenizer.pad_id, unk=tokenizer.unk_id, cls=tokenizer.cls_id,
                         sep=tokenizer.sep_id, mask=tokenizer.mask_id),
        splits=splits, seed=options.seed,
        options={k: v for k, v in dataclasses.asdict(options).items() if k != "num_workers"},
        summary=dict(dataclasses.asdict(stats), tokenized_sentences=segments))
    with open(os.path.join(tmp, meta_name), "w") as f:
      json.dump(meta, f, indent=1)
    _move_into_place(tmp, output_dir, meta_name)
  finally:
    results.close()  # Stops the worker pool on errors and interrupts.
    for writer in (w for ws in writers.values() for w in ws if w is not None):
      writer.close()
    shutil.rmtree(tmp, ignore_errors=True)
  return meta


def _move_into_place(tmp: str, output_dir: str, meta_name: str) -> None:
  """Moves shards and tokenizer into `output_dir`, the meta file last."""
  os.makedirs(output_dir, exist_ok=True)
  stale = [os.path.join(output_dir, meta_name)]  # Never an old meta beside new shards.
  if meta_name == "meta.json":  # Single host: shards of an earlier run go too.
    stale += glob.glob(os.path.join(output_dir, "*-of-*.array_record"))
    stale += glob.glob(os.path.join(output_dir, "meta.part-*-of-*.json"))
  for path in stale:
    if os.path.exists(path):
      os.remove(path)
  for name in sorted(os.listdir(tmp)):
    if name == meta_name:
      continue
    target = os.path.join(output_dir, name)
    if os.path.isdir(target):
      shutil.rmtree(target)
    os.replace(os.path.join(tmp, name), target)
  os.replace(os.path.join(tmp, meta_name), os.path.join(output_dir, meta_name))
