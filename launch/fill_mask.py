"""Top-k predictions for each [MASK] in a text, from any model path.

  python launch/fill_mask.py --model=PATH --text="IBM [MASK] me BERT." --top_k=5 [--json]

Prints a table per [MASK], or with --json one JSON list per [MASK] (one per
line) of {"token", "token_id", "score"} objects, best first.
"""

import json

from absl import flags

from bert_jax.formats import convert
from bert_jax import inference
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_TEXT = flags.DEFINE_string("text", None, "Text with one or more [MASK] tokens.", required=True)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Predictions per [MASK].")
_JSON = flags.DEFINE_bool("json", False, "Print JSON lines instead of a table.")


def main(argv):
  del argv
  pre = convert.from_pretrained(_MODEL.value)
  results = inference.fill_mask(pre, _TEXT.value, _TOP_K.value)
  for number, predictions in enumerate(results, start=1):
    if _JSON.value:
      print(json.dumps(predictions, ensure_ascii=False))
      continue
    print(f"[MASK] {number} of {len(results)}")
    width = max(len("token"), *(len(p["token"]) for p in predictions))
    print(f"  {'rank':>4}  {'token':<{width}}  {'id':>6}  score")
    for rank, p in enumerate(predictions, start=1):
      print(f"  {rank:>4}  {p['token']:<{width}}  {p['token_id']:>6}  {p['score']:.4f}")


if __name__ == "__main__":
  run_main(main, quiet=True)
