r"""Fine-tuning, side by side: `launch/finetune.py` against a plain torch loop (and Trainer).

  python bench/finetune_vs_transformers.py                     # short single sentences
  python bench/finetune_vs_transformers.py --data=pairs --runs=3
  python bench/finetune_vs_transformers.py --model=HF_DIR --data=sample_pairs --trainer
  python bench/finetune_vs_transformers.py --modern           # ModernBERT on both sides

The headline is what users run against what transformers users run at their best: the
user's command, `launch/finetune.py --config=configs/finetune.py --config.task=local ...`
(packed rows, `config.pack`, the default), against a plain torch loop over transformers'
`BertForSequenceClassification` with dynamic padding (each batch padded to its longest row,
as `tokenizer(..., padding=True)`), AdamW, clipping at 1.0, the same batch, timed around its
steps (bench/finetune_common.py). Same HF dir, same files, same recipe (configs/finetune.py:
lr 2e-5, weight decay 0.01 off biases and LayerNorm, eps 1e-6, batch 32, 10% warmup then
linear decay, dropout 0.1, max length 128). `--runs=N` alternates the two N times (the
first side alternates too) and prints every run and the spread of the ratio.
`--trainer` adds transformers' `Trainer` (`DataCollatorWithPadding`) as a second peer;
`--unpacked` adds bert_jax with `--config.pack=False`.

Data (`--data`), written by this bench from real English (the Python stdlib's docstrings,
read at run time; nothing downloaded or committed):
- `short` (default): single sentences of 5-24 words (GLUE's SST-2/CoLA are ~10-13 words),
  labelled by a lexical rule (does the first word end in "s": "Returns ...", "Creates ...");
- `pairs`: two sentences, label = whether B is the sentence after A in its docstring
  (QQP-like length, ~30 tokens a pair);
- `sample_pairs`: the project's 3-class pair task (bert_jax.data.sample_pairs).
Model (`--model`): default a random-weight MiniLM-L6-sized BERT (6 x 384, 12 heads, 1536
MLP) with a 16k WordPiece vocab trained on the same text (bench/common.py, built once and
cached under --cache); `--random_init=LxH` replaces a given model's weights by that size.

Printed per run: train seq/s and real (non-padding) tokens/s of both sides, their ratio,
the fraction of the FLOP ceiling each reaches (real tokens/s x training FLOPs per real
token / this machine's measured fp32 matmul rate, bench/common.py), eval accuracy, whole
wall time; then the load average. bert_jax's figures are its loop's logged windows
(`seq_per_sec`, `real_tokens_per_sec`: compile steps and evaluation are not in them); the
loop's are its timed steps.
Needs transformers and torch (`pip install 'bert_jax[bench]'`; accelerate for --trainer).
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path

PEER_SCRIPT = r"""
import json, sys
import numpy as np, torch, transformers
mode, model_dir, train_path, eval_path, out_dir, lr, epochs, batch, length, seed = sys.argv[1:11]
read = lambda p: [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]
train, evals = read(train_path), read(eval_path)
labels = sorted({r["label"] for r in train + evals})
tok = transformers.AutoTokenizer.from_pretrained(model_dir)
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
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
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
fc.seed_torch()
model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir,
                                                                        num_labels=len(labels))
types = model.config.model_type != "modernbert"  # ModernBERT has no token types
def inputs(enc, y, rows):
  ids = fc.pad([enc["input_ids"][i] for i in rows], tok.pad_token_id)
  out = dict(input_ids=ids, attention_mask=fc.pad([[1] * len(enc["input_ids"][i]) for i in rows]),
             labels=torch.tensor(y[rows]))
  if types:
    out["token_type_ids"] = fc.pad([enc["token_type_ids"][i] for i in rows])
  return out
stats = {}
speed = fc.torch_train(model, lambda rows: inputs(etr, ytr, rows), len(train),
                       fc.steps_for(len(train), float(epochs)), stats)
correct = 0
with torch.no_grad():
  for start in range(0, len(evals), 64):
    rows = np.arange(start, min(start + 64, len(evals)))
    correct += int((model(**inputs(eev, yev, rows)).logits.argmax(-1).numpy() == yev[rows]).sum())
print(json.dumps({"train_seq_per_sec": speed, "eval_accuracy": correct / len(evals),
                  "real_tokens_per_sec": stats["tokens_real"] / stats["seconds"],
                  "padding_fraction": 1 - stats["tokens_real"] / stats["tokens_computed"]}))
