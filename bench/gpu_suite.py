r"""GPU suite: the GPU correctness tests, then bert_jax vs transformers + torch on one GPU.

  python bench/gpu_suite.py            # one NVIDIA GPU; jax[cuda], torch, transformers
  python bench/gpu_suite.py --smoke    # CPU, tiny sizes, a few steps: the suite's own test
  python bench/gpu_suite.py --skip_tests   # timing only
  python bench/gpu_suite.py --unpacked     # also fine-tuning with --config.pack=False
  python bench/gpu_suite.py --only=pretrain,embed   # some sections (tests,pretrain,embed,finetune)
  python bench/gpu_suite.py --only=pretrain --trace_dir=T  # + a profile of 3 more steps a row

Prints one table. First the correctness tests, `pytest -m gpu tests/test_gpu.py` in a
child process (cuDNN attention equals the XLA kernel with padding and with packed rows
and really is the fused cuDNN call; a bf16 train step tracks fp32; bf16 embeddings match
transformers'), one row per test with its figures; any failure stops the suite (exit 1)
with the failing test named. Without a GPU (--smoke) they are skipped, and say so.
Then throughput, both sides on the same GPU in the same run, each in its own process
(so neither holds the other's memory):
  - pretraining seq/s of BERT-base seq 128, BERT-large seq 128 and BERT-large
    seq 512 packed: bert_jax's own train loop (configs/bert_base.py,
    configs/bert_large.py: bf16, attention 'auto' = cuDNN, attention dropout 0
    as on every GPU by default) against transformers' BertForPreTraining (or
    BertForMaskedLM for packed rows, with a block-diagonal mask) with SDPA
    attention, bf16 autocast and fused AdamW; the ratio; MFU against the
    measured bf16 matmul peak and against the datasheet peak;
  - embedding tokens/s on variable-length text: bert_jax's Embedder against
    transformers' BertModel (SDPA, bf16 autocast, length-sorted batches), the
    second pass of each timed; the timed vectors must agree (min cosine > 0.99);
  - fine-tuning seq/s on short single sentences (~16 tokens, batch 32, max
    length 128, 300 steps; bench/gpu_finetune.py): the user's command
    (`launch/finetune.py --config=configs/finetune.py --config.task=local`,
    packed rows by default) on a random BERT-base HF dir, on a random
    ModernBERT-base-sized dir, and with LoRA (rank 8, alpha 16, query+value),
    each against a plain torch loop over transformers'
    AutoModelForSequenceClassification (peft's LoRA for the LoRA line) with
    dynamic padding, bf16 autocast, fused AdamW and clipping at 1.0; real
    (non-padding) tokens/s, padding fraction, peak device memory of both
    sides and MFU of the real tokens only (what a padding-free step computes).
    `--unpacked` adds bert_jax with `--config.pack=False` (same peer).

Targets on one H100/H200 (reported, not asserted): BERT-base seq 128 >= 6,000
seq/s; BERT-large seq 128 >= 1,800; BERT-large seq 512 packed >= 380;
embeddings >= 2x transformers; fine-tuning BERT-base on short single sentences
>= 1.5x the torch loop (issue 16's goal). The whole suite is sized to finish in
< 8 min (the fine-tuning lines about 2-3 min of it, not yet measured on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional
from xml.etree import ElementTree

import common  # bench/common.py: puts this checkout's bert_jax first on the path
import gpu_finetune  # pylint: disable=g-bad-import-order
from bert_jax import platform as platform_lib  # pylint: disable=g-bad-import-order

REPO = common.REPO
GPU_TESTS = os.path.join("tests", "test_gpu.py")
VOCAB = 30522
SECTIONS = ("tests", "pretrain", "embed", "finetune")  # --only's names, in the order run
TRACE_ENV = "GPU_SUITE_TRACE_DIR"  # --trace_dir, as the workers see it


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  config_file: str
  seq: int
  preds: int
  batch: int
  packed: bool
  target: Optional[float]  # seq/s on one H100/H200


CASES = (
    Case("BERT-base seq 128", "bert_base.py", 128, 20, 256, False, 6000),
    Case("BERT-large seq 128", "bert_large.py", 128, 20, 128, False, 1800),
    Case("BERT-large seq 512 packed", "bert_large.py", 512, 80, 32, True, 380),
)


def _sizes(smoke: bool) -> dict[str, Any]:
  if smoke:
    return dict(preset="tiny", steps=4, cases=tuple(
        dataclasses.replace(c, seq=min(c.seq, 64) if not c.packed else 128, batch=4,
                            preds=min(c.preds, 10)) for c in CASES),
        texts=48, peak_n=512, vocab=512)
  return dict(preset=None, steps=20, cases=CASES, texts=10000, peak_n=8192, vocab=VOCAB)


# ------------------------------------------------------------------ workers
# Each runs in its own process and prints one JSON line last.


def _jax_setup(smoke: bool):
  if smoke:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  else:
    platform_lib.set_performance_flags()
  import jax  # pylint: disable=g-import-not-at-top
  return jax


def _train_config(case: Case, sizes: dict, steps: int, dtype: str):
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  c = common.load_config(case.config_file)
  c.update(batch_size=case.batch, num_train_steps=steps, log_every_steps=steps,
           eval_every_steps=0, checkpoint_every_steps=10 ** 9, max_seq_length=case.seq,
           max_predictions_per_seq=case.preds, warmup_steps=10,
           dtype=model_lib.resolve_dtype(dtype))
  if sizes["preset"]:
    c.model.preset = sizes["preset"]
  return c


def worker_peak(smoke: bool) -> dict:
  jax = _jax_setup(smoke)
  from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  sizes = _sizes(smoke)
  kind = jax.devices()[0].device_kind
  return dict(device=kind, platform=jax.default_backend(),
              bf16_peak=common.measured_matmul_peak(
                  sizes["peak_n"], reps=5, dtype=jax.numpy.bfloat16, inner=1 if smoke else 10),
              datasheet_peak=metrics_lib.peak_flops_per_device(kind))


def worker_jax_pretrain(smoke: bool, index: int) -> dict:
  _jax_setup(smoke)
  import pretrain_peers  # pylint: disable=g-import-not-at-top
  sizes = _sizes(smoke)
  case = sizes["cases"][index]
  c = _train_config(case, sizes, sizes["steps"], "auto")
  trace_dir = os.environ.get(TRACE_ENV)
  out = pretrain_peers.run_bert_jax(
      c, pretrain_peers.synthetic_data(c, vocab_size=sizes["vocab"], packed=case.packed),
      trace_to=trace_dir and os.path.join(trace_dir, f"pretrain{index}.trace.json.gz"))
  return dict(seq_per_sec=out["seq_per_sec"], loss=out["loss"])


def _hf_sizes(preset: str) -> dict:
  """transformers.BertConfig sizes of a bert_jax model preset."""
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  p = model_lib.PRESETS[preset]
  return common.hf_sizes(p["num_layers"], p["hidden_size"], p["num_heads"],
                         p["intermediate_size"])


def worker_torch_pretrain(smoke: bool, index: int) -> dict:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # batches only; keep jax off the GPU
  import pretrain_peers  # pylint: disable=g-import-not-at-top
  sizes = _sizes(smoke)
  case = sizes["cases"][index]
  c = _train_config(case, sizes, sizes["steps"], "float32")
  batch = next(pretrain_peers.synthetic_data(c, vocab_size=sizes["vocab"],
                                             packed=case.packed)[0].train)
  out = pretrain_peers.run_transformers(
      dict(vocab_size=sizes["vocab"], **_hf_sizes(c.model.preset)), batch, sizes["steps"],
      device="cpu" if smoke else "cuda", bf16_autocast=not smoke, attn_implementation="sdpa",
      fused_adamw=not smoke)
  return dict(seq_per_sec=out["seq_per_sec"], loss=out["loss"])


def _embedding_texts(n: int, seed: int = 0) -> list[str]:
  """Variable-length texts (1 to 12 consecutive lines of the shipped sample corpus)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO, "bert_jax", "data", "sample_corpus.txt"), encoding="utf-8") as f:
    lines = [line.strip() for line in f if line.strip()]
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, len(lines) - 12, size=n)
  counts = rng.integers(1, 13, size=n)
  return [" ".join(lines[s:s + c]) for s, c in zip(starts, counts)]


