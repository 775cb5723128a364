"""configs/modern_tiny.py vs configs/tiny.py: held-out MLM accuracy at equal steps and seq/s.

Each runs `launch/pretrain.py` as a user would, one after the other, on the shipped
sample corpus with one vocabulary:
- classic tiny, its own recipe: NSP pairs, 15% masking;
- classic tiny on the modern recipe's data: packed rows (MLM only), 30% masking, the same
  rows and masks as the modern run (same seed), so the architecture is the one difference;
- modern tiny, its recipe: packed rows, 30% masking, warmup-stable-decay.
Accuracy is each run's held-out `eval_mlm_accuracy` on its own eval masks.

  python bench/modern_vs_classic_tiny.py [--steps=300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import common  # bench/common.py: puts this checkout's bert_jax first on the path

CORPUS = os.path.join(common.REPO, "bert_jax", "data", "sample_corpus.txt")


def _run(cmd: list[str]) -> None:
  done = subprocess.run(cmd, env=common.child_env(), capture_output=True, text=True, check=False)
  if done.returncode:
    sys.exit(f"{' '.join(cmd[:2])} failed:\n{done.stderr[-3000:]}")


def _prepare(work: str) -> dict[str, str]:
  vocab = os.path.join(work, "vocab")
  _run([sys.executable, os.path.join(common.REPO, "launch", "build_vocab.py"),
        f"--input={CORPUS}", f"--output={vocab}", "--vocab_size=4000", "--lowercase"])
  data = {}
  for mode in ("nsp", "packed"):
    data[mode] = os.path.join(work, f"data_{mode}")
    _run([sys.executable, os.path.join(common.REPO, "launch", "prepare_data.py"),
          f"--input={CORPUS}", f"--vocab={vocab}", f"--output={data[mode]}",
          "--max_seq_length=64", "--eval_fraction=0.05", f"--mode={mode}"])
  return data


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=300)
  args = parser.parse_args()
  print(common.load_line(), flush=True)
  results = {}
  with tempfile.TemporaryDirectory() as work:
    data = _prepare(work)
    packed_30 = dict(mask_rate=0.3, max_predictions_per_seq=20)
    for name, config, mode, extra in (("classic tiny", "tiny.py", "nsp", {}),
                                      ("classic tiny, packed 30%", "tiny.py", "packed", packed_30),
                                      ("modern tiny", "modern_tiny.py", "packed", {})):
      overrides = dict(train_data=data[mode], num_train_steps=args.steps,
                       eval_every_steps=args.steps, checkpoint_every_steps=args.steps,
                       warmup_steps=min(100, args.steps // 10), **extra)
      rows, wall = common.run_launcher("pretrain.py", os.path.join(work, f"run{len(results)}"),
                                       config, overrides, echo=True)
      evals = [r for r in rows if "eval_mlm_accuracy" in r]
      speed = [r["seq_per_sec"] for r in common.speed_rows(rows)]
      results[name] = dict(acc=evals[-1]["eval_mlm_accuracy"], seq_s=statistics.median(speed),
                           wall=wall, load=common.load_1m())
      print(f"{name}: step {evals[-1]['step']} eval_mlm_accuracy {results[name]['acc']:.4f} "
            f"median seq/s {results[name]['seq_s']:.0f} wall {wall:.0f}s "
            f"(load 1m {results[name]['load']})", flush=True)
  modern = results["modern tiny"]
  for name in ("classic tiny", "classic tiny, packed 30%"):
    print(f"modern / {name}: eval_mlm_accuracy {modern['acc'] / results[name]['acc']:.3f}x, "
          f"seq/s {modern['seq_s'] / results[name]['seq_s']:.3f}x")
  print(common.load_line())


if __name__ == "__main__":
  main()
