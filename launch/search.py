"""Search a dense retrieval index (launch/build_index.py) with text queries.

  python launch/search.py --index=DIR (--query=TEXT | --queries=FILE) [--top_k=10] [--json] [--ann]

Queries are embedded with the index's own model and pooling settings (recorded in
DIR/index.json); --model/--pooling, if given, must match them. Exact top-k by
inner product (cosine for an index built with --normalize), computed in blocks;
--ann searches the faiss HNSW graph built with build_index.py --ann. --json prints
one JSON line per query, in order: [{"rank", "score", "id", "text"}]; otherwise a
table per query.
"""

import json
import sys

from absl import flags

from bert_jax.errors import UserError
from bert_jax.errors import run_main

_INDEX = flags.DEFINE_string("index", None, "Index directory.", required=True)
_QUERY = flags.DEFINE_string("query", None, "One query text.")
_QUERIES = flags.DEFINE_string("queries", None, "UTF-8 file, one query a line.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "Hits per query.")
_JSON = flags.DEFINE_bool("json", False, "One JSON line per query.")
_ANN = flags.DEFINE_bool("ann", False, "Approximate search with the index's HNSW graph.")
_EF_SEARCH = flags.DEFINE_integer("ef_search", 128, "HNSW candidate list size (--ann).")
_MODEL = flags.DEFINE_string("model", None, "Must be the index's model (checked by weights).")
_POOLING = flags.DEFINE_enum("pooling", None, ["cls", "mean", "max"],
                             "Must be the index's pooling (checked).")


def main(argv):
  del argv
  from bert_jax import files  # pylint: disable=g-import-not-at-top
  from bert_jax import retrieval  # pylint: disable=g-import-not-at-top
  if (_QUERY.value is None) == (_QUERIES.value is None):
    raise UserError("give exactly one of --query=TEXT or --queries=FILE")
  queries = [_QUERY.value] if _QUERY.value is not None else files.read_lines(_QUERIES.value)
  if not queries:
    raise UserError(f"--queries={_QUERIES.value} has no lines")
  index = retrieval.Index.load(_INDEX.value)
  index.check_settings(_MODEL.value, pooling=_POOLING.value)
  if _TOP_K.value > len(index):
    print(f"note: --top_k={_TOP_K.value} but the index holds only {len(index)} vectors: "
          f"returning all {len(index)}", file=sys.stderr)
  results = index.search(queries, _TOP_K.value, ann=_ANN.value, ef_search=_EF_SEARCH.value)
  for query, hits in zip(queries, results):
    if _JSON.value:
      print(json.dumps(hits, ensure_ascii=False))
      continue
    print(f"query: {query}")
    print(f"{'rank':>4}  {'score':>8}  {'id':<10}  text")
    for hit in hits:
      print(f"{hit['rank']:>4}  {hit['score']:8.4f}  {str(hit['id']):<10}  {hit['text']}")


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
