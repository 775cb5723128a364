r"""How pretraining cost grows on CPU: batch size, sequence length and device count.

  python bench/cpu_scaling.py [--out=docs] [--steps=6] [--preset=mini]

Each point is one child process running bert_jax's own train loop
(`train.train_and_evaluate`, configs/default.py with model.preset=mini: 4 layers,
hidden 256, 4 heads; MLM+NSP, AdamW, fp32, 30,522-token vocab, synthetic
batches, max_predictions 15% of the length) for `--steps` steps; it reports the
`seq_per_sec` the loop logs (compile step excluded) and its own peak RSS. Three
sweeps:
  1. batch 4, 8, 16, 32 at length 128;
  2. length 128, 256, 512 at batch 8;
  3. 1, 2, 4, 8 devices at batch 16, length 128: a data-parallel mesh of
     simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N,
     one per child). The devices share the same cores, so this measures the
     overhead of sharding the step, not a speed-up.
Prints one JSON line per point (with the load average and the measured fp32
matmul peak) and writes cpu_scaling.png and cpu_scaling.json to --out.
Needs matplotlib (the `test` extra). `--replot` redraws the PNG from the JSON.
"""

import argparse
import json
import os
import subprocess
import sys

import common  # bench/common.py: puts this checkout's bert_jax first on the path

REPO = common.REPO
VOCAB = 30522

CHILD = r"""
import json, os, resource, sys
import common, pretrain_peers  # bench/ and the repo on PYTHONPATH (common.child_env)
from bert_jax.data import synthetic
batch, seq, steps, preset = {batch}, {seq}, {steps}, {preset!r}
c = common.load_config("default.py")
c.model.preset = preset
c.update(dtype="float32", batch_size=batch, num_train_steps=steps, log_every_steps=steps,
         eval_every_steps=0, checkpoint_every_steps=10 ** 9, max_seq_length=seq,
         max_predictions_per_seq=max(1, seq * 15 // 100), warmup_steps=10)
out = pretrain_peers.run_bert_jax(c, synthetic.synthetic_data(c, vocab_size={vocab}))
import jax
print(json.dumps(dict(seq_per_sec=out["seq_per_sec"], devices=jax.device_count(),
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def point(batch: int, seq: int, steps: int, preset: str, devices: int = 1) -> dict:
  flags = os.environ.get("XLA_FLAGS", "")
  env = common.child_env(JAX_PLATFORMS="cpu", XLA_FLAGS=(
      f"{flags} --xla_force_host_platform_device_count={devices}".strip()))
  code = CHILD.format(batch=batch, seq=seq, steps=steps, preset=preset, vocab=VOCAB)
  done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        check=False)
  if done.returncode:
    sys.exit(f"point batch={batch} seq={seq} devices={devices} failed:\n{done.stderr[-3000:]}")
  row = json.loads(done.stdout.strip().splitlines()[-1])
  row.update(batch=batch, seq=seq, load_average_1m=common.load_1m(),
             tokens_per_sec=row["seq_per_sec"] * seq)
  print(json.dumps(row), flush=True)
  return row


def plot(rows: dict, peak: float, preset: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  loads = [r["load_average_1m"] for rs in rows.values() for r in rs]
  fig.suptitle(f"bert_jax pretraining on CPU (BERT-{preset}, fp32, {os.cpu_count()} cores, "
               f"matmul peak {peak / 1e9:.0f} GFLOP/s, load {min(loads):.1f}-{max(loads):.1f})")
  for ax, key, x, label in ((axes[0], "batch", "batch", "batch size (length 128)"),
                            (axes[1], "seq", "seq", "sequence length (batch 8)")):
    rs = rows[key]
    xs = [r[x] for r in rs]
    ax.plot(xs, [r["tokens_per_sec"] for r in rs], "o-", color="C0")
    ax.set_xlabel(label)
    ax.set_ylabel("tokens / s", color="C0")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(xs, [r["peak_rss_mib"] for r in rs], "s--", color="C1")
    twin.set_ylabel("peak RSS (MiB)", color="C1")
    twin.set_ylim(bottom=0)
  rs = rows["devices"]
  xs = [r["devices"] for r in rs]
  axes[2].plot(xs, [r["seq_per_sec"] for r in rs], "o-")
  axes[2].set_xlabel("simulated CPU devices (batch 16, len 128)")
  axes[2].set_ylabel("sequences / s")
  axes[2].set_title("data-parallel mesh on the same cores: overhead", fontsize=9)
  axes[2].set_xscale("log", base=2)
  axes[2].set_xticks(xs, [str(v) for v in xs])
  axes[2].set_ylim(bottom=0)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(REPO, "docs"))
  parser.add_argument("--steps", type=int, default=6, help="train steps per point (1 compiles)")
  parser.add_argument("--preset", default="mini")
  parser.add_argument("--replot", action="store_true", help="Redraw the PNG from --out's JSON.")
  args = parser.parse_args()
  if args.replot:
    with open(os.path.join(args.out, "cpu_scaling.json"), encoding="utf-8") as f:
      saved = json.load(f)
    plot({k: saved[k] for k in ("batch", "seq", "devices")}, saved["matmul_peak_gflops"] * 1e9,
         saved["preset"], os.path.join(args.out, "cpu_scaling.png"))
    return
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  peak = common.measured_matmul_peak()
  print(f"{os.cpu_count()} CPUs; measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
        f"load {os.getloadavg()[0]:.2f}", flush=True)
  rows = {"batch": [point(b, 128, args.steps, args.preset) for b in (4, 8, 16, 32)],
          "seq": [point(8, s, args.steps, args.preset) for s in (128, 256, 512)],
          "devices": [point(16, 128, args.steps, args.preset, n) for n in (1, 2, 4, 8)]}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "cpu_scaling.json"), "w", encoding="utf-8") as f:
    json.dump({"matmul_peak_gflops": peak / 1e9, "preset": args.preset, "steps": args.steps,
               "cpu_count": os.cpu_count(), **rows}, f, indent=1)
  plot(rows, peak, args.preset, os.path.join(args.out, "cpu_scaling.png"))
  print(f"wrote {os.path.join(args.out, 'cpu_scaling.png')}")


if __name__ == "__main__":
  main()
