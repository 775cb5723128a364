r"""Fine-tuning, side by side: `launch/finetune.py` against transformers' own Trainer.

  python bench/finetune_vs_transformers.py --model=HF_DIR [--train=F --validation=F]
  python bench/finetune_vs_transformers.py --model=HF_DIR --random_init=6x384   # speed at scale

Both sides fine-tune the same Hugging Face BERT dir on the same labelled files with
the same recipe (configs/finetune.py: AdamW lr 2e-5, weight decay 0.01 off biases and
LayerNorm, eps 1e-6, batch 32, 3 epochs, 10% linear warmup then linear decay, clip 1.0,
dropout 0.1, max length 128), evaluating once per epoch:
- bert_jax: the user's command, `launch/finetune.py --config=configs/finetune.py
  --config.task=local ...`, in a subprocess (length buckets, one compiled shape each);
- transformers: `Trainer` with `DataCollatorWithPadding` (dynamic padding to the longest
  row of each batch), in a subprocess, on the CPU build of torch.
Printed: validation accuracy of both (last epoch), training seq/s of both (bert_jax:
its logged windows; transformers: `train_samples_per_second`, which includes the Trainer's
per-step overhead and its per-epoch evaluation), whole-command wall time, their ratios, the
load average and this machine's measured fp32 matmul rate. A third line runs the same model
and recipe in a plain torch loop (bench/finetune_common.py, timed around its steps only):
the fastest transformers figure, free of Trainer overhead. The matmul rate is
bench/common.py's `measured_matmul_peak` (2048^2 fp32, best of 10).

Defaults: the files of `bert_jax.data.sample_pairs` (3 classes, written into the workdir).
`--random_init=LxH` replaces the model's weights by a random BERT of L layers and width
H (4H feed-forward, H/64 heads) with the same vocabulary, for speed at a given size.
Needs transformers, torch and accelerate (`pip install 'bert_jax[bench]'`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common  # bench/common.py: puts this checkout's bert_jax first on the path

PEER_SCRIPT = r"""
import json, sys
import numpy as np, torch, transformers
mode, model_dir, train_path, eval_path, out_dir, lr, epochs, batch, length, seed = sys.argv[1:11]
read = lambda p: [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]
train, evals = read(train_path), read(eval_path)
labels = sorted({r["label"] for r in train + evals})
tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
pair = "sentence2" in train[0]
def encode(rows):
  a = [r["sentence1" if pair else "sentence"] for r in rows]
  b = [r["sentence2"] for r in rows] if pair else None
  return tok(a, b, truncation=True, max_length=int(length)), np.asarray(
      [labels.index(r["label"]) for r in rows])
(etr, ytr), (eev, yev) = encode(train), encode(evals)
if mode == "trainer":  # transformers' own loop: Trainer + DataCollatorWithPadding
  rows = lambda enc, y: [dict({k: v[i] for k, v in enc.items()}, labels=int(y[i]))
                         for i in range(len(y))]
  model = transformers.BertForSequenceClassification.from_pretrained(
      model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
      label2id={l: i for i, l in enumerate(labels)})
  args = transformers.TrainingArguments(
      output_dir=out_dir, per_device_train_batch_size=int(batch), per_device_eval_batch_size=64,
      learning_rate=float(lr), num_train_epochs=float(epochs), warmup_steps=0.1,  # a ratio
      weight_decay=0.01, adam_epsilon=1e-6, lr_scheduler_type="linear", max_grad_norm=1.0,
      eval_strategy="epoch", save_strategy="no", report_to=[], logging_steps=50,
      seed=int(seed), use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
  accuracy = lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}
  trainer = transformers.Trainer(model=model, args=args, train_dataset=rows(etr, ytr),
                                 eval_dataset=rows(eev, yev), compute_metrics=accuracy,
                                 data_collator=transformers.DataCollatorWithPadding(tok))
  out = trainer.train()
  seen = [r["eval_accuracy"] for r in trainer.state.log_history if "eval_accuracy" in r]
  print(json.dumps({"train_seq_per_sec": out.metrics["train_samples_per_second"],
                    "eval_accuracy": seen[-1], "evals": seen}))
  sys.exit(0)
import finetune_common as fc  # a plain torch loop, timed around its steps (bench/ on PYTHONPATH)
fc.RECIPE.update(learning_rate=float(lr), batch_size=int(batch), seed=int(seed))
def inputs(enc, y, rows):
  ids = fc.pad([enc["input_ids"][i] for i in rows])
  return dict(input_ids=ids, token_type_ids=fc.pad([enc["token_type_ids"][i] for i in rows]),
              attention_mask=(ids != 0).long(), labels=torch.tensor(y[rows]))
fc.seed_torch()
model = transformers.BertForSequenceClassification.from_pretrained(model_dir,
                                                                   num_labels=len(labels))
speed = fc.torch_train(model, lambda rows: inputs(etr, ytr, rows), len(train),
                       fc.steps_for(len(train), float(epochs)))
correct = 0
with torch.no_grad():
  for start in range(0, len(evals), 64):
    rows = np.arange(start, min(start + 64, len(evals)))
    correct += int((model(**inputs(eev, yev, rows)).logits.argmax(-1).numpy() == yev[rows]).sum())
