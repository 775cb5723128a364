"""Inference on any loaded model: one runner under fill-mask, embeddings and every tool.

Layout: `runner.py` (plan -> pad or pack -> devices -> fetch one behind -> input
order; `plan_batches`, `pack_rows`), `embeddings.py` (the `Embedder`: pooling per
segment on top of the runner), `fill_mask.py`, `limits.py` (how long a row may
be). This module re-exports the names callers use (`inference.Embedder`,
`inference.fill_mask`, `inference.plan_batches`, ...).
"""

from bert_jax.data.buckets import BUCKETS
from bert_jax.files import read_lines
from bert_jax.inference.embeddings import Embedder
from bert_jax.inference.embeddings import POOLINGS
from bert_jax.inference.embeddings import TokenEmbeddings
from bert_jax.inference.fill_mask import fill_mask
from bert_jax.inference.fill_mask import fill_masks
from bert_jax.inference.fill_mask import truncation
from bert_jax.inference.limits import default_max_length
from bert_jax.inference.limits import MAX_INFERENCE_LENGTH
from bert_jax.inference.runner import COMPILE_COST_TOKENS
from bert_jax.inference.runner import PACK_LENGTH
from bert_jax.inference.runner import pack_rows
from bert_jax.inference.runner import plan_batches
from bert_jax.inference.runner import run

__all__ = ["BUCKETS", "COMPILE_COST_TOKENS", "Embedder", "MAX_INFERENCE_LENGTH", "PACK_LENGTH",
           "POOLINGS", "TokenEmbeddings", "default_max_length", "fill_mask", "fill_masks",
           "pack_rows", "plan_batches", "read_lines", "run", "truncation"]
