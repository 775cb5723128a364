r"""LoRA fine-tuning, side by side: `launch/finetune.py --config.lora.rank=8` against peft's LoRA.

  python bench/lora_vs_peft.py --model=HF_DIR [--epochs=3] [--train=F --validation=F]

All runs fine-tune the same Hugging Face BERT dir on the same labelled files (default: the
project's 3-class sentence-pair sample, `bert_jax.data.sample_pairs`) with one recipe:
LoRA rank 8, alpha 16, adapters on the attention query and value projections, no adapter
dropout, lr 5e-4, AdamW (eps 1e-6, weight decay 0.01 off biases and LayerNorm), batch 32,
10% linear warmup then linear decay, clip 1.0, dropout 0.1, max length 128, the same number
of steps, evaluation once at the end. Each run is its own subprocess:
- bert_jax LoRA: the user's command (`launch/finetune.py --config=configs/finetune.py
  --config.task=local --config.lora.rank=8 ...`);
- peft LoRA: `peft.get_peft_model(BertForSequenceClassification, LoraConfig(r=8,
  lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"))` in a plain torch
  loop (bench/finetune_common.py's optimizer, schedule and batches; timed around its steps);
- bert_jax full fine-tuning: the same command with `lora.rank=0` (same steps and lr), the
  figure the LoRA runs are compared against.
Printed per run: validation accuracy, training seq/s (bert_jax: its logged windows, compile
and evaluation excluded; torch: steps 2..N), trainable parameters, optimizer-state bytes
(bert_jax: the last checkpoint's optimizer state; torch: the optimizer's tensors), the peak
RSS of the whole process (`os.wait4`'s ru_maxrss) and wall time; then the ratios and the load.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path
import finetune_common as fc

RANK, ALPHA, TARGETS = 8, 16.0, ("query", "value")

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np, torch, transformers, peft
import finetune_common as fc
model_dir, train_path, eval_path, lr, steps, batch, length, seed, rank, alpha = sys.argv[1:11]
read = lambda p: [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]
train, evals = read(train_path), read(eval_path)
labels = sorted({r["label"] for r in train + evals})
tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
def encode(rows):
  enc = tok([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], truncation=True,
            max_length=int(length))
  return enc, np.asarray([labels.index(r["label"]) for r in rows])
(etr, ytr), (eev, yev) = encode(train), encode(evals)
def inputs(enc, y, rows):
  ids = fc.pad([enc["input_ids"][i] for i in rows])
  return dict(input_ids=ids, token_type_ids=fc.pad([enc["token_type_ids"][i] for i in rows]),
              attention_mask=(ids != 0).long(), labels=torch.tensor(y[rows]))
fc.RECIPE.update(learning_rate=float(lr), batch_size=int(batch), seed=int(seed))
fc.seed_torch()
model = transformers.BertForSequenceClassification.from_pretrained(model_dir,
                                                                   num_labels=len(labels))
model = peft.get_peft_model(model, peft.LoraConfig(
    r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, target_modules=["query", "value"],
    task_type="SEQ_CLS"))
steps = int(steps)
opt, schedule = fc.torch_optimizer(model, steps)
model.train()
batches = fc.shuffled_batches(len(train), int(batch), int(seed))
for step in range(steps):
  if step == 1:
    start = time.perf_counter()
  loss = model(**inputs(etr, ytr, next(batches))).loss
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), fc.RECIPE["max_grad_norm"])
  opt.step(); schedule.step(); opt.zero_grad(set_to_none=True)
seconds = time.perf_counter() - start
model.eval()
correct = 0
with torch.no_grad():
  for s in range(0, len(evals), 64):
    rows = np.arange(s, min(s + 64, len(evals)))
    correct += int((model(**inputs(eev, yev, rows)).logits.argmax(-1).numpy() == yev[rows]).sum())
opt_bytes = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                if torch.is_tensor(t) and t.ndim)
print(json.dumps({"seq_per_sec": (steps - 1) * int(batch) / seconds,
                  "eval_accuracy": correct / len(evals), "optimizer_state_bytes": opt_bytes,
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}))
"""


def run(cmd: list, env: dict, log: str) -> tuple[str, float, float]:
  """(stdout, wall seconds, peak RSS MiB of the whole process) of one child process; its
  output goes to LOG.out / LOG.err."""
  start = time.perf_counter()
  with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status):
    with open(log + ".err") as f:
      sys.exit(f"{' '.join(cmd[:3])} failed:\n{f.read()[-3000:]}")
  with open(log + ".out") as f:
    return f.read(), wall, usage.ru_maxrss / 1024  # KiB on Linux


