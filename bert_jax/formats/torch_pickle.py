"""Read PyTorch `torch.save` state dicts (`pytorch_model.bin`) as numpy, without torch.

Why: torch is a 1 GB dependency and unpickling an arbitrary file runs arbitrary
code. A state dict only needs a handful of globals (tensor rebuild functions,
storage types, OrderedDict), so a restricted unpickler that knows exactly those
reads every BERT checkpoint safely and refuses anything else.

Both on-disk layouts are handled:
- the zip format (torch >= 1.6): `<root>/data.pkl` plus one raw little-endian
  file per storage in `<root>/data/<key>`;
- the legacy format: magic number, protocol, system info, the pickle, the list
  of storage keys, then each storage as an int64 element count and its bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable

import ml_dtypes
import numpy as np

from bert_jax.errors import UserError

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple,
                    *unused) -> np.ndarray:
  """A strided view of a flat storage, copied into a fresh contiguous array."""
  del unused  # requires_grad, backward hooks, metadata
  if not size:
    return storage[offset].copy()
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data: np.ndarray, *unused) -> np.ndarray:
  return data


class _Unpickler(pickle.Unpickler):
  """Allows only the globals a state dict needs; storages come from `load_storage`."""

  _GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  }

  def __init__(self, file: BinaryIO, load_storage: Callable[[_StorageType, str, int], np.ndarray],
               source: str):
    super().__init__(file)
    self._load_storage = load_storage
    self._source = source
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str) -> Any:
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in self._GLOBALS:
      return self._GLOBALS[(module, name)]
    raise pickle.UnpicklingError(f"{self._source}: refusing to load global {module}.{name} "
                                 "(not a plain tensor state dict)")

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"{self._source}: unexpected persistent id {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"{self._source}: unsupported storage type {storage_type!r}")
    if key not in self._storages:
      self._storages[key] = self._load_storage(storage_type, key, numel)
    return self._storages[key]


def _load_zip(path: str) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise UserError(f"no data.pkl in the archive (found {names[:5]}...)")
    root = pickles[0][: -len("data.pkl")]
    byteorder = root + "byteorder"
    if byteorder in names and archive.read(byteorder).strip() != b"little":
      raise UserError("big-endian tensors are not supported")

    def load_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
      raw = archive.read(f"{root}data/{key}")
      return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), load_storage, path).load()


def _load_legacy(path: str) -> dict[str, np.ndarray]:
  with open(path, "rb") as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise UserError("not a torch.save file (bad magic number)")
    pickle.load(f)  # protocol version
    sys_info = pickle.load(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
      raise UserError("big-endian tensors are not supported")
    pending: dict[str, tuple[_StorageType, np.ndarray]] = {}

    def load_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
      # Filled in place once the storage bytes (after the pickle) have been read.
      buffer = np.empty(numel, dtype=storage_type.dtype)
      pending[key] = (storage_type, buffer)
      return buffer

    _Unpickler(f, load_storage, path).load()  # registers the storages in `pending`
    for key in pickle.load(f):
      storage_type, buffer = pending[str(key)]
      (numel,) = struct.unpack("<q", f.read(8))
      raw = f.read(numel * storage_type.dtype.itemsize)
      if numel != buffer.size or len(raw) != buffer.nbytes:
        raise UserError(f"storage {key} is truncated")
      buffer[...] = np.frombuffer(raw, dtype=storage_type.dtype)
  # Views were materialised before the bytes arrived: unpickle again, now with data.
  with open(path, "rb") as f:
    for _ in range(3):
      pickle.load(f)
    return _Unpickler(f, lambda t, key, n: pending[key][1], path).load()


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a `torch.save`d state dict as numpy arrays, by name.

  Raises:
    ValueError: the file is not a readable torch state dict (message names the file).
  """
  try:
    if zipfile.is_zipfile(path):
      state = _load_zip(path)
    else:
      state = _load_legacy(path)
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, ValueError,
          struct.error, IndexError, TypeError, AttributeError) as exc:
    raise UserError(f"{path} is not a readable PyTorch state dict: {exc}") from None
  if not isinstance(state, dict):
    raise UserError(f"{path} holds a {type(state).__name__}, expected a state dict")
  return {str(k): np.asarray(v) for k, v in state.items()}
