"""Summarization throughput: `launch/summarize.py --method=cluster` vs bert-extractive-summarizer.

  python bench/summarize_vs_bert_extractive_summarizer.py [--documents=30] [--repeats=3]

Both sides summarize the same documents (~30 multi-paragraph English texts made at
run time from the Python standard library's docstrings: one module's module,
class and function docstrings make one document; never committed) to 3 sentences
by k-means clusters, with the same random-weight MiniLM-L6-sized BERT (6 layers,
hidden 384, 12 heads) saved as a Hugging Face dir with a WordPiece vocabulary
trained on those texts. Each side is one subprocess timed from start to exit
(imports, model loading, sentence splitting, embedding, clustering; bert_jax also
compiles), the sides alternate, and the documents/s of the medians, their ratio
and the load average after each pair are printed.

The peer (`pip install bert-extractive-summarizer`, 0.10.1) is run as its README
shows: `Summarizer(custom_model=..., custom_tokenizer=...)(text, num_sentences=3)`,
here with `use_first=False` so that both sides pick 3 sentences by clustering. It
embeds one sentence at a time (no batching) from the second-to-last layer and
splits with spaCy's rule-based sentencizer; bert_jax embeds every document's
sentences in full batches from the last layer with its own splitter. So the
summaries differ; the figure compared is throughput. Version 0.10.1 imports
model classes that transformers 5 removed (TransfoXL...); the peer script sets
those names to None before importing it (they are never used for BERT).
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEER_SCRIPT = r"""
import json, sys
import transformers
for name in ("TransfoXLModel", "TransfoXLTokenizer", "CTRLModel", "CTRLTokenizer", "XLMModel",
             "XLMTokenizer", "BigBirdTokenizer"):
  if name not in dir(transformers):
    try:
      getattr(transformers, name)
    except (AttributeError, ImportError):
      setattr(transformers, name, None)
from summarizer import Summarizer
model_dir, input_path, output_path = sys.argv[1:4]
model = transformers.BertModel.from_pretrained(model_dir, output_hidden_states=True)
tokenizer = transformers.BertTokenizer.from_pretrained(model_dir)
summarizer = Summarizer(custom_model=model, custom_tokenizer=tokenizer)
with open(input_path, encoding="utf-8") as f:
  documents = [json.loads(line)["text"] for line in f if line.strip()]
with open(output_path, "w", encoding="utf-8") as f:
  for text in documents:
    f.write(json.dumps({"summary": summarizer(text, num_sentences=3, use_first=False)}) + "\n")
