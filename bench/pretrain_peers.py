"""Pieces the pretraining benchmarks share: both sides of a bert_jax vs transformers step.

Why a module: bench/pretrain_vs_transformers.py (CPU) and bench/gpu_suite.py (GPU)
time the same two things, bert_jax's own train loop and transformers'
BertForPreTraining + torch AdamW, on the same batches; they differ only in
device, dtype and sizes. Importing this module does not pick a jax platform. The
machine's figures (matmul peak, load) and config loading are in bench/common.py.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from typing import Iterator, Optional

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path
from bert_jax.data import synthetic  # pylint: disable=g-bad-import-order
from bert_jax import train  # pylint: disable=g-bad-import-order


class PackedIterator:
  """SyntheticIterator rows cut into 2-4 packed sequences each (MLM only, no NSP).

  Adds `packing_ids` (1, 2, ... per sequence, 0 on padding) and `position_ids`
  restarting at each sequence, as bert_jax's packed pipeline does.
  """

  def __init__(self, base: synthetic.SyntheticIterator, seed: int = 0):
    self.base, self.seed = base, seed

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self.base))
    rs = np.random.default_rng([self.seed, self.base.index])
    real_BxL = batch["attention_mask"] > 0
    b, l = real_BxL.shape
    packing = np.zeros((b, l), np.int32)
    positions = np.zeros((b, l), np.int32)
    for row in range(b):
      n = int(real_BxL[row].sum())
      cuts = np.sort(rs.choice(np.arange(8, n - 8), size=rs.integers(1, 4), replace=False))
      bounds = [0, *cuts.tolist(), n]
      for s, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        packing[row, start:end] = s + 1
        positions[row, start:end] = np.arange(end - start)
    batch.update(packing_ids=packing, position_ids=positions)
    return batch

  def get_state(self) -> dict:
    return self.base.get_state()

  def set_state(self, state: dict) -> None:
    self.base.set_state(state)


def synthetic_data(config, vocab_size: int, packed: bool = False) -> tuple[train.Data, train.Spec]:
  """(`train.Data` of synthetic batches, their Spec); packed rows are MLM only (mode 'packed')."""
  data, spec = synthetic.synthetic_data(config, vocab_size=vocab_size, nsp=not packed)
  if packed:
    data = train.Data(train=PackedIterator(data.train))
  return data, spec


def run_bert_jax(config, data: tuple[train.Data, train.Spec],
                 trace_to: Optional[str] = None) -> dict:
  """bert_jax's own loop: the `seq_per_sec` of its last metrics.jsonl row (compile excluded).

  `trace_to` (a file name): three more steps after the timed ones run under
  `jax.profiler`, and their Perfetto trace (.json.gz) is moved there; the timed window
  does not include them."""
  timed = int(config.num_train_steps)
  hook = None
  if trace_to:
    import jax  # pylint: disable=g-import-not-at-top
    config = config.copy_and_resolve_references()
    config.num_train_steps = timed + 3
    trace_dir = tempfile.mkdtemp()

    def hook(step):  # step `timed` has been read (its row written) before this call
      if step == timed + 1:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir, data=data, step_hook=hook)
    rows = common.read_metrics(workdir)
  if trace_to:
    jax.profiler.stop_trace()
    found = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if found:
      shutil.move(found[0], trace_to)
    else:
      print(f"warning: jax.profiler wrote no Perfetto trace under {trace_dir}; {trace_to} not "
            "written", file=sys.stderr)
    shutil.rmtree(trace_dir, ignore_errors=True)
  last = [r for r in rows if "seq_per_sec" in r and r["step"] <= timed][-1]
  return {"seq_per_sec": last["seq_per_sec"], "mfu": last.get("mfu"), "loss": last["loss"],
          "losses": [r["loss"] for r in rows if "loss" in r]}


def torch_inputs(batch: dict[str, np.ndarray], device: str) -> dict:
  """A synthetic batch as BertForPreTraining/BertForMaskedLM keyword arguments."""
  import torch  # pylint: disable=g-import-not-at-top

  b, l = batch["input_ids"].shape
  labels = np.full((b, l), -100, np.int64)
  real = batch["masked_weights"] > 0
  rows = np.broadcast_to(np.arange(b)[:, None], real.shape)
  labels[rows[real], batch["masked_positions"][real]] = batch["masked_ids"][real]
  as_long = lambda x: torch.tensor(np.asarray(x), dtype=torch.long, device=device)
  inputs = dict(input_ids=as_long(batch["input_ids"]),
                token_type_ids=as_long(batch["token_type_ids"]), labels=as_long(labels))
  if "packing_ids" in batch:
    # Block-diagonal 4-D boolean mask (transformers passes it to SDPA as is); padding
    # queries see themselves, as in bert_jax.
    seg = torch.tensor(batch["packing_ids"], device=device)
    mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    mask |= torch.eye(l, dtype=torch.bool, device=device)[None]
    inputs.update(attention_mask=mask[:, None], position_ids=as_long(batch["position_ids"]))
  else:
    inputs["attention_mask"] = as_long(batch["attention_mask"])
  if "next_sentence_labels" in batch:
    inputs["next_sentence_label"] = as_long(batch["next_sentence_labels"])
  return inputs


def run_transformers(model_kwargs: dict, batch: dict[str, np.ndarray], steps: int, *,
                     device: str = "cpu", bf16_autocast: bool = False,
                     attn_implementation: Optional[str] = None, fused_adamw: bool = False,
                     threads: Optional[int] = None) -> dict:
  """transformers' pretraining model + torch AdamW on one batch; seq/s over steps - 1."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  if threads:
    torch.set_num_threads(threads)
  extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
  cfg = transformers.BertConfig(**model_kwargs, **extra)
  nsp = "next_sentence_labels" in batch
  model_cls = transformers.BertForPreTraining if nsp else transformers.BertForMaskedLM
  model = model_cls(cfg).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                          weight_decay=0.01, **({"fused": True} if fused_adamw else {}))
  inputs = torch_inputs(batch, device)
  rows = batch["input_ids"].shape[0]

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                        enabled=bf16_autocast):
      loss = model(**inputs).loss
    loss.backward()
    opt.step()
    return loss.detach()

  step()  # warm-up (allocations, first-touch, cuDNN/cuBLAS heuristics)
  if device.startswith("cuda"):
    torch.cuda.synchronize()
  t = time.perf_counter()
  for _ in range(steps - 1):
    loss = step()
  loss = float(loss)  # waits for the device
  elapsed = time.perf_counter() - t
  return {"seq_per_sec": (steps - 1) * rows / elapsed, "loss": loss}
