r"""Predictions of a fine-tuned model, whatever its head.

  python launch/predict.py --model=WORKDIR/best --text="A film worth seeing." [--json]
  python launch/predict.py --model=PATH --text="premise" --text_pair="hypothesis"
  python launch/predict.py --model=PATH --input=test.jsonl [--json] [--output=preds.tsv]
  python launch/predict.py --model=PATH --input=glue/sst2:test --output=SST-2.tsv

Sequence classification prints the label, its probability and the other labels'
(--top_k of them); regression the value. --input takes the training formats (.csv, .tsv,
.jsonl with `sentence` or `sentence1`/`sentence2`; .txt = one text a line) or a tfds GLUE
split `glue/NAME:SPLIT`. --json prints one JSON object per input, in input order.
--output=FILE.tsv writes the GLUE submission format (`index<TAB>prediction`), any other
--output name JSON lines; either is written atomically.
"""

import json
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import predict  # pylint: disable=g-import-not-at-top
from bert_jax.errors import UserError, run_main  # pylint: disable=g-import-not-at-top
from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_TEXT = flags.DEFINE_string("text", None, "One text to predict.")
_TEXT_PAIR = flags.DEFINE_string("text_pair", None, "Its second text, for pair tasks.")
_INPUT = flags.DEFINE_string("input", None, "File of inputs (training formats) or glue/NAME:SPLIT.")
_OUTPUT = flags.DEFINE_string("output", None, "Write predictions here (.tsv: GLUE format).")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per input instead of a table.")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Labels shown per input (table).")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None,
                                       "Tokens per input (default: the fine-tuning length).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Inputs per batch.")


def _inputs() -> tuple[list[str], list[str] | None]:
  if (_TEXT.value is None) == (_INPUT.value is None):
    raise UserError("give exactly one of --text (with optional --text_pair) or --input=FILE")
  if _TEXT.value is not None:
    return [_TEXT.value], None if _TEXT_PAIR.value is None else [_TEXT_PAIR.value]
  if _TEXT_PAIR.value is not None:
    raise UserError("--text_pair goes with --text, not --input")
  return predict.read_inputs(_INPUT.value)


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  texts, pairs = _inputs()
  if _OUTPUT.value and not os.path.isdir(os.path.dirname(os.path.abspath(_OUTPUT.value))):
    raise UserError(f"--output={_OUTPUT.value}: its directory does not exist")
  pre = convert.from_pretrained(_MODEL.value)
  predictor = predict.SequencePredictor(pre, _MAX_SEQ_LENGTH.value, _BATCH_SIZE.value)
  if (pairs is not None) != bool((pre.task or {}).get("text_pair", pairs is not None)):
    print("warning: the model was fine-tuned on " + ("text pairs" if pairs is None else
          "single texts") + "; predicting anyway", file=sys.stderr)
  results = predictor.predict(texts, pairs)
  if _OUTPUT.value:
    predict.write_predictions(_OUTPUT.value, results)
    print(f"{len(results)} predictions -> {_OUTPUT.value}", file=sys.stderr)
    if not _JSON.value:
      return
  for p in results:
    if _JSON.value:
      print(json.dumps(p, ensure_ascii=False))
    elif "value" in p:
      print(f"{p['value']:.4f}")
    else:
      best = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:max(1, _TOP_K.value)]
      print("\t".join(f"{label} {prob:.4f}" for label, prob in best))


if __name__ == "__main__":
  run_main(main, quiet=True)
