"""Inference tools on any loaded model: fill-mask and text embeddings.

Why the batching looks like this: XLA compiles one program per input shape, and
on CPU a compile (~1-2 s for a 6-layer model) costs as much as embedding several
thousand tokens. So texts are tokenized once, sorted by length and grouped into
a few length buckets (16, 24, 32, 48, 64, 96, 128, 192, 256, ...); a bucket too
small to be worth its own compile is merged into the next one. Each bucket is
cut into equal batches of about `tokens_per_batch` tokens per device (by default
512 on CPU, where larger batches fall out of cache: 2048 was ~15% slower; 2048 on
accelerators; `platform.batch_tokens`), so it compiles exactly once and
wastes at most a few empty rows. Pooling happens inside the jitted function, so
only [B, E] vectors leave the device; batch i is fetched after batch i+1 is
dispatched. Results are put back in input order. fp32 throughout: bf16 is not
faster on CPU.

Short texts (the most of a typical corpus) are packed instead, for cls/mean
pooling: several texts share one row of `pack_length` tokens (default 128),
each with its own position ids and a block-diagonal attention mask (the model's
`packing_ids`), and are pooled per text inside the jitted function. The vectors
are those of the texts run alone (up to float rounding), but the rows carry
almost no padding and all of them share one compiled shape: on 10k lines of
English this cut the tokens computed by a sixth (342k to 285k for 274k real)
and the compiled shapes from 8 to 2 (BENCHMARKS.md, "CPU").
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import model as model_lib
from bert_jax import platform as platform_lib
from bert_jax.formats.convert import Pretrained
from bert_jax.errors import UserError

POOLINGS = ("cls", "mean", "max", "token")
BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 320, 384, 448, 512)
MAX_INFERENCE_LENGTH = 512
# Padding (in tokens) worth paying to avoid compiling one more shape.
COMPILE_COST_TOKENS = 8192
# Row length of packed short texts (cls/mean pooling); 0 turns packing off.
PACK_LENGTH = 128


def read_lines(path: str) -> list[str]:
  """One text per line ('\\n' or '\\r\\n'); a non-UTF-8 line is an error naming file and line."""
  with open(path, "rb") as f:
    raw = f.read()
  lines = raw.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  texts = []
  for number, line in enumerate(lines, start=1):
    try:
      texts.append(line.removesuffix(b"\r").decode("utf-8"))
    except UnicodeDecodeError as exc:
      raise UserError(f"{path}:{number}: not UTF-8 text (byte {line[exc.start]:#04x} at column "
                      f"{exc.start + 1})") from None
  return texts


def default_max_length(config: model_lib.BertConfig, requested: Optional[int] = None) -> int:
  """The model's own limit capped at 512, or `requested` if it fits the position table."""
  if requested is None:
    return min(config.max_position_embeddings, MAX_INFERENCE_LENGTH)
  if requested < 2:
    raise UserError(f"--max_seq_length={requested}: needs room for [CLS] and [SEP]")
  if requested > config.max_position_embeddings:
    raise UserError(f"--max_seq_length={requested} exceeds the model's position table "
                    f"(max_position_embeddings={config.max_position_embeddings})")
  return requested


# --- Fill-mask. ---

