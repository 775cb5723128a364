"""Top-k predictions for each [MASK] in a text, from any model path.

  python launch/fill_mask.py --model=PATH --text="IBM [MASK] me BERT." --top_k=5 [--json]

Prints the text, then a table per [MASK]; or with --json one JSON list per
[MASK] (one per line) of {"token", "token_id", "score"} objects, best first. A
text longer than the model's limit (its position table, at most 512 tokens) is
cut there, and stderr says so: a [MASK] past the cut is not predicted.
"""

import json
import sys

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
  cut = inference.truncation(pre, _TEXT.value)
  if cut is not None:
    print(f"note: the text has {cut[0]} tokens; it was cut at the model's limit of {cut[1]}",
          file=sys.stderr)
  results = inference.fill_mask(pre, _TEXT.value, _TOP_K.value)
  if not _JSON.value:
    print(f"text: {_TEXT.value}")
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
  run_main(main, quiet=True, inference=True)
