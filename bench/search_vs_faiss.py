"""Exact top-k search queries/s against faiss IndexFlatIP, and faiss HNSW recall@10 and queries/s.

  python bench/search_vs_faiss.py [--n=1000000] [--dim=384] [--queries=1000] [--ann_n=100000]

Exact: `bert_jax.retrieval.exact_search` (numpy BLAS, blocked top-k, what
launch/search.py runs) and faiss `IndexFlatIP.search` on the same N random unit
vectors and queries, both with the threads the machine gives them; the top-10
rows must agree. ANN: the faiss HNSW graph that `build_index.py --ann` builds
(`retrieval.build_ann`, M=32, efConstruction=200) over the first --ann_n vectors
(building it over 1M random 384-d vectors takes too long on a small CPU), searched
at several efSearch values: recall@10 against exact search and queries/s.
Random Gaussian vectors are the hardest case for a graph index (no cluster
structure), so recall here is a floor. Needs `pip install faiss-cpu`.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path
from bert_jax import retrieval  # pylint: disable=g-bad-import-order


def unit(rng, n, dim):
  x = rng.standard_normal((n, dim), dtype=np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def best_of(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return min(times), out


def main():
  import faiss  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--n", type=int, default=1_000_000)
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--top_k", type=int, default=10)
  parser.add_argument("--ann_n", type=int, default=100_000)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  corpus, queries = unit(rng, args.n, args.dim), unit(rng, args.queries, args.dim)
  ours_s, (_, ours_rows) = best_of(lambda: retrieval.exact_search(corpus, queries, args.top_k),
                                   args.repeats)
  flat = faiss.IndexFlatIP(args.dim)
  flat.add(corpus)
  theirs_s, (_, theirs_rows) = best_of(lambda: flat.search(queries, args.top_k), args.repeats)
  agree = float(np.mean(ours_rows == theirs_rows))
  report = {"n": args.n, "dim": args.dim, "queries": args.queries, "top_k": args.top_k,
            "cpu_count": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
            "bert_jax_exact_qps": round(args.queries / ours_s, 1),
            "faiss_flat_ip_qps": round(args.queries / theirs_s, 1),
            "ratio": round(theirs_s / ours_s, 2), "top_k_rows_agree": agree}
  flat.reset()  # frees its copy of the vectors
  sub = corpus[:args.ann_n]
  exact_rows = retrieval.exact_search(sub, queries, args.top_k)[1]
  start = time.perf_counter()
  graph = retrieval.build_ann(sub)
  report["ann_n"] = args.ann_n
  report["ann_build_s"] = round(time.perf_counter() - start, 1)
  exact_sub_s, _ = best_of(lambda: retrieval.exact_search(sub, queries, args.top_k), args.repeats)
  report["ann_exact_qps_same_n"] = round(args.queries / exact_sub_s, 1)
  for ef in (32, 128, 512):
    ann_s, (_, rows) = best_of(lambda e=ef: retrieval.ann_search(graph, queries, args.top_k, e),
                               args.repeats)
    report[f"ann_ef{ef}_recall@{args.top_k}"] = round(retrieval.recall_at_k(exact_rows, rows), 4)
    report[f"ann_ef{ef}_qps"] = round(args.queries / ann_s, 1)
  report["load_average_1m"] = common.load_1m()  # > cpu_count: timings are noisy
  print(json.dumps(report))
  winner = common.winner(report["ratio"], "faiss")
  print(f"exact top-{args.top_k} over {args.n} x {args.dim}: bert_jax "
        f"{report['bert_jax_exact_qps']} q/s, faiss IndexFlatIP {report['faiss_flat_ip_qps']} q/s: "
        f"{report['ratio']:.2f}x in favour of {winner} (rows agree {agree:.4f}); "
        f"load {report['load_average_1m']}")
  if agree < 0.999:
    sys.exit("exact top-k disagrees with faiss")


if __name__ == "__main__":
  main()