def fill_mask(pre: Pretrained, text: str, top_k: int = 5) -> list[list[dict]]:
  """Top-k predictions for every [MASK] in `text`: per mask, [{token, token_id, score}]."""
  if "mlm" not in pre.heads:
    raise UserError(f"this model has no masked-LM head (heads: {list(pre.heads) or 'none'}); "
                    "fill-mask needs a BertForPreTraining / BertForMaskedLM checkpoint")
  if top_k < 1:
    raise UserError(f"--top_k={top_k}: must be >= 1")
  tok = pre.tokenizer
  enc = tok.encode(text, max_length=default_max_length(pre.config))
  ids = np.asarray(enc["input_ids"], np.int32)
  positions = np.flatnonzero(ids == tok.mask_id).astype(np.int32)
  if not positions.size:
    raise UserError(f"the text has no {tok.convert_ids_to_tokens(tok.mask_id)[0]} token "
                    "(after truncation)")
  # Pad to a bucket length (padding keys are masked out): one compile serves many texts.
  limit = pre.config.max_position_embeddings
  length = min([b for b in BUCKETS if ids.size <= b <= limit] or [ids.size])
  pad = length - ids.size
  row = lambda x: np.pad(np.asarray(x, np.int32), (0, pad))[None]
  logits = _mlm_forward(pre.config, "nsp" in pre.heads)(
      pre.params, row(ids), row(enc["token_type_ids"]), row(np.ones_like(ids)), positions[None])
  probs_PxV = np.asarray(jax.nn.softmax(logits[0], axis=-1))
  k = min(top_k, probs_PxV.shape[-1])
  results = []
  for probs_V in probs_PxV:
    best = np.argsort(-probs_V, kind="stable")[:k]
    tokens = tok.convert_ids_to_tokens(best)
    results.append([{"token": t, "token_id": int(i), "score": float(probs_V[i])}
                    for t, i in zip(tokens, best)])
  return results


@functools.lru_cache(maxsize=8)
def _mlm_forward(config: model_lib.BertConfig, with_nsp: bool) -> Callable:
  """jit(params, ids, types, mask, masked_positions) -> MLM logits; one per model config."""
  from bert_jax.heads import pretraining  # pylint: disable=g-import-not-at-top
  module = pretraining.BertForPreTraining(config, with_nsp=with_nsp)

  def forward(params, ids, types, mask, positions):
    return module.apply({"params": params}, ids, types, mask, None, None,
                        positions)["mlm_logits"]

  return jax.jit(forward)


# --- Embeddings. ---

@dataclasses.dataclass
class TokenEmbeddings:
  """Ragged per-token output: line i owns rows [lengths[:i].sum(), lengths[:i+1].sum())."""

  vectors: np.ndarray  # [T, E] float32, all real tokens ([CLS], [SEP] included)
  token_ids: np.ndarray  # [T] int32
  offsets: np.ndarray  # [T, 2] int32 char (start, end) in the line, (0, 0) for specials
  lengths: np.ndarray  # [N] int32 tokens per line


def _pool(hidden_BxLxE: jax.Array, mask_BxL: jax.Array, pooling: str, normalize: bool) -> jax.Array:
  mask_BxLx1 = mask_BxL[:, :, None].astype(hidden_BxLxE.dtype)
  if pooling == "cls":
    out = hidden_BxLxE[:, 0]
  elif pooling == "mean":  # as sentence-transformers: sum over real tokens / max(count, 1e-9)
    out = (hidden_BxLxE * mask_BxLx1).sum(1) / jnp.maximum(mask_BxLx1.sum(1), 1e-9)
  elif pooling == "max":
    out = jnp.where(mask_BxLx1 > 0, hidden_BxLxE, -1e9).max(1)
  else:
    out = hidden_BxLxE
  if normalize:
    out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
  return out