def _embedding_model_dir(workdir: str, smoke: bool) -> str:
  """A random-weight BERT-base (tiny for --smoke) as a Hugging Face dir, vocab from the corpus."""
  import collections  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "hf_model")
  if os.path.exists(os.path.join(path, "config.json")):
    return path
  counts = collections.Counter(w for t in _embedding_texts(2000) for w in t.lower().split())
  words = [w for w, _ in counts.most_common(8000 if not smoke else 400)]
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  common.save_random_bert(path, len(vocab), _hf_sizes("tiny" if smoke else "base"))
  transformers.BertTokenizerFast(os.path.join(path, "vocab.txt"), do_lower_case=True
                                 ).save_pretrained(path)
  return path


def worker_jax_embed(smoke: bool, workdir: str) -> dict:
  _jax_setup(smoke)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  texts = _embedding_texts(_sizes(smoke)["texts"])
  pre = convert.from_pretrained(os.path.join(workdir, "hf_model"))
  embedder = inference.Embedder(pre, pooling="mean", max_seq_length=256,
                                tokens_per_batch=2048 if smoke else 32768)
  embedder.embed(texts)  # compiles each bucket
  t = time.perf_counter()
  vectors = embedder.embed(texts)
  elapsed = time.perf_counter() - t
  tokens = sum(len(r) for r in pre.tokenizer.encode_batch(texts, max_length=256,
                                                          padding="none")["input_ids"])
  np.save(os.path.join(workdir, "jax_vectors.npy"), vectors)
  return dict(tokens_per_sec=tokens / elapsed, tokens=tokens, dtype=embedder.dtype)