print(json.dumps({"train_seq_per_sec": speed, "eval_accuracy": correct / len(evals)}))
"""


def random_model(source: str, spec: str, out: str) -> str:
  """A random-init BERT of `spec` (LxH) with `source`'s vocabulary, as an HF dir."""
  import transformers  # pylint: disable=g-import-not-at-top
  layers, hidden = (int(x) for x in spec.lower().split("x"))
  common.save_random_bert(out, transformers.BertConfig.from_pretrained(source).vocab_size,
                          common.hf_sizes(layers, hidden))
  for name in ("vocab.txt", "tokenizer_config.json"):
    if os.path.exists(os.path.join(source, name)):
      shutil.copy(os.path.join(source, name), out)
  return out


def run_ours(args, model: str, workdir: str) -> dict:
  overrides = {"task": "local", "init_checkpoint": model, "train_file": args.train,
               "validation_file": args.validation, "learning_rate": args.lr,
               "num_epochs": args.epochs, "batch_size": args.batch_size,
               "max_seq_length": args.max_length, "seed": args.seed, "log_every_steps": 10}
  rows, wall = common.run_launcher("finetune.py", os.path.join(workdir, "bert_jax"),
                                   "finetune.py", overrides)
  speeds = [r["seq_per_sec"] for r in common.speed_rows(rows)]
  evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
  return {"wall_s": wall, "train_seq_per_sec": sum(speeds) / len(speeds),
          "eval_accuracy": evals[-1], "evals": evals}


def run_peer(mode: str, args, model: str, workdir: str) -> dict:
  """transformers' side in a subprocess: 'trainer' (Trainer) or 'loop' (plain torch loop)."""
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", PEER_SCRIPT, mode, model, args.train,
                         args.validation, os.path.join(workdir, mode), str(args.lr),
                         str(args.epochs), str(args.batch_size), str(args.max_length),
                         str(args.seed)],
                        capture_output=True, text=True, check=False,
                        env=common.child_env(TOKENIZERS_PARALLELISM="false"))
  wall = time.perf_counter() - start
  if proc.returncode:
    sys.exit(f"transformers ({mode}) failed:\n{proc.stderr[-3000:]}")
  return dict(json.loads(proc.stdout.strip().splitlines()[-1]), wall_s=wall)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="Hugging Face BERT dir to start from.")
  parser.add_argument("--random_init", default="", help="LxH: random weights of this size.")
  parser.add_argument("--train", default="")
  parser.add_argument("--validation", default="")
  parser.add_argument("--epochs", type=float, default=3.0)
  parser.add_argument("--lr", type=float, default=2e-5)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="")
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="bench_finetune_")
  if not args.train:
    from bert_jax.data import sample_pairs  # pylint: disable=g-import-not-at-top
    paths = sample_pairs.write(os.path.join(workdir, "data"))
    args.train, args.validation = paths["train"], paths["validation"]
  model = args.model
  if args.random_init:
    model = random_model(args.model, args.random_init, os.path.join(workdir, "random_model"))
  load_before = common.load_1m()
  ours = run_ours(args, model, workdir)
  theirs = run_peer("trainer", args, model, workdir)
  loop = run_peer("loop", args, model, workdir)
  load_after = common.load_1m()
  peak = common.measured_matmul_peak(reps=10) / 1e9
  print(f"model {model} ({args.random_init or 'as given'}); train {args.train}; "
        f"{args.epochs:g} epochs, lr {args.lr:g}, batch {args.batch_size}, max length "
        f"{args.max_length}")
  print(f"{'':14}{'bert_jax':>12}{'transformers':>14}{'ratio':>8}")
  print(f"{'train seq/s':14}{ours['train_seq_per_sec']:>12.1f}"
        f"{theirs['train_seq_per_sec']:>14.1f}"
        f"{ours['train_seq_per_sec'] / theirs['train_seq_per_sec']:>8.2f}")
  print(f"{'wall s':14}{ours['wall_s']:>12.1f}{theirs['wall_s']:>14.1f}"
        f"{theirs['wall_s'] / ours['wall_s']:>8.2f}")
  print(f"{'eval accuracy':14}{ours['eval_accuracy']:>12.4f}{theirs['eval_accuracy']:>14.4f}"
        f"{ours['eval_accuracy'] - theirs['eval_accuracy']:>+8.4f}")
  print(f"plain torch loop (same model and recipe, timed around its steps): "
        f"{loop['train_seq_per_sec']:.1f} seq/s (bert_jax {ours['train_seq_per_sec'] / loop['train_seq_per_sec']:.2f}x), "
        f"eval accuracy {loop['eval_accuracy']:.4f}, wall {loop['wall_s']:.1f} s")
  print(f"per-epoch accuracy: bert_jax {[round(a, 4) for a in ours['evals']]}, transformers "
        f"{[round(a, 4) for a in theirs['evals']]}")
  print(f"load average before {load_before:.2f}, after {load_after:.2f}; measured fp32 "
        f"matmul {peak:.1f} GFLOP/s; workdir {workdir}")


if __name__ == "__main__":
  main()
