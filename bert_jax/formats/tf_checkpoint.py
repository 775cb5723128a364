"""Read TensorFlow V2 checkpoints (`name.index` + `name.data-*`) as numpy, without TF.

Why: the original Google BERT releases are TF checkpoints, and TensorFlow is a
heavy optional dependency. The format is small and documented in the TF sources
(`tensorflow/core/util/tensor_bundle/`):
- `.index` is a LevelDB-style SSTable (`tensorflow/core/lib/io/table*`): data
  blocks of prefix-compressed (key, value) entries, an index block pointing at
  them, and a 48-byte footer. TF's BundleWriter writes it uncompressed.
- Key "" holds a `BundleHeaderProto` (num_shards, endianness); every other key is
  a variable name whose value is a `BundleEntryProto` (dtype, shape, shard_id,
  offset, size) decoded here from the protobuf wire format by hand.
- `.data-SSSSS-of-NNNNN` shards hold the raw little-endian tensor bytes.
Partitioned (sliced) variables and string tensors are not supported: BERT has none
worth reading (string tensors are skipped).
"""

from __future__ import annotations

import os
import struct
from typing import Iterator

import ml_dtypes
import numpy as np

from bert_jax.errors import UserError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
# tensorflow/core/framework/types.proto
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
          9: np.int64, 10: np.bool_, 14: ml_dtypes.bfloat16, 17: np.uint16, 19: np.float16,
          22: np.uint32, 23: np.uint64}
DT_STRING = 7


class CheckpointFormatError(ValueError):
  """The index or data file is not a readable TF V2 checkpoint."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(buf):
      raise CheckpointFormatError("truncated varint")
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def decode_message(buf: bytes) -> dict[int, list]:
  """Protobuf wire format -> {field number: [raw values]} (ints or bytes)."""
  fields: dict[int, list] = {}
  pos = 0
  while pos < len(buf):
    tag, pos = _varint(buf, pos)
    field, wire = tag >> 3, tag & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
    elif wire == 2:
      size, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + size], pos + size
    elif wire == 5:
      value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
    else:
      raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
    fields.setdefault(field, []).append(value)
  return fields


def _block(data: bytes, offset: int, size: int) -> bytes:
  if offset + size + BLOCK_TRAILER_SIZE > len(data):
    raise CheckpointFormatError("block handle points past the end of the file")
  compression = data[offset + size]
  if compression != 0:
    raise CheckpointFormatError(f"compressed table blocks (type {compression}) are not supported")
  return data[offset:offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
  if len(block) < 4:
    raise CheckpointFormatError("block too short")
  (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
  end = len(block) - 4 - 4 * num_restarts
  if end < 0:
    raise CheckpointFormatError("bad restart count")
  pos, key = 0, b""
  while pos < end:
    shared, pos = _varint(block, pos)
    non_shared, pos = _varint(block, pos)
    value_size, pos = _varint(block, pos)
    key = key[:shared] + block[pos:pos + non_shared]
    pos += non_shared
    yield key, block[pos:pos + value_size]
    pos += value_size


def read_table(path: str) -> dict[bytes, bytes]:
  """All (key, value) pairs of an uncompressed LevelDB/TF SSTable."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < FOOTER_SIZE:
    raise CheckpointFormatError("file too short for a table footer")
  footer = data[-FOOTER_SIZE:]
  (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
  if magic != TABLE_MAGIC:
    raise CheckpointFormatError("bad table magic number")
  pos = 0
  _, pos = _varint(footer, pos)  # metaindex offset
  _, pos = _varint(footer, pos)  # metaindex size
  index_offset, pos = _varint(footer, pos)
  index_size, pos = _varint(footer, pos)
  table = {}
  for _, handle in _block_entries(_block(data, index_offset, index_size)):
    offset, p = _varint(handle, 0)
    size, _ = _varint(handle, p)
    for key, value in _block_entries(_block(data, offset, size)):
      table[key] = value
  return table


def _shape(shape_proto: bytes) -> tuple[int, ...]:
  dims = decode_message(shape_proto).get(2, [])
  return tuple(decode_message(d).get(1, [0])[0] for d in dims)


def load_checkpoint(prefix: str) -> dict[str, np.ndarray]:
  """Every non-string variable of the checkpoint `prefix` (`prefix.index` must exist).

  Raises:
    ValueError: unreadable index or data, naming the file.
  """
  index_path = prefix + ".index"
  try:
    table = read_table(index_path)
    header = decode_message(table.get(b"", b""))
  except (CheckpointFormatError, struct.error) as exc:
    raise UserError(f"{index_path} is not a readable TF checkpoint index: {exc}") from None
  num_shards = header.get(1, [1])[0]
  if header.get(2, [0])[0] != 0:
    raise UserError(f"{index_path}: big-endian checkpoints are not supported")
  shards: dict[int, np.ndarray] = {}  # memory-mapped bytes: a 1.3 GB checkpoint is not copied twice
  tensors = {}
  for key, value in sorted(table.items()):
    if not key:
      continue
    name = key.decode("utf-8", errors="replace")
    try:
      entry = decode_message(value)
    except (CheckpointFormatError, struct.error) as exc:
      raise UserError(f"{index_path}: entry {name!r} is corrupt: {exc}") from None
    dtype_enum = entry.get(1, [0])[0]
    if dtype_enum == DT_STRING:
      continue
    if dtype_enum not in DTYPES:
      raise UserError(f"{index_path}: variable {name!r} has unsupported dtype enum {dtype_enum}")
    if 7 in entry:
      raise UserError(f"{index_path}: variable {name!r} is partitioned (sliced); not supported")
    shape = _shape(entry[2][0]) if 2 in entry else ()
    shard_id = entry.get(3, [0])[0]
    offset = entry.get(4, [0])[0]
    size = entry.get(5, [0])[0]
    if shard_id not in shards:
      data_path = f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"
      if not os.path.exists(data_path):
        raise FileNotFoundError(f"TF checkpoint data file is missing: {data_path}")
      shards[shard_id] = (np.memmap(data_path, dtype=np.uint8, mode="r")
                          if os.path.getsize(data_path) else np.zeros(0, np.uint8))
    dtype = np.dtype(DTYPES[dtype_enum])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = shards[shard_id][offset:offset + size]
    if size != expected or len(raw) != size:
      raise UserError(f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}: variable {name!r} "
                       f"has {len(raw)} bytes at offset {offset}, expected {expected} for shape "
                       f"{list(shape)} {dtype.name} (truncated or corrupt file)")
    tensors[name] = np.array(raw).view(dtype).reshape(shape)
  return tensors