def plan_batches(lengths: Sequence[int], max_length: int, tokens_per_batch: int,
                 batch_size: Optional[int] = None,
                 compile_cost_tokens: int = COMPILE_COST_TOKENS) -> list[tuple[np.ndarray, int]]:
  """(row indices, padded length) per batch; one shape per bucket, little padding.

  Rows are sorted by length and grouped into the smallest bucket that fits them.
  A bucket whose rows would cost less padding in the next bucket than
  `compile_cost_tokens` is merged into it. Each bucket is then cut into equal
  batches of at most `tokens_per_batch` tokens, so every batch of a bucket has
  the same shape: the last one is padded with at most (number of batches - 1)
  empty rows (see `Embedder.embed`).

  Args:
    lengths: token count of each text (already truncated to `max_length`).
    max_length: the longest allowed row.
    tokens_per_batch: token budget of a batch (rows = budget // bucket length).
    batch_size: fixed largest rows per batch, overriding the token budget.
    compile_cost_tokens: padding worth paying to avoid one more compiled shape.
  """
  lengths = np.asarray(lengths)
  buckets = sorted({b for b in BUCKETS if b < max_length} | {max_length})
  order = np.argsort(lengths, kind="stable")
  sorted_lengths = lengths[order]
  groups: list[tuple[np.ndarray, int]] = []
  carry = np.zeros(0, np.int64)
  begin = 0
  for k, bucket in enumerate(buckets):
    end = int(np.searchsorted(sorted_lengths, bucket, side="right"))
    members = np.concatenate([carry, order[begin:end]])
    begin = end
    if k + 1 < len(buckets) and len(members):
      extra_padding = len(members) * (buckets[k + 1] - bucket)
      if extra_padding < compile_cost_tokens:
        carry = members
        continue
    carry = np.zeros(0, np.int64)
    if len(members):
      groups.append((members, bucket))
  batches = []
  for members, bucket in groups:
    rows_max = batch_size or max(1, tokens_per_batch // bucket)
    count = -(-len(members) // rows_max)
    rows = -(-len(members) // count)
    batches += [(members[i:i + rows], bucket) for i in range(0, len(members), rows)]
  return batches


def pack_rows(lengths: Sequence[int], capacity: int) -> list[np.ndarray]:
  """Text indices per packed row (each row's lengths sum to <= `capacity`), best-fit decreasing.

  Every text goes into the open row it fills most tightly, longest texts first;
  a text that fits no open row opens a new one. Texts longer than `capacity`
  must be left out by the caller.
  """
  lengths = np.asarray(lengths, np.int64)
  rows: list[list[int]] = []
  open_rows: list[list[int]] = [[] for _ in range(capacity + 1)]  # free tokens -> row numbers
  for i in np.argsort(-lengths, kind="stable"):
    n = int(lengths[i])
    free = next((f for f in range(n, capacity + 1) if open_rows[f]), None)
    if free is None:
      free, r = capacity, len(rows)
      rows.append([])
    else:
      r = open_rows[free].pop()
    rows[r].append(int(i))
    open_rows[free - n].append(r)
  return [np.asarray(r, np.int64) for r in rows]


class Embedder:
  """Texts -> vectors with one compiled program per batch shape."""

  def __init__(self, pre: Pretrained, pooling: str = "mean", *, normalize: bool = False,
               layer: int = -1, max_seq_length: Optional[int] = None,
               tokens_per_batch: Optional[int] = None, batch_size: Optional[int] = None,
               compile_cost_tokens: int = COMPILE_COST_TOKENS, dtype: str = "auto",
               devices: Optional[Sequence[jax.Device]] = None, pack_length: int = PACK_LENGTH):
    """See the module docstring.

    `pack_length`: texts up to this many tokens are packed into rows this long (cls and mean
    pooling only, and only when they fill at least one batch of `tokens_per_batch`; 0 = never).

    `tokens_per_batch`: token budget of a batch; None (or 0) = `platform.batch_tokens` of the
    devices' platform per device.

    `dtype`: compute dtype; "auto" = bfloat16 on GPU/TPU, float32 on CPU (model.resolve_dtype).
    `devices` (e.g. `jax.local_devices()`) shards each batch's rows over those devices (data
    parallel, parameters replicated); default: the default device.
    """
    if pooling not in POOLINGS:
      raise UserError(f"--pooling={pooling!r}: expected one of {list(POOLINGS)}")
    num_layers = pre.config.num_layers
    if not -(num_layers + 1) <= layer <= num_layers:
      raise UserError(f"--layer={layer}: the model has hidden states 0..{num_layers} "
                      f"(or -{num_layers + 1}..-1)")
    if batch_size is not None and batch_size < 1:
      raise UserError(f"--batch_size={batch_size}: must be >= 1")
    self.pre, self.pooling, self.normalize = pre, pooling, normalize
    self.max_length = default_max_length(pre.config, max_seq_length)
    if not tokens_per_batch:
      where = devices or [jax.devices()[0]]
      tokens_per_batch = platform_lib.batch_tokens(where[0].platform) * len(where)
    self.tokens_per_batch, self.batch_size = tokens_per_batch, batch_size
    self.compile_cost_tokens = compile_cost_tokens
    self.pack_length = min(pack_length, self.max_length) if pooling in ("cls", "mean") else 0
    self.dtype = model_lib.resolve_dtype(dtype)
    module = model_lib.BertModel(pre.config.replace(dtype=self.dtype), add_pooling_layer=False)
    params = {k: v for k, v in pre.params["bert"].items() if k != "pooler"}
    self._row_multiple, self._batch_sharding = 1, None
    if devices is not None and len(devices) > 1:
      mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
      self._row_multiple = len(devices)
      self._batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
      self._params = jax.device_put(params, jax.sharding.NamedSharding(mesh,
                                                                       jax.sharding.PartitionSpec()))
    else:
      self._params = jax.device_put(params, devices[0] if devices else None)

    @jax.jit
    def forward(params, ids_BxL, types_BxL, mask_BxL):
      out = module.apply({"params": params}, ids_BxL, types_BxL, mask_BxL,
                         output_hidden_states=layer != -1)
      hidden_BxLxE = out.sequence_output if layer == -1 else out.hidden_states[layer]
      # Pool in float32 whatever the compute dtype.
      return _pool(hidden_BxLxE.astype(jnp.float32), mask_BxL, pooling, normalize)

    self._forward = forward

    @jax.jit
    def packed_forward(params, ids_BxL, types_BxL, packing_BxL, positions_BxL, starts_BxK):
      out = module.apply({"params": params}, ids_BxL, types_BxL, None, positions_BxL, packing_BxL,
                         output_hidden_states=layer != -1)
      hidden_BxLxE = (out.sequence_output if layer == -1 else out.hidden_states[layer]).astype(
          jnp.float32)
      if pooling == "cls":
        pooled_BxKxE = jnp.take_along_axis(hidden_BxLxE, starts_BxK[:, :, None], axis=1)
      else:  # mean over each text's tokens, as `_pool`
        texts_K = jnp.arange(1, starts_BxK.shape[1] + 1, dtype=packing_BxL.dtype)
        member_BxKxL = (packing_BxL[:, None, :] == texts_K[None, :, None]).astype(jnp.float32)
        sums_BxKxE = jnp.einsum("bkl,ble->bke", member_BxKxL, hidden_BxLxE,
                                precision=jax.lax.Precision.HIGHEST)
        pooled_BxKxE = sums_BxKxE / jnp.maximum(member_BxKxL.sum(-1)[:, :, None], 1e-9)
      if normalize:
        pooled_BxKxE = pooled_BxKxE / jnp.maximum(
            jnp.linalg.norm(pooled_BxKxE, axis=-1, keepdims=True), 1e-12)
      return pooled_BxKxE

    self._packed_forward = packed_forward

  def embed(self, texts: Sequence[str],
            progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray | TokenEmbeddings:
    """[N, E] float32 (input order), or TokenEmbeddings for pooling='token'."""
    token_mode = self.pooling == "token"
    enc = self.pre.tokenizer.encode_batch(list(texts), max_length=self.max_length, padding="none",
                                          return_offsets=token_mode)
    ids_rows, type_rows = enc["input_ids"], enc["token_type_ids"]
    lengths = np.asarray([len(r) for r in ids_rows], np.int32)
    hidden = self.pre.config.hidden_size
    pooled = None if token_mode else np.zeros((len(ids_rows), hidden), np.float32)
    per_line: list[Optional[np.ndarray]] = [None] * len(ids_rows)
    done = 0
    pending = None  # (rows, device result): fetch batch i after dispatching batch i+1
    for rows, result in self._dispatch(ids_rows, type_rows, lengths):
      if pending is not None:
        done += self._collect(*pending, pooled, per_line, lengths)
        if progress:
          progress(done, len(ids_rows))
      pending = (rows, result)
    if pending is not None:
      done += self._collect(*pending, pooled, per_line, lengths)
      if progress:
        progress(done, len(ids_rows))
    if not token_mode:
      return pooled
    vectors = (np.concatenate(per_line) if per_line else np.zeros((0, hidden), np.float32))
    flat_ids = [i for r in ids_rows for i in r]
    flat_offsets = [o for r in enc["offsets"] for o in r]
    return TokenEmbeddings(vectors.astype(np.float32), np.asarray(flat_ids, np.int32),
                           np.asarray(flat_offsets, np.int32).reshape(-1, 2), lengths)

  def _round_rows(self, rows: int) -> int:
    return -(-rows // self._row_multiple) * self._row_multiple  # divides over the devices

  def _put(self, arrays):
    if self._batch_sharding is not None:
      return jax.device_put(arrays, self._batch_sharding)
    return arrays

  def _dispatch(self, ids_rows, type_rows, lengths):
    """Yields (text indices, device result) per batch: packed rows first, then length buckets."""
    pad_id = self.pre.tokenizer.pad_id
    packed = (lengths <= self.pack_length) if self.pack_length else np.zeros(len(lengths), bool)
    if lengths[packed].sum() < self.tokens_per_batch:  # a few texts (a search query): buckets
      packed[:] = False                                # are as small and need no wide rows
    if packed.any():
      length = self.pack_length
      members = np.flatnonzero(packed)
      packs = [members[r] for r in pack_rows(lengths[members], length)]
      most = max(1, length // 2)  # texts a row can hold: each has [CLS] and [SEP]; fixed shape
      rows_max = self.batch_size or max(1, self.tokens_per_batch // length)
      count = -(-len(packs) // rows_max)
      rows = self._round_rows(-(-len(packs) // count))
      for first in range(0, len(packs), rows):
        group = packs[first:first + rows]
        ids_BxL = np.full((rows, length), pad_id, np.int32)
        types_BxL, packing_BxL, positions_BxL = (np.zeros((rows, length), np.int32)
                                                 for _ in range(3))
        starts_BxK = np.zeros((rows, most), np.int32)
        for b, texts in enumerate(group):
          at = 0
          for k, t in enumerate(texts):
            n = lengths[t]
            ids_BxL[b, at:at + n], types_BxL[b, at:at + n] = ids_rows[t], type_rows[t]
            packing_BxL[b, at:at + n] = k + 1
            positions_BxL[b, at:at + n] = np.arange(n)
            starts_BxK[b, k] = at
            at += n
        arrays = self._put((ids_BxL, types_BxL, packing_BxL, positions_BxL, starts_BxK))
        yield group, self._packed_forward(self._params, *arrays)
    rest = np.flatnonzero(~packed)
    batches = [(rest[r], length) for r, length in plan_batches(
        lengths[rest], self.max_length, self.tokens_per_batch, self.batch_size,
        self.compile_cost_tokens)] if len(rest) else []
    rows_per_bucket: dict[int, int] = {}
    for rows, length in batches:
      rows_per_bucket[length] = max(rows_per_bucket.get(length, 0), len(rows))
    for rows, length in batches:
      shape = (self._round_rows(rows_per_bucket[length]), length)  # one shape per bucket
      ids_BxL = np.full(shape, pad_id, np.int32)
      types_BxL = np.zeros(shape, np.int32)
      mask_BxL = np.zeros(shape, np.int32)
      for b, row in enumerate(rows):
        n = lengths[row]
        ids_BxL[b, :n], types_BxL[b, :n], mask_BxL[b, :n] = ids_rows[row], type_rows[row], 1
      yield rows, self._forward(self._params, *self._put((ids_BxL, types_BxL, mask_BxL)))

  @staticmethod
  def _collect(rows, result, pooled, per_line, lengths) -> int:
    values = np.asarray(result)
    if isinstance(rows, list):  # packed: rows[b] are the texts of row b, in order
      for b, texts in enumerate(rows):
        pooled[texts] = values[b, :len(texts)]
      return sum(len(texts) for texts in rows)
    values = values[:len(rows)]
    if pooled is not None:
      pooled[rows] = values
    else:
      for b, row in enumerate(rows):
        per_line[row] = values[b, :lengths[row]]
    return len(rows)


def stderr_progress(every_s: float = 2.0) -> Callable[[int, int], None]:
  """A progress callback printing 'embedded i/n lines' to stderr at most every `every_s`."""
  start = last = time.monotonic()

  def report(done: int, total: int) -> None:
    nonlocal last
    now = time.monotonic()
    if now - last >= every_s or (done == total and now - start >= every_s):
      last = now
      print(f"embedded {done}/{total} lines ({now - start:.1f} s)", file=sys.stderr, flush=True)

  return report