def worker_torch_embed(smoke: bool, workdir: str) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  device = "cpu" if smoke else "cuda"
  path = os.path.join(workdir, "hf_model")
  texts = _embedding_texts(_sizes(smoke)["texts"])
  tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
  model = transformers.BertModel.from_pretrained(path, attn_implementation="sdpa",
                                                 add_pooling_layer=False).to(device).eval()
  tokens_per_batch = 2048 if smoke else 32768

  def embed():
    enc = tokenizer(texts, truncation=True, max_length=256)["input_ids"]
    order = np.argsort([len(r) for r in enc])[::-1]
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    start = 0
    while start < len(order):
      width = len(enc[order[start]])
      rows = order[start:start + max(1, tokens_per_batch // width)]
      ids = np.zeros((len(rows), width), np.int64)
      mask = np.zeros_like(ids)
      for i, r in enumerate(rows):
        ids[i, :len(enc[r])], mask[i, :len(enc[r])] = enc[r], 1
      ids_t, mask_t = torch.tensor(ids, device=device), torch.tensor(mask, device=device)
      with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16,
                                                  enabled=not smoke):
        hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
      m = mask_t[:, :, None].float()
      out[rows] = ((hidden * m).sum(1) / m.sum(1)).cpu().numpy()
      start += len(rows)
    return out, sum(len(r) for r in enc)

  embed()
  t = time.perf_counter()
  vectors, tokens = embed()
  elapsed = time.perf_counter() - t
  np.save(os.path.join(workdir, "torch_vectors.npy"), vectors)
  return dict(tokens_per_sec=tokens / elapsed, tokens=tokens)


WORKERS = {"peak": worker_peak, "jax_pretrain": worker_jax_pretrain,
           "torch_pretrain": worker_torch_pretrain, "jax_embed": worker_jax_embed,
           "torch_embed": worker_torch_embed, **gpu_finetune.WORKERS}


# -------------------------------------------------------------------- driver


class SuiteFailure(Exception):
  pass


def _run_worker(name: str, smoke: bool, *args: str, timeout: int = 900) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={name}",
         *(["--smoke"] if smoke else []), *[f"--arg={a}" for a in args]]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                        env=common.child_env())
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
    raise SuiteFailure(f"{name} {' '.join(args)}: exit {proc.returncode}: {tail[0][:300]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run_gpu_tests(smoke: bool, timeout: int = 900) -> list[dict]:
  """`pytest -m gpu tests/test_gpu.py` in a child; one dict per test: name, status
  (PASS, FAIL or SKIP), detail (the figures the test recorded, or why it failed or skipped)."""
  with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, "gpu_tests.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           f"--junitxml={report}", GPU_TESTS]
    env = common.child_env(**({"JAX_PLATFORMS": "cpu"} if smoke else {}))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    cases = (list(ElementTree.parse(report).getroot().iter("testcase"))
             if os.path.exists(report) else [])
  if proc.returncode not in (0, 1) or not cases:  # 1 = some test failed: the rows say which
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
    raise SuiteFailure(f"pytest {GPU_TESTS}: exit {proc.returncode}: {tail[0][:300]}")
  rows = []
  for case in cases:
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
    status = {None: "PASS", "skipped": "SKIP"}.get(getattr(outcome, "tag", None), "FAIL")
    why = "" if outcome is None else (outcome.get("message") or "").split("\n")[0][:300]
    detail = "; ".join(d for d in (props.get("detail"), why) if d)
    rows.append(dict(name=case.get("name"), status=status, detail=detail))
  return rows


def _fmt(x: Optional[float], spec: str = ",.0f") -> str:
  return "n/a" if x is None else format(x, spec)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, a few steps")
  parser.add_argument("--skip_tests", action="store_true",
                      help=f"timing only: do not run `pytest -m gpu {GPU_TESTS}` first")
  parser.add_argument("--unpacked", action="store_true",
                      help="also the fine-tuning line with --config.pack=False (about 1 min)")
  parser.add_argument("--only", default=",".join(SECTIONS),
                      help=f"comma-separated sections to run, of {','.join(SECTIONS)} (the "
                           "whole suite overran 9 min on an H200: split it across calls)")
  parser.add_argument("--trace_dir", default="",
                      help="write a jax.profiler (Perfetto) trace of 3 steps after each bert_jax "
                           "pretraining row's timed ones here, as pretrain<N>.trace.json.gz")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  only = {x.strip() for x in args.only.split(",") if x.strip()}
  if not only or only - set(SECTIONS):
    parser.error(f"--only={args.only}: sections are {','.join(SECTIONS)}")
  if args.skip_tests:
    only.discard("tests")
  if args.trace_dir:
    os.makedirs(args.trace_dir, exist_ok=True)
    os.environ[TRACE_ENV] = os.path.abspath(args.trace_dir)  # the workers inherit it
  if args.worker:
    fn = WORKERS[args.worker]
    extra = [int(a) if a.isdigit() else a for a in args.arg]
    print(json.dumps(fn(args.smoke, *extra)))
    return 0

  from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  sizes = _sizes(args.smoke)
  started = time.time()
  table: list[tuple[str, ...]] = []
  header = ("row", "status / bert_jax", "transformers", "ratio", "MFU meas.", "MFU sheet",
            "target", "detail")

  def echo(row: tuple) -> None:  # a finished row in full, so a cut-off run keeps its figures
    print("  " + " | ".join(str(c) for c in row if c != ""), flush=True)

  def show():
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header) - 1)]
    for r in [header, *table]:
      print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]))
    print(f"load average {os.getloadavg()[0]:.2f}; {time.time() - started:.0f} s")

  try:
    peak = _run_worker("peak", args.smoke)
    print(f"device {peak['device']} ({peak['platform']}); measured bf16 matmul peak "
          f"{peak['bf16_peak'] / 1e12:.1f} TFLOP/s; datasheet "
          f"{_fmt(peak['datasheet_peak'] and peak['datasheet_peak'] / 1e12, '.0f')} TFLOP/s"
          f"{'  [--smoke: CPU, tiny sizes]' if args.smoke else ''}", flush=True)
    if "tests" in only:
      rows = run_gpu_tests(args.smoke)
      table.extend((r["name"], r["status"], "", "", "", "", "", r["detail"]) for r in rows)
      failed = [r for r in rows if r["status"] == "FAIL"]
      if failed:
        raise SuiteFailure("correctness test failed: " + "; ".join(
            f"{r['name']}: {r['detail']}" for r in failed))
      print(f"  pytest -m gpu {GPU_TESTS}: " + ", ".join(
          f"{sum(r['status'] == s for r in rows)} {s}" for s in ("PASS", "SKIP")), flush=True)
    for index, case in enumerate(sizes["cases"] if "pretrain" in only else ()):
      ours = _run_worker("jax_pretrain", args.smoke, str(index))
      theirs = _run_worker("torch_pretrain", args.smoke, str(index))
      c = _train_config(case, sizes, 1, "float32")
      flops = metrics_lib.pretraining_flops_per_sequence(
          model_lib.BertConfig.preset(c.model.preset, vocab_size=sizes["vocab"]), case.seq,
          case.preds, with_nsp=not case.packed)
      sheet = peak["datasheet_peak"]
      table.append((
          f"pretrain {case.name} (batch {case.batch}{', ' + c.model.preset if args.smoke else ''})",
          f"{ours['seq_per_sec']:,.1f} seq/s", f"{theirs['seq_per_sec']:,.1f} seq/s",
          f"{ours['seq_per_sec'] / theirs['seq_per_sec']:.2f}x",
          f"{ours['seq_per_sec'] * flops / peak['bf16_peak']:.1%}",
          "n/a" if not sheet else f"{ours['seq_per_sec'] * flops / sheet:.1%}",
          f">= {case.target:,.0f}" if case.target else "",
          f"transformers MFU {theirs['seq_per_sec'] * flops / peak['bf16_peak']:.1%} meas.; "
          f"loss {ours['loss']:.2f} vs {theirs['loss']:.2f}"))
      echo(table[-1])
    if "embed" in only:
      _embed_row(args.smoke, table)
      echo(table[-1])
    if "finetune" in only:
      with tempfile.TemporaryDirectory() as workdir:
        table.extend(gpu_finetune.rows(args.smoke, args.unpacked, workdir, _run_worker, echo,
                                       peak))
  except (SuiteFailure, subprocess.TimeoutExpired) as e:
    show()
    print(f"FAILED: {e}", file=sys.stderr)
    return 1
  show()
  return 0