def run_bert_jax(args, workdir: str, rank: int) -> dict:
  overrides = {"task": "local", "init_checkpoint": args.model, "train_file": args.train,
               "validation_file": args.validation, "max_seq_length": args.max_length,
               "num_train_steps": args.steps, "eval_every_steps": args.steps,
               "checkpoint_every_steps": args.steps, "batch_size": fc.RECIPE["batch_size"],
               "learning_rate": args.lr, "warmup_ratio": 0.1, "warmup_steps": -1,
               "log_every_steps": max(1, args.steps // 10), "seed": 0, "lora.rank": rank,
               "lora.alpha": ALPHA, "lora.targets": r"attention/(query|value)/kernel$"}
  cmd = common.launcher_command("finetune.py", workdir, "finetune.py", overrides)
  _, wall, peak = run(cmd, common.child_env(JAX_PLATFORMS="cpu"), workdir)
  rows = common.read_metrics(workdir)
  speeds = [r["seq_per_sec"] for r in common.speed_rows(rows)]
  evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
  state = _restore(os.path.join(workdir, "checkpoints", str(args.steps), "train_state"))
  params = _restore(os.path.join(workdir, "checkpoints", str(args.steps), "params"))
  from bert_jax import lora  # pylint: disable=g-import-not-at-top
  partition = lora.LORA if rank else lora.FULL
  trainable = sum(int(np.size(x)) for x in _leaves(partition.split(params)[0]))
  opt_bytes = sum(int(np.asarray(x).nbytes) for x in _leaves(state["opt_state"])
                  if np.ndim(x))
  return {"seq_per_sec": float(np.median(speeds)), "eval_accuracy": evals[-1], "wall_s": wall,
          "peak_rss_mib": peak, "optimizer_state_bytes": opt_bytes, "trainable": trainable}


def _restore(path: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_leaves(tree)


def run_peft(args, log: str) -> dict:
  cmd = [sys.executable, "-c", PEER_SCRIPT, args.model, args.train, args.validation,
         str(args.lr), str(args.steps), str(fc.RECIPE["batch_size"]), str(args.max_length), "0",
         str(RANK), str(ALPHA)]
  out, wall, peak = run(cmd, common.child_env(TOKENIZERS_PARALLELISM="false"), log)
  return dict(json.loads(out.strip().splitlines()[-1]), wall_s=wall, peak_rss_mib=peak)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="Hugging Face BERT dir to start from.")
  parser.add_argument("--train", default="")
  parser.add_argument("--validation", default="")
  parser.add_argument("--epochs", type=float, default=3.0)
  parser.add_argument("--lr", type=float, default=5e-4)
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--workdir", default="")
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="bench_lora_")
  os.makedirs(workdir, exist_ok=True)
  if not args.train:
    from bert_jax.data import sample_pairs  # pylint: disable=g-import-not-at-top
    paths = sample_pairs.write(os.path.join(workdir, "data"))
    args.train, args.validation = paths["train"], paths["validation"]
  with open(args.train, encoding="utf-8") as f:
    args.steps = fc.steps_for(sum(1 for line in f if line.strip()), args.epochs)
  load_before = common.load_line()
  results = {"peft LoRA": run_peft(args, os.path.join(workdir, "peft")),
             "bert_jax LoRA": run_bert_jax(args, os.path.join(workdir, "lora"), RANK),
             "bert_jax full": run_bert_jax(args, os.path.join(workdir, "full"), 0)}
  print(f"model {args.model}; train {args.train}; {args.steps} steps ({args.epochs:g} epochs) "
        f"of 32, lr {args.lr:g}, max length {args.max_length}; LoRA r={RANK} alpha={ALPHA:g} "
        f"on {'+'.join(TARGETS)}")
  print(f"{'run':15}{'accuracy':>10}{'seq/s':>9}{'trainable':>11}{'opt state':>12}"
        f"{'peak RSS':>11}{'wall':>8}")
  for name, r in results.items():
    print(f"{name:15}{r['eval_accuracy']:>10.4f}{r['seq_per_sec']:>9.1f}{r['trainable']:>11,}"
          f"{r['optimizer_state_bytes'] / 2**20:>9.2f} MiB{r['peak_rss_mib']:>7.0f} MiB"
          f"{r['wall_s']:>7.0f}s")
  ours, theirs, full = (results[k] for k in ("bert_jax LoRA", "peft LoRA", "bert_jax full"))
  print(f"bert_jax LoRA vs peft: accuracy {ours['eval_accuracy'] - theirs['eval_accuracy']:+.4f}, "
        f"speed {ours['seq_per_sec'] / theirs['seq_per_sec']:.2f}x; vs full fine-tuning: "
        f"accuracy {ours['eval_accuracy'] - full['eval_accuracy']:+.4f} (peft "
        f"{theirs['eval_accuracy'] - full['eval_accuracy']:+.4f}), speed "
        f"{ours['seq_per_sec'] / full['seq_per_sec']:.2f}x, optimizer state "
        f"{ours['optimizer_state_bytes'] / full['optimizer_state_bytes']:.4f}x")
  print(f"before: {load_before}; after: {common.load_line()}; workdir {workdir}")


if __name__ == "__main__":
  main()