"""


def stdlib_documents(count: int, min_paragraphs: int = 4) -> list[str]:
  """One document per stdlib module with at least `min_paragraphs` wordy docstring paragraphs."""
  documents = []
  for found in common.stdlib_docstring_paragraphs():
    paragraphs = []
    for text in found:
      words = text.split()
      # Prose only: mostly alphabetic words, ends like a sentence, no doctest or code.
      if (len(words) >= 8 and sum(w.isalpha() for w in words) >= 0.7 * len(words)
          and text.endswith(".") and ">>>" not in text and text not in paragraphs):
        paragraphs.append(text)
    if len(paragraphs) >= min_paragraphs:
      documents.append("\n\n".join(paragraphs[:12]))
      if len(documents) == count:
        return documents
  return documents


def make_model(directory: str, corpus: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax import vocab_training  # pylint: disable=g-import-not-at-top
  vocab_training.train_wordpiece(corpus, directory, vocab_size=8000, lowercase=True)
  with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
    vocab_size = len(f.read().split("\n")) - 1
  config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=384, num_hidden_layers=6,
                                   num_attention_heads=12, intermediate_size=1536,
                                   max_position_embeddings=512)
  torch.manual_seed(0)
  transformers.BertModel(config).eval().save_pretrained(directory)


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
  """(seconds from start to exit, stdout) of one process."""
  start = time.perf_counter()
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  elapsed = time.perf_counter() - start
  if done.returncode:
    sys.exit(f"{cmd[1]} failed:\n{done.stderr[-3000:]}")
  return elapsed, done.stdout


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--documents", type=int, default=30)
  parser.add_argument("--repeats", type=int, default=3, help="Time each side this many times.")
  parser.add_argument("--workdir", default=None, help="Keep files here (default: a temp dir).")
  args = parser.parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="summarize_bench_")
  os.makedirs(work, exist_ok=True)
  documents = stdlib_documents(args.documents)
  source, corpus = os.path.join(work, "documents.jsonl"), os.path.join(work, "corpus.txt")
  model_dir = os.path.join(work, "model")
  with open(source, "w", encoding="utf-8") as f:
    f.write("".join(json.dumps({"text": d}) + "\n" for d in documents))
  with open(corpus, "w", encoding="utf-8") as f:
    f.write("\n".join(documents) + "\n")
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    sys.path.insert(0, REPO)
    make_model(model_dir, corpus)
  script = os.path.join(work, "peer_summarize.py")
  with open(script, "w", encoding="utf-8") as f:
    f.write(PEER_SCRIPT)
  theirs_out = os.path.join(work, "peer.jsonl")
  ours_cmd = [sys.executable, os.path.join(REPO, "launch", "summarize.py"), f"--model={model_dir}",
              f"--input={source}", "--method=cluster", "--num_sentences=3", "--json"]
  theirs_cmd = [sys.executable, script, model_dir, source, theirs_out]
  ours_t, theirs_t, loads = [], [], []
  for _ in range(args.repeats):  # alternate, so the machine's load falls on both sides alike
    elapsed, printed = timed(ours_cmd, env)
    ours_t.append(elapsed)
    theirs_t.append(timed(theirs_cmd, env)[0])
    loads.append(round(os.getloadavg()[0], 2))
    print(f"pair {len(loads)}: bert_jax {ours_t[-1]:.1f} s, bert-extractive-summarizer "
          f"{theirs_t[-1]:.1f} s, load {loads[-1]}", file=sys.stderr, flush=True)
  ours_rows = [json.loads(line) for line in printed.splitlines() if line.strip()]
  with open(theirs_out, encoding="utf-8") as f:
    theirs_rows = [json.loads(line) for line in f if line.strip()]
  assert len(ours_rows) == len(theirs_rows) == len(documents), (len(ours_rows), len(theirs_rows))
  ours_s, theirs_s = float(np.median(ours_t)), float(np.median(theirs_t))
  sentences = sum(len(r["sentences"]) for r in ours_rows)
  report = {"documents": len(documents), "words": sum(len(d.split()) for d in documents),
            "cpu_count": os.cpu_count(), "load_average_1m": loads,
            "bert_jax_s": [round(t, 2) for t in ours_t],
            "bert_extractive_summarizer_s": [round(t, 2) for t in theirs_t],
            "bert_jax_docs_per_s": round(len(documents) / ours_s, 3),
            "bert_extractive_summarizer_docs_per_s": round(len(documents) / theirs_s, 3),
            "ratio": round(theirs_s / ours_s, 2),  # of the medians; > 1: bert_jax faster
            "summary_sentences_bert_jax": sentences}
  print(json.dumps(report))
  winner = "bert_jax" if report["ratio"] >= 1 else "bert-extractive-summarizer"
  print(f"bert_jax {report['bert_jax_docs_per_s']:.2f} docs/s ({ours_s:.1f} s), "
        f"bert-extractive-summarizer {report['bert_extractive_summarizer_docs_per_s']:.2f} docs/s "
        f"({theirs_s:.1f} s), medians of {args.repeats}: {report['ratio']:.2f}x in favour of "
        f"{winner} ({len(documents)} documents, {report['words']} words; load {loads})")


if __name__ == "__main__":
  main()
