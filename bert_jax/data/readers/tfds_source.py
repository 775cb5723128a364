"""A tfds split opened for random access (`tfds.data_source`, ArrayRecord, no TensorFlow).

Why one place: every tfds-backed reader needs the same opening and the same one-line error
when the dataset is not prepared, and the same bytes-or-str field decoding.
"""

from __future__ import annotations

from typing import Any, Optional

from bert_jax.errors import UserError


def open_source(name: str, split: str, data_dir: Optional[str] = None) -> Any:
  """`tfds.data_source(name, split=...)`; a missing package or dataset is one error line."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"config.task={name} needs tensorflow-datasets") from None
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as exc:  # tfds raises many types for a missing dataset
    reason = " ".join(str(exc).split()).split(". ")[0]
    raise UserError(f"tfds dataset {name}:{split} cannot be read ({reason}); prepare it with "
                    f"`tfds build {name} --file_format=array_record`") from None


def text(x: Any) -> str:
  """A tfds text feature as str (the data source yields bytes)."""
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)
