"""The GPU fast paths give the answers of the plain ones: cuDNN attention equals XLA's,
a bf16 train step tracks fp32, bf16 embeddings match transformers' fp32 ones.

Why tests and not benchmark rows: a throughput figure of a wrong kernel means nothing,
and these checks pass or fail on their own. On a GPU machine:

  pytest -m gpu tests/test_gpu.py        # bench/gpu_suite.py runs this first

Without a GPU the whole module is skipped (CPU runs would only compare XLA with
itself). Each check is a function of its sizes, so tests/test_gpu_suite.py calls the
same code on CPU with tiny sizes (where `cudnn` falls back to XLA) and it cannot rot.
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu",
                       reason=f"needs a GPU: jax.default_backend() is "
                              f"{jax.default_backend()!r}"),
]

ATTENTION_SHAPE = (8, 512, 16, 64)  # B, L, H, D: BERT-large's heads at seq 512
ATTENTION_TOLERANCE = 4e-2  # bf16: ~3 significant digits, summed over 512 keys


def attention_gap(packed: bool, shape: tuple[int, int, int, int] = ATTENTION_SHAPE) -> dict:
  """cuDNN against XLA attention on the same bf16 inputs, at real tokens only.

  Returns max |d out|, max |d grad| over q, k, v, the gradients' scale, and whether the
  compiled cuDNN program holds cuDNN's fused-attention call (not a silent XLA fallback).
  """
  from bert_jax import attention  # pylint: disable=g-import-not-at-top
  b, l, h, d = shape
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((b, l, h, d)), jnp.bfloat16) for _ in range(3))
  if packed:  # three sequences and padding in each row
    ids_BxL = np.zeros((b, l), np.int32)
    for row in range(b):
      cuts = sorted(rng.choice(np.arange(16, l - 40), size=2, replace=False).tolist())
      ids_BxL[row, :cuts[0]], ids_BxL[row, cuts[0]:cuts[1]], ids_BxL[row, cuts[1]:l - 24] = 1, 2, 3
    mask = attention.attention_mask(None, jnp.asarray(ids_BxL), l)
    real_BxL = ids_BxL > 0
  else:  # one row full, the others padded to random lengths
    lengths = rng.integers(l // 4, l + 1, size=b)
    lengths[0] = l
    key_mask_BxL = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
    mask = attention.attention_mask(jnp.asarray(key_mask_BxL), None, l)
    real_BxL = key_mask_BxL > 0
  real_w = jnp.asarray(real_BxL[:, :, None, None], jnp.float32)
  cotangent = jnp.asarray(rng.standard_normal((b, l, h, d)), jnp.float32)

  def loss(impl, q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
    return jnp.sum(out.astype(jnp.float32) * cotangent * real_w), out

  results = {}
  for impl in ("cudnn", "xla"):
    fn = jax.jit(jax.value_and_grad(lambda q, k, v, impl=impl: loss(impl, q, k, v),
                                    argnums=(0, 1, 2), has_aux=True))
    hlo = fn.lower(q, k, v).compile().as_text()
    (_, out), grads = fn(q, k, v)
    results[impl] = dict(out=np.asarray(out, np.float32),
                         grads=[np.asarray(g, np.float32) for g in grads],
                         fused="cudnn$fmha" in hlo)
  cudnn, xla = results["cudnn"], results["xla"]
  return dict(
      err_out=float(np.max(np.abs(cudnn["out"][real_BxL] - xla["out"][real_BxL]))),
      err_grad=max(float(np.max(np.abs(g[real_BxL] - w[real_BxL])))
                   for g, w in zip(cudnn["grads"], xla["grads"])),
      grad_scale=max(float(np.max(np.abs(w[real_BxL]))) for w in xla["grads"]),
      fused=cudnn["fused"])


def train_losses(dtype: str, *, preset: str = "mini", steps: int = 20, batch: int = 16,
                 seq: int = 128, preds: int = 20, vocab: int = 30522) -> list[float]:
  """Each step's loss of the real train loop (configs/bert_base.py resized, no dropout)."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  c = conftest.load_config("bert_base.py")
  c.update(batch_size=batch, num_train_steps=steps, log_every_steps=1, eval_every_steps=0,
           checkpoint_every_steps=10 ** 9, max_seq_length=seq, max_predictions_per_seq=preds,
           warmup_steps=1, learning_rate=1e-3, dtype=dtype)
  c.model.preset = preset
  c.model.hidden_dropout_rate = 0.0
  c.model.attention_dropout_rate = 0.0
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(c, workdir, data=synthetic.synthetic_data(c, vocab_size=vocab))
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
  return [r["loss"] for r in rows if "loss" in r]