def _embed_row(smoke: bool, table: list) -> None:
  """Appends the embedding row to `table`; SuiteFailure if the timed vectors disagree."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as workdir:
    _embedding_model_dir(workdir, smoke)
    ours = _run_worker("jax_embed", smoke, workdir)
    theirs = _run_worker("torch_embed", smoke, workdir)
    a = np.load(os.path.join(workdir, "jax_vectors.npy"))
    b = np.load(os.path.join(workdir, "torch_vectors.npy"))
    gap = common.compare_vectors(a, b)
  table.append((f"embed {len(a)} variable-length texts", f"{ours['tokens_per_sec']:,.0f} tok/s",
                f"{theirs['tokens_per_sec']:,.0f} tok/s",
                f"{ours['tokens_per_sec'] / theirs['tokens_per_sec']:.2f}x", "", "", ">= 2x",
                f"{ours['tokens']:,} tokens, second pass timed; timed vectors: min cosine "
                f"{gap['min_cosine']:.4f} (bert_jax {ours['dtype']})"))
  if not gap["min_cosine"] > 0.99:  # timing a wrong answer means nothing
    raise SuiteFailure(f"the timed embeddings disagree: min cosine {gap['min_cosine']:.4f}")


if __name__ == "__main__":
  sys.exit(main())
