"""Index build lines/s: `launch/build_index.py` (the whole command) against sentence-transformers.

  python bench/build_index_vs_sentence_transformers.py [--lines=10000] [--workdir=DIR]

The text, the model and the peer are those of bench/embed_vs_sentence_transformers.py
(bench/common.py, `embedding_inputs`): ~10k lines of stdlib docstrings, a random-weight MiniLM-L6-sized
BERT saved as a Hugging Face dir, mean pooling, max length 256, and a
sentence-transformers `encode` script. Each side is one subprocess timed from
start to exit; ours also writes the index dir (vectors, texts, ids, settings),
theirs writes an .npy. The vectors are compared and lines/s and the ratio printed.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lines", type=int, default=10000)
  parser.add_argument("--workdir", default=None, help="Keep files here (default: a temp dir).")
  parser.add_argument("--st_batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="index_bench_")
  lines, corpus, model_dir, script = common.embedding_inputs(work, args.lines)
  env = common.child_env()
  index_dir, theirs_out = os.path.join(work, "index"), os.path.join(work, "st.npy")
  ours_cmd = [sys.executable, os.path.join(common.REPO, "launch", "build_index.py"),
              f"--model={model_dir}", f"--input={corpus}", f"--output={index_dir}",
              "--pooling=mean", "--max_seq_length=256", "--overwrite"]
  theirs_cmd = [sys.executable, script, model_dir, corpus, theirs_out, str(args.st_batch_size)]
  ours_t, theirs_t = [], []
  for _ in range(args.repeats):
    shutil.rmtree(index_dir + ".partial", ignore_errors=True)
    ours_t.append(common.timed(ours_cmd, env))
    theirs_t.append(common.timed(theirs_cmd, dict(env, TOKENIZERS_PARALLELISM="false")))
  gap = common.compare_vectors(np.load(os.path.join(index_dir, "vectors.npy")),
                               np.load(theirs_out))
  n = len(lines)
  report = {"lines": n, "cpu_count": os.cpu_count(),
            "build_index_lines_per_s": round(n / min(ours_t), 1),
            "sentence_transformers_lines_per_s": round(n / min(theirs_t), 1),
            "build_index_s": [round(t, 2) for t in ours_t],
            "sentence_transformers_s": [round(t, 2) for t in theirs_t],
            "ratio": round(min(theirs_t) / min(ours_t), 2),
            "max_abs_diff": gap["max_abs_diff"],
            "load_average_1m": common.load_1m()}  # > cpu_count: timings are noisy
  print(json.dumps(report))
  favoured = common.winner(report["ratio"], "sentence-transformers")
  print(f"build_index {report['build_index_lines_per_s']} lines/s, sentence-transformers encode "
        f"{report['sentence_transformers_lines_per_s']} lines/s: {report['ratio']:.2f}x in favour "
        f"of {favoured} ({n} lines, max |diff| {report['max_abs_diff']:.1e}, load "
        f"{report['load_average_1m']})")
  if report["max_abs_diff"] > 1e-3:
    sys.exit("vectors disagree")


if __name__ == "__main__":
  main()
