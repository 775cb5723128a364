"""The one table of padded sequence lengths, shared by fine-tuning input and inference.

Why one table: XLA compiles one program per input shape, so every padded batch
is cut to the smallest of a few lengths that holds its longest row. Fine-tuning
(`data/finetune_pipeline.py`) and inference (`inference/runner.py`) used two
tables that disagreed (inference had 24, 320 and 448 as well); these are the
fine-tuning values, kept as they were so a fixed-seed fine-tuning run logs the
same losses. The limit (max_seq_length, or the model's position table) is always
the last bucket.
"""

from __future__ import annotations

from typing import Sequence

BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_length(n: int, limit: int, buckets: Sequence[int] = BUCKETS) -> int:
  """The smallest bucket >= `n` below `limit` (`limit` itself when none is)."""
  return next((b for b in buckets if n <= b < limit), limit)


def buckets_up_to(limit: int, buckets: Sequence[int] = BUCKETS) -> list[int]:
  """The buckets below `limit`, then `limit`: every length a batch may be padded to."""
  return sorted({b for b in buckets if b < limit} | {limit})