def embedding_cosines(workdir: str, *, texts: int = 256, hidden: int = 256, layers: int = 4,
                      max_words: int = 300, dtype: str = "auto") -> np.ndarray:
  """Row cosines of bert_jax's mean-pooled vectors (`dtype` 'auto': bf16 on GPU) against
  transformers' fp32 ones on the CPU, for texts of 1 to `max_words` words (padded and
  packed rows, several buckets, truncation at 256)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import hf_fixtures  # pylint: disable=g-import-not-at-top
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)  # transformers' own init (std 0.02), the scale of real checkpoints
  model = transformers.BertModel(hf_fixtures.tiny_config(
      hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
      intermediate_size=4 * hidden, max_position_embeddings=512), add_pooling_layer=False).eval()
  path = hf_fixtures.save_hf_dir(model, os.path.join(workdir, "hf"))
  rng = np.random.default_rng(0)
  words = [w for w in hf_fixtures.WORDS if w.isalpha()]
  lengths = np.minimum(rng.geometric(1 / 24, size=texts), max_words)
  lengths[:2] = (1, max_words)
  sentences = [" ".join(rng.choice(words, size=n)) for n in lengths]

  embedder = inference.Embedder(convert.from_pretrained(path), pooling="mean",
                                max_seq_length=256, dtype=dtype)
  ours = np.asarray(embedder.embed(sentences), np.float32)
  tokenizer = transformers.BertTokenizerFast(os.path.join(path, "vocab.txt"), do_lower_case=True)
  theirs = []
  with torch.no_grad():
    for i in range(0, len(sentences), 32):
      enc = tokenizer(sentences[i:i + 32], truncation=True, max_length=256, padding=True,
                      return_tensors="pt")
      hidden_BxLxE = model(**enc).last_hidden_state
      m = enc["attention_mask"][:, :, None].float()
      theirs.append(((hidden_BxLxE * m).sum(1) / m.sum(1)).numpy())
  theirs = np.concatenate(theirs)
  return np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) *
                                     np.linalg.norm(theirs, axis=1))


@pytest.mark.parametrize("packed", [False, True], ids=["padding", "packed"])
def test_cudnn_attention_equals_xla(packed, record_property):
  gap = attention_gap(packed)
  record_property("detail", f"max |d out| {gap['err_out']:.1e}, max |d grad| "
                            f"{gap['err_grad']:.1e} (grad scale {gap['grad_scale']:.1f})")
  assert gap["fused"], "the compiled program has no cuDNN fused-attention call"
  assert gap["err_out"] < ATTENTION_TOLERANCE, gap
  assert gap["err_grad"] < ATTENTION_TOLERANCE * max(1.0, gap["grad_scale"]), gap


def test_bf16_train_step_tracks_fp32(record_property):
  fp32, bf16 = train_losses("float32"), train_losses("bfloat16")
  gaps = [abs(a - b) / abs(a) for a, b in zip(fp32, bf16)]
  record_property("detail", f"{len(gaps)} steps, max relative loss gap {max(gaps):.2%}; loss "
                            f"{fp32[0]:.3f} -> {fp32[-1]:.3f} (fp32), -> {bf16[-1]:.3f} (bf16)")
  assert len(fp32) == len(bf16) == 20
  assert fp32[-1] < fp32[0]  # it trains at all
  assert max(gaps) < 0.02, gaps  # nan fails too


def test_bf16_embeddings_match_transformers(tmp_path, record_property):
  cos = embedding_cosines(str(tmp_path))
  record_property("detail", f"min cosine {cos.min():.4f} over {len(cos)} texts")
  assert cos.min() > 0.99, np.sort(cos)[:5]