"""


def _sentences() -> list[list[str]]:
  """Per stdlib docstring paragraph, its sentences of 5-24 words (in a fixed order)."""
  out = []
  for paragraphs in common.stdlib_docstring_paragraphs():
    for text in paragraphs:
      sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text)]
      keep = [x for x in sentences if 5 <= len(x.split()) <= 24
              and sum(w.isalpha() for w in x.split()) >= len(x.split()) // 2]
      if keep:
        out.append(keep)
  return out


def write_task(kind: str, directory: str, num_train: int, num_eval: int) -> dict:
  """train.jsonl / validation.jsonl of `kind` (short | pairs | sample_pairs) in `directory`."""
  os.makedirs(directory, exist_ok=True)
  if kind == "sample_pairs":
    from bert_jax.data import sample_pairs  # pylint: disable=g-import-not-at-top
    paths = sample_pairs.write(directory)
    return {"train": paths["train"], "validation": paths["validation"]}
  rng = random.Random(0)
  groups = _sentences()
  rows, seen = [], set()
  if kind == "short":
    for sentence in (x for g in groups for x in g):
      if sentence not in seen:
        seen.add(sentence)
        first = sentence.split()[0]
        rows.append({"sentence": sentence, "label": "s" if first.endswith("s") else "other"})
  elif kind == "pairs":
    flat = [x for g in groups for x in g]
    for g in groups:
      for a, b in zip(g, g[1:]):
        if rng.random() < 0.5:
          rows.append({"sentence1": a, "sentence2": b, "label": "next"})
        else:
          rows.append({"sentence1": a, "sentence2": rng.choice(flat), "label": "random"})
  else:
    sys.exit(f"--data={kind!r} is not one of short, pairs, sample_pairs")
  rng.shuffle(rows)
  if len(rows) < num_train + num_eval:
    sys.exit(f"only {len(rows)} {kind} examples in the stdlib docstrings")
  paths = {}
  for split, part in (("train", rows[:num_train]),
                      ("validation", rows[num_train:num_train + num_eval])):
    paths[split] = os.path.join(directory, f"{split}.jsonl")
    with open(paths[split], "w", encoding="utf-8") as f:
      f.write("".join(json.dumps(r) + "\n" for r in part))
  return paths


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


def modern_model(source: str, out: str) -> str:
  """A random-weight ModernBERT (6 layers, 384 wide, GeGLU 576, 6 heads, window 128, global
  every 3rd layer) with `source`'s WordPiece vocabulary, as a Hugging Face dir."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  with open(os.path.join(source, "vocab.txt"), encoding="utf-8") as f:
    vocab = {t: i for i, t in enumerate(f.read().split("\n")[:-1])}
  config = transformers.ModernBertConfig(
      vocab_size=len(vocab), hidden_size=384, intermediate_size=576, num_hidden_layers=6,
      num_attention_heads=6, max_position_embeddings=512, local_attention=128,
      global_attn_every_n_layers=3, pad_token_id=vocab["[PAD]"], cls_token_id=vocab["[CLS]"],
      bos_token_id=vocab["[CLS]"], sep_token_id=vocab["[SEP]"], eos_token_id=vocab["[SEP]"])
  torch.manual_seed(0)
  transformers.ModernBertModel(config).eval().save_pretrained(out)
  # The tokenizer as transformers 5 saves it: tokenizer.json + tokenizer_config.json only.
  transformers.BertTokenizerFast(vocab_file=os.path.join(source, "vocab.txt"),
                                 do_lower_case=True).save_pretrained(out)
  return out


