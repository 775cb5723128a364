"""Prediction speed: `launch/predict.py` against transformers' pipelines, whole processes.

  python bench/predict_vs_transformers.py [--task=classification|ner|both] [--lines=4000]

Both sides predict the same short lines of real English (sentences of 5-24 words from
the Python stdlib's docstrings, read at run time, as bench/finetune_vs_transformers.py's
`short` data) with the same random-weight MiniLM-L6-sized model saved as a Hugging Face
dir with a head (`BertForSequenceClassification`, 3 labels; `BertForTokenClassification`,
5 BIO labels; 16k WordPiece vocab trained on the text, bench/common.py):
- bert_jax: `launch/predict.py --model=DIR --input=FILE --output=OUT.jsonl` (packed rows via the
  one inference runner);
- transformers: `pipeline("text-classification", top_k=None)` /
  `pipeline("token-classification", aggregation_strategy="first")` over the same texts
  with `batch_size=32` (its fastest documented setting for many inputs on CPU), writing
  JSON lines.
Each side is one subprocess timed from start to exit (imports, loading, tokenization,
compiles and forwards); they alternate `--repeats` times. Printed: median seconds, the ratio,
the agreement of the top labels (classification) or entity lists (NER), the load average.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path

PEER = r"""
import json, sys
import transformers
task, model_dir, input_path, output_path = sys.argv[1:5]
if task == "classification":
  texts = open(input_path, encoding="utf-8").read().split("\n")[:-1]
  pipe = transformers.pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
  out = [max(r, key=lambda x: x["score"])["label"] for r in pipe(texts, batch_size=32)]
else:
  texts = [json.loads(l)["text"] for l in open(input_path, encoding="utf-8") if l.strip()]
  pipe = transformers.pipeline("token-classification", model=model_dir,
                               aggregation_strategy="first", device="cpu")
  out = [[(e["word"], e["entity_group"]) for e in r] for r in pipe(texts, batch_size=32)]
with open(output_path, "w", encoding="utf-8") as f:
  f.write("".join(json.dumps(o) + "\n" for o in out))
"""


def head_model(base: str, task: str, out: str) -> str:
  """`base` (a BertModel HF dir) with a random head of `task`, saved with its vocab."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  labels = (["negative", "neutral", "positive"] if task == "classification"
            else ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
  cls = (transformers.BertForSequenceClassification if task == "classification"
         else transformers.BertForTokenClassification)
  torch.manual_seed(1)
  model = cls.from_pretrained(base, num_labels=len(labels), id2label=dict(enumerate(labels)),
                              label2id={l: i for i, l in enumerate(labels)})
  torch.nn.init.normal_(model.classifier.weight, std=0.5)  # a head whose labels vary
  model.eval().save_pretrained(out)
  for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json"):
    if os.path.exists(os.path.join(base, name)):
      shutil.copy(os.path.join(base, name), out)
  return out


def short_sentences(count: int) -> list[str]:
  import finetune_vs_transformers as ft  # pylint: disable=g-import-not-at-top
  seen, out = set(), []
  for sentence in (x for group in ft._sentences() for x in group):  # pylint: disable=protected-access
    if sentence not in seen:
      seen.add(sentence)
      out.append(sentence)
      if len(out) == count:
        break
  return out


def run(task: str, work: str, base: str, lines: list[str], repeats: int) -> None:
  model = head_model(base, task, os.path.join(work, f"model_{task}"))
  if task == "classification":
    source = common.write_lines(os.path.join(work, "lines.txt"), lines)
  else:
    source = os.path.join(work, "lines.jsonl")
    with open(source, "w", encoding="utf-8") as f:
      f.write("".join(json.dumps({"text": t}) + "\n" for t in lines))
  peer = os.path.join(work, "peer.py")
  with open(peer, "w", encoding="utf-8") as f:
    f.write(PEER)
  ours_out, theirs_out = os.path.join(work, f"ours_{task}.jsonl"), os.path.join(work, f"hf_{task}")
  ours_cmd = [sys.executable, os.path.join(common.REPO, "launch", "predict.py"), f"--model={model}",
              f"--input={source}", f"--output={ours_out}"]
  theirs_cmd = [sys.executable, peer, task, model, source, theirs_out]
  env = common.child_env()
  theirs_env = dict(env, TOKENIZERS_PARALLELISM="false")
  ours_t, theirs_t, loads = [], [], []
  for _ in range(repeats):
    ours_t.append(common.timed(ours_cmd, env))
    theirs_t.append(common.timed(theirs_cmd, theirs_env))
    loads.append(common.load_1m())
  ours = [json.loads(l) for l in open(ours_out, encoding="utf-8") if l.strip()]
  theirs = [json.loads(l) for l in open(theirs_out, encoding="utf-8") if l.strip()]
  if task == "classification":
    agree = np.mean([o["label"] == t for o, t in zip(ours, theirs)])
  else:
    agree = np.mean([[e["label"] for e in o["entities"]] == [g for _, g in t]
                     for o, t in zip(ours, theirs)])
  a, b = float(np.median(ours_t)), float(np.median(theirs_t))
  print(f"{task}: {len(lines)} lines; bert_jax {a:.1f} s ({len(lines) / a:.0f} lines/s), "
        f"transformers pipeline {b:.1f} s ({len(lines) / b:.0f} lines/s): {b / a:.2f}x; "
        f"same {'label' if task == 'classification' else 'entity labels'} for {agree:.1%}; "
        f"runs bert_jax {[round(t, 1) for t in ours_t]}, pipeline "
        f"{[round(t, 1) for t in theirs_t]}; load after each pair {[round(x, 1) for x in loads]}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--task", default="both", help="classification | ner | both")
  parser.add_argument("--lines", type=int, default=4000)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bert_jax_bench"))
  args = parser.parse_args()
  if args.task not in ("classification", "ner", "both"):
    parser.error(f"--task={args.task!r} is not one of classification, ner, both")
  if args.lines < 1 or args.repeats < 1:
    parser.error("--lines and --repeats must be >= 1")
  work = args.workdir or tempfile.mkdtemp(prefix="bench_predict_")
  os.makedirs(work, exist_ok=True)
  _, _, base, _ = common.embedding_inputs(os.path.join(args.cache, "minilm"), 20000)
  lines = short_sentences(args.lines)
  tasks = ["classification", "ner"] if args.task == "both" else [args.task]
  for task in tasks:
    run(task, work, base, lines, args.repeats)
  print(f"measured fp32 matmul {common.measured_matmul_peak(reps=10) / 1e9:.0f} GFLOP/s; "
        f"workdir {work}")


if __name__ == "__main__":
  main()
