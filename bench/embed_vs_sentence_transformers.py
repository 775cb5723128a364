"""Embedding speed: `launch/embed.py` against a sentence-transformers script, whole processes.

  python bench/embed_vs_sentence_transformers.py [--lines=10000] [--workdir=DIR]

Both sides embed the same ~10k lines of real English (Python standard library
docstrings, gathered at run time, never committed) with the same random-weight
MiniLM-L6-sized BERT (6 layers, hidden 384, 12 heads, intermediate 1536) saved
as a Hugging Face dir, mean pooling, max length 256. Each side is one
subprocess timed from start to exit: imports, model loading, tokenization,
compilation (bert_jax) and the forward passes. The vectors are compared and
the ratio of the median times printed (target: >= 1.5x in favour of
bert_jax), with this CPU's measured fp32 matmul peak and the load average after
each pair of runs (the sides alternate, so load falls on both alike). The
sentence-transformers side runs with TOKENIZERS_PARALLELISM=false, its faster
setting on small machines (the tokenizer threads otherwise fight torch's);
the bert_jax side runs with the environment as it is.

The text, the model and the sentence-transformers script are bench/common.py's
(`embedding_inputs`), shared with bench/build_index_vs_sentence_transformers.py.
Needs torch, transformers and `pip install sentence-transformers --no-deps`.
scikit-learn (imported by sentence-transformers only for its evaluation
utilities) is replaced by an empty stub when it is not installed.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lines", type=int, default=10000)
  parser.add_argument("--workdir", default=None, help="Keep files here (default: a temp dir).")
  parser.add_argument("--st_batch_size", type=int, default=32, help="SentenceTransformer batch.")
  parser.add_argument("--repeats", type=int, default=3, help="Time each side this many times.")
  parser.add_argument("--st_tokenizers_parallelism", default="false",
                      help="TOKENIZERS_PARALLELISM for the sentence-transformers side: on a 2-core "
                           "machine 'false' made it ~1.8x faster than 'true' or unset.")
  args = parser.parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="embed_bench_")
  lines, corpus, model_dir, script = common.embedding_inputs(work, args.lines)
  env = common.child_env()
  theirs_env = dict(env, TOKENIZERS_PARALLELISM=args.st_tokenizers_parallelism)
  ours_out, theirs_out = os.path.join(work, "bert_jax.npy"), os.path.join(work, "st.npy")
  ours_cmd = [sys.executable, os.path.join(common.REPO, "launch", "embed.py"), f"--model={model_dir}",
              f"--input={corpus}", f"--output={ours_out}", "--pooling=mean", "--max_seq_length=256"]
  theirs_cmd = [sys.executable, script, model_dir, corpus, theirs_out, str(args.st_batch_size)]
  peak = common.matmul_peak_in_child(env)
  ours_t, theirs_t, loads = [], [], []
  for _ in range(args.repeats):  # alternate, so the machine's load falls on both sides alike
    ours_t.append(common.timed(ours_cmd, env))
    theirs_t.append(common.timed(theirs_cmd, theirs_env))
    loads.append(common.load_1m())
  gap = common.compare_vectors(np.load(ours_out), np.load(theirs_out))
  tokens = sum(len(line.split()) for line in lines)
  ours_s, theirs_s = float(np.median(ours_t)), float(np.median(theirs_t))
  report = {"lines": len(lines), "words": tokens, "cpu_count": os.cpu_count(),
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "load_average_1m": loads,  # after each pair; > cpu_count: timings are noisy
            "st_tokenizers_parallelism": args.st_tokenizers_parallelism,
            "bert_jax_s": [round(t, 2) for t in ours_t],
            "sentence_transformers_s": [round(t, 2) for t in theirs_t],
            "ratio": round(theirs_s / ours_s, 2),  # of the medians
            **gap}
  print(json.dumps(report))
  print(f"bert_jax {ours_s:.1f} s, sentence-transformers {theirs_s:.1f} s (medians of "
        f"{args.repeats}): {report['ratio']:.2f}x in favour of "
        f"{common.winner(report['ratio'], 'sentence-transformers')} ({len(lines)} lines, "
        f"max |diff| {report['max_abs_diff']:.1e}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, "
        f"load {loads})")
  if report["max_abs_diff"] > 1e-3:
    sys.exit("vectors disagree")


if __name__ == "__main__":
  main()