def run_ours(args, model: str, workdir: str, **extra) -> dict:
  overrides = {"task": "local", "init_checkpoint": model, "train_file": args.train,
               "validation_file": args.validation, "learning_rate": args.lr,
               "num_epochs": args.epochs, "batch_size": args.batch_size,
               "max_seq_length": args.max_length, "seed": args.seed, "log_every_steps": 10,
               **extra}
  if os.path.exists(workdir):
    shutil.rmtree(workdir)
  rows, wall = common.run_launcher("finetune.py", workdir, "finetune.py", overrides)
  speed = common.speed_rows(rows)
  evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
  mean = lambda k: float(np.mean([r[k] for r in speed if r.get(k) is not None] or [np.nan]))
  return {"wall_s": wall, "train_seq_per_sec": mean("seq_per_sec"),
          "real_tokens_per_sec": mean("real_tokens_per_sec"),
          "padding_fraction": mean("padding_fraction"),
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


def flops_per_real_token(model: str, texts_tokens: float) -> float:
  """Training FLOPs (matmuls, 3x forward) per real token of a `texts_tokens`-long row."""
  from bert_jax import metrics  # pylint: disable=g-import-not-at-top
  from bert_jax.model import BertConfig  # pylint: disable=g-import-not-at-top
  with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
    config = BertConfig.from_hf_dict(json.load(f))
  length = max(1, int(round(texts_tokens)))
  return metrics.pretraining_flops_per_sequence(config, length, 0, with_nsp=False) / length


def mean_tokens(model: str, path: str, limit: int) -> float:
  """Mean WordPiece tokens ([CLS] ... [SEP]) of the examples of `path`."""
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  tok = tokenization.load_tokenizer(model)
  rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
  a = [r.get("sentence", r.get("sentence1")) for r in rows]
  b = [r["sentence2"] for r in rows] if "sentence2" in rows[0] else None
  enc = tok.encode_batch(a, b, max_length=limit, padding="none")
  return float(np.mean([len(x) for x in enc["input_ids"]]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="", help="Hugging Face BERT dir (default: MiniLM-sized "
                      "random BERT, see the docstring).")
  parser.add_argument("--random_init", default="", help="LxH: random weights of this size.")
  parser.add_argument("--modern", action="store_true", help="A random ModernBERT (6 x 384, "
                      "GeGLU, local windows) with the default model's vocabulary, both sides.")
  parser.add_argument("--data", default="short", help="short | pairs | sample_pairs")
  parser.add_argument("--train", default="", help="Own train.jsonl (overrides --data).")
  parser.add_argument("--validation", default="")
  parser.add_argument("--num_train", type=int, default=1600)
  parser.add_argument("--num_eval", type=int, default=320)
  parser.add_argument("--epochs", type=float, default=1.0)
  parser.add_argument("--lr", type=float, default=2e-5)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--runs", type=int, default=1, help="Alternating pairs of runs.")
  parser.add_argument("--trainer", action="store_true", help="Also run transformers' Trainer.")
  parser.add_argument("--unpacked", action="store_true", help="Also run --config.pack=False.")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bert_jax_bench"))
  args = parser.parse_args()
  if args.runs < 1 or args.num_train < 1 or args.num_eval < 1:
    parser.error("--runs, --num_train and --num_eval must be >= 1")
  workdir = args.workdir or tempfile.mkdtemp(prefix="bench_finetune_")
  model = args.model
  if not model:
    _, _, model, _ = common.embedding_inputs(os.path.join(args.cache, "minilm"), 20000)
  if args.random_init:
    model = random_model(model, args.random_init, os.path.join(workdir, "random_model"))
  if args.modern:
    model = modern_model(model, os.path.join(args.cache, "modernbert_6x384"))
  if not args.train:
    paths = write_task(args.data, os.path.join(workdir, "data"), args.num_train, args.num_eval)
    args.train, args.validation = paths["train"], paths["validation"]
  tokens = mean_tokens(model, args.train, args.max_length)
  peak = common.measured_matmul_peak(reps=10)
  ceiling = peak / flops_per_real_token(model, tokens)  # real tokens/s at 100% of the peak
  print(f"model {model} ({args.random_init or 'as given'}); data {args.data} {args.train} "
        f"(mean {tokens:.1f} tokens per example); {args.epochs:g} epochs, lr {args.lr:g}, "
        f"batch {args.batch_size}, max length {args.max_length}; FLOP ceiling "
        f"{ceiling:,.0f} real tokens/s at the measured {peak / 1e9:.0f} GFLOP/s")
  load_before = common.load_1m()
  ratios = []
  for run in range(args.runs):
    got, order = common.alternate(run, {
        "ours": lambda: run_ours(args, model, os.path.join(workdir, f"bert_jax_{run}")),
        "loop": lambda: run_peer("loop", args, model, workdir)})
    ours, loop = got["ours"], got["loop"]
    ratio = ours["train_seq_per_sec"] / loop["train_seq_per_sec"]
    ratios.append(ratio)
    print(f"run {run + 1} ({order[0]} first), load {common.load_1m():.2f}")
    for name, r in (("bert_jax", ours), ("torch loop", loop)):
      print(f"  {name:11}{r['train_seq_per_sec']:8.1f} seq/s {r['real_tokens_per_sec']:8.0f} "
            f"real tok/s ({r['real_tokens_per_sec'] / ceiling:6.1%} of ceiling, padding "
            f"{r['padding_fraction']:.0%})  eval acc {r['eval_accuracy']:.4f}  "
            f"wall {r['wall_s']:.0f} s")
    print(f"  ratio bert_jax / torch loop: {ratio:.2f}x")
  if args.unpacked:
    flat = run_ours(args, model, os.path.join(workdir, "bert_jax_unpacked"), pack=False)
    print(f"bert_jax pack=False: {flat['train_seq_per_sec']:.1f} seq/s, "
          f"{flat['real_tokens_per_sec']:.0f} real tok/s (padding {flat['padding_fraction']:.0%})"
          f", eval acc {flat['eval_accuracy']:.4f}")
  if args.trainer:
    trainer = run_peer("trainer", args, model, workdir)
    print(f"Trainer: {trainer['train_seq_per_sec']:.1f} seq/s (incl. its per-step overhead and "
          f"evaluation), eval acc {trainer['eval_accuracy']:.4f}, wall {trainer['wall_s']:.0f} s")
  print(f"ratio over {len(ratios)} run(s): min {min(ratios):.2f}x, max {max(ratios):.2f}x; "
        f"load average before {load_before:.2f}, after {common.load_1m():.2f}; workdir {workdir}")


if __name__ == "__main__":
  main()
