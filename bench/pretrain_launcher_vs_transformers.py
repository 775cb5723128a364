r"""BERT-base pretraining as a user runs it: `launch/pretrain.py --config=configs/bert_base.py` on
prepared real text, against transformers' BertForPreTraining on the same batches.

  python bench/pretrain_launcher_vs_transformers.py [--workdir=DIR] [--steps=3] [--runs=1]
      [--batch_size=256] [--peer_micro_batch=8]

What runs:
- real English text: paragraphs of the Python stdlib's docstrings (bench/common.py,
  `stdlib_lines`), 8 consecutive paragraphs to a document, one
  sentence per line; a WordPiece vocab trained on it (`launch/build_vocab.py`; the text only
  supports ~10k pieces, so `[unusedN]` entries fill it to BERT's 30,522, the size that sets the
  embedding and decoder cost) and 128-token MLM+NSP data (`launch/prepare_data.py`), as in the
  config's docstring;
- bert_jax: the launcher with the shipped config, overriding only the data path, the run length
  and the log period (plus `peak_flops_per_device` so the loop logs MFU against this CPU's
  measured matmul peak). Its figure is the `seq_per_sec` the loop logs, averaged over the
  steps after the first (which compiles). On CPU `grad_accum_steps=0` (auto) runs the batch of
  256 as micro-batches of 4 rows;
- transformers: BertForPreTraining (same sizes and vocab, SDPA attention, fp32) with torch
  AdamW, gradient clipping at 1.0 and the same warmup, on the same global batches read through
  bert_jax's input pipeline, accumulating micro-batches of `--peer_micro_batch` rows (8 was its
  fastest of 4, 8, 16 and 32 on 2 cores; a batch of 256 does not fit memory whole). Timed around
  whole optimizer steps after the first.
MFU for both is the same model-FLOPs count (matmuls, the MLM decoder at the 20 masked positions;
transformers' decoder also runs at the other 108 positions, which this count leaves out) over
the measured matmul peak. Prints one line per side and the ratio; `--runs=N` alternates the
sides N times (bert_jax first in odd runs, transformers first in even ones) and ends with the
spread of the ratios, since either side's speed moves between runs on a shared machine. One run
of 3 steps takes ~12-15 minutes on 2 cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common  # bench/common.py: puts this checkout's bert_jax first on the path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # both sides on this machine's CPU
REPO = common.REPO
SEQ = 128


def write_corpus(path: str, num_paragraphs: int, per_document: int = 8) -> int:
  """Docstring paragraphs, `per_document` to a document, one sentence per line, a blank line
  between documents; returns the number of documents."""
  import re  # pylint: disable=g-import-not-at-top
  paragraphs = common.stdlib_lines(num_paragraphs)
  docs = [paragraphs[i:i + per_document] for i in range(0, len(paragraphs), per_document)]
  with open(path, "w", encoding="utf-8") as f:
    for doc in docs:
      sentences = [s for text in doc for s in re.split(r"(?<=[.!?])\s+", text) if s]
      f.write("\n".join(sentences) + "\n\n")
  return len(docs)


def pad_vocab(vocab_dir: str, size: int = 30522) -> int:
  """Appends `[unusedN]` entries up to `size` (BERT's own vocab has [unused0..993])."""
  path = os.path.join(vocab_dir, "vocab.txt")
  with open(path, encoding="utf-8") as f:
    pieces = f.read().split("\n")[:-1]
  with open(path, "a", encoding="utf-8") as f:
    for i in range(size - len(pieces)):
      f.write(f"[unused{i}]\n")
  return len(pieces)


def prepare(workdir: str, paragraphs: int) -> str:
  data = os.path.join(workdir, "data")
  if os.path.isdir(data):
    return data
  corpus = os.path.join(workdir, "corpus.txt")
  docs = write_corpus(corpus, paragraphs)
  vocab = os.path.join(workdir, "vocab")
  common.timed([sys.executable, os.path.join(REPO, "launch", "build_vocab.py"),
                f"--input={corpus}", f"--output={vocab}", "--vocab_size=30522",
                "--kind=wordpiece", "--lowercase", "--overwrite"])
  trained = pad_vocab(vocab)
  common.timed([sys.executable, os.path.join(REPO, "launch", "prepare_data.py"),
                f"--input={corpus}", f"--vocab={vocab}", f"--output={data}",
                f"--max_seq_length={SEQ}"])
  print(f"prepared {docs} docstring documents into {data} (vocab: {trained} trained pieces "
        "+ [unusedN] up to 30522)", flush=True)
  return data


def run_bert_jax(workdir: str, data: str, steps: int, batch_size: int, peak: float) -> dict:
  run_dir = os.path.join(workdir, "run")
  shutil.rmtree(run_dir, ignore_errors=True)
  overrides = {"train_data": data, "num_train_steps": steps, "log_every_steps": 1,
               "peak_flops_per_device": peak}
  if batch_size:
    overrides["batch_size"] = batch_size
  rows, elapsed = common.run_launcher("pretrain.py", run_dir, "bert_base.py", overrides,
                                      echo=True)
  timed = common.speed_rows(rows)
  seq_per_sec = sum(r["seq_per_sec"] for r in timed) / len(timed)
  return {"seq_per_sec": seq_per_sec, "mfu": sum(r["mfu"] for r in timed) / len(timed),
          "per_step": [round(r["seq_per_sec"], 3) for r in timed], "wall_s": elapsed,
          "loss": rows[-1].get("loss")}


def run_transformers(data: str, steps: int, batch_size: int, micro: int) -> dict:
  """The peer, in this (child) process: same batches, same optimizer recipe."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import pretrain_peers  # pylint: disable=g-import-not-at-top
  from bert_jax import tasks as tasks_lib  # pylint: disable=g-import-not-at-top

  config = common.load_config("bert_base.py")
  config.train_data = data
  if batch_size:
    config.batch_size = batch_size
  batch_size = config.batch_size
  stream, spec = tasks_lib.make_data(config)
  vocab_size = spec.vocab_size
  batches = [next(stream.train) for _ in range(steps)]
  if hasattr(stream.train, "close"):
    stream.train.close()
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  model = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=vocab_size, max_position_embeddings=512)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                          betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps,
                          weight_decay=config.weight_decay)
  warmup = config.warmup_steps
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
  if batch_size % micro:
    sys.exit(f"--peer_micro_batch={micro} must divide the batch of {batch_size}")

  def step(batch):
    opt.zero_grad(set_to_none=True)
    inputs = pretrain_peers.torch_inputs(batch, "cpu")
    for i in range(0, batch_size, micro):
      part = {k: v[i:i + micro] for k, v in inputs.items()}
      (model(**part).loss * (micro / batch_size)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    opt.step()
    sched.step()

  times = []
  for batch in batches:
    start = time.perf_counter()
    step(batch)
    times.append(time.perf_counter() - start)
  timed = np.asarray(times[1:])
  return {"seq_per_sec": float(batch_size / timed.mean()), "vocab_size": vocab_size,
          "torch": torch.__version__,
          "per_step": [round(batch_size / t, 3) for t in timed]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default=None, help="Keep files here (default: a temp dir).")
  parser.add_argument("--steps", type=int, default=3, help="optimizer steps per side (1 warm-up)")
  parser.add_argument("--batch_size", type=int, default=0, help="0 = the shipped config's (256)")
  parser.add_argument("--peer_micro_batch", type=int, default=8)
  parser.add_argument("--runs", type=int, default=1, help="alternating pairs of runs")
  parser.add_argument("--paragraphs", type=int, default=40000, help="docstring paragraphs")
  parser.add_argument("--peer", default="", help=argparse.SUPPRESS)  # child mode: DATA dir
  args = parser.parse_args()
  if args.runs < 1 or args.steps < 2:
    parser.error("--runs must be >= 1 and --steps >= 2 (the first step compiles)")
  if args.peer:
    print(json.dumps(run_transformers(args.peer, args.steps, args.batch_size,
                                      args.peer_micro_batch)))
    return
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from bert_jax.model import BertConfig  # pylint: disable=g-import-not-at-top

  workdir = args.workdir or tempfile.mkdtemp(prefix="bert_jax_pretrain_bench_")
  os.makedirs(workdir, exist_ok=True)
  peak = common.measured_matmul_peak()
  flops = metrics_lib.pretraining_flops_per_sequence(BertConfig.preset("base"), SEQ, 20)
  print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; measured fp32 matmul "
        f"peak {peak / 1e9:.1f} GFLOP/s; load {os.getloadavg()[0]:.2f}", flush=True)
  data = prepare(workdir, args.paragraphs)
  ratios = []
  for run in range(args.runs):
    got, order = common.alternate(run, {  # each side's result with the load just after it
        "bert_jax": lambda: dict(run_bert_jax(workdir, data, args.steps, args.batch_size, peak),
                                 load=common.load_1m()),
        "transformers": lambda: dict(run_peer(data, args), load=common.load_1m())})
    ours, theirs = got["bert_jax"], got["transformers"]
    if args.runs > 1:
      print(f"run {run + 1} of {args.runs} ({order[0]} first)", flush=True)
    print(f"bert_jax      : {ours['seq_per_sec']:.3f} seq/s  MFU {ours['mfu']:.3f}  per step "
          f"{ours['per_step']}  (whole command {ours['wall_s']:.0f} s; load {ours['load']:.2f})")
    print(f"transformers  : {theirs['seq_per_sec']:.3f} seq/s  MFU "
          f"{theirs['seq_per_sec'] * flops / peak:.3f}  per step {theirs['per_step']}  (torch "
          f"{theirs['torch']}, micro-batches of {args.peer_micro_batch}, vocab "
          f"{theirs['vocab_size']}; load {theirs['load']:.2f})")
    ratios.append(ours["seq_per_sec"] / theirs["seq_per_sec"])
    print(f"ratio bert_jax / transformers: {ratios[-1]:.2f}x", flush=True)
  if args.runs > 1:
    print(f"ratios over {args.runs} alternating runs: "
          f"{' / '.join(f'{r:.2f}x' for r in ratios)} (min {min(ratios):.2f}x, "
          f"median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x)")


def run_peer(data: str, args) -> dict:
  """The transformers side in a child process (torch and jax never share one)."""
  done = subprocess.run([sys.executable, os.path.abspath(__file__), f"--peer={data}",
                         f"--steps={args.steps}", f"--batch_size={args.batch_size}",
                         f"--peer_micro_batch={args.peer_micro_batch}"],
                        capture_output=True, text=True, check=False)
  if done.returncode:
    sys.exit(f"transformers side failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
  main()
