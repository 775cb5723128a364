r"""Predictions of a fine-tuned model, whatever its head.

  python launch/predict.py --model=WORKDIR/best --text="A film worth seeing." [--json]
  python launch/predict.py --model=PATH --text="premise" --text_pair="hypothesis"
  python launch/predict.py --model=PATH --input=test.jsonl [--json] [--output=preds.tsv]
  python launch/predict.py --model=PATH --input=glue/sst2:test --output=SST-2.tsv
  python launch/predict.py --model=NER_MODEL --text="Hais Deadrend lives in Revuxmere."
  python launch/predict.py --model=NER_MODEL --input=test.conll --output=tags.jsonl
  python launch/predict.py --model=QA_MODEL --question="Where does Hais live?" \
      --context="Hais lives in Revuxmere." [--top_k=3] [--json]
  python launch/predict.py --model=QA_MODEL --input=questions.jsonl --output=answers.json

Sequence classification prints the label, its probability and the other labels'
(--top_k of them); regression the value. --input takes the training formats (.csv, .tsv,
.jsonl with `sentence` or `sentence1`/`sentence2`; .txt = one text a line) or a tfds GLUE
split `glue/NAME:SPLIT`. --json prints one JSON object per input, in input order.
--output=FILE.tsv writes the GLUE submission format (`index<TAB>prediction`), any other
--output name JSON lines; either is written atomically.

A tagging model prints the entities of each --text (word(s), label, character start/end in
the text, score: the Hugging Face token-classification pipeline's output with
aggregation_strategy="first"); --input=FILE.conll (a token per line, labels optional) gets a
label per word, --input=FILE.jsonl (`text`) entities. A QA model takes --question and
--context, or --input=FILE.jsonl (`question`, `context`, optional `id`) or a SQuAD JSON file,
and prints the answer, its score (p(start) * p(end), softmaxes over the context), and its
character start/end in the context; --top_k answers each (default 1);
--max_answer_length caps a span (pieces). --output=FILE.json writes SQuAD's {id: answer}.
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
_TOP_K = flags.DEFINE_integer("top_k", None, "Labels shown per input (table; default 3), or "
                               "answers per question (QA; default 1).")
_QUESTION = flags.DEFINE_string("question", None, "QA: the question (with --context).")
_CONTEXT = flags.DEFINE_string("context", None, "QA: the text that holds the answer.")
_MAX_ANSWER_LENGTH = flags.DEFINE_integer("max_answer_length", 15,
                                          "QA: longest answer span, in word pieces.")
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


def _span_results(pre) -> list[dict]:
  """Entities / word labels (tagger) or answers (QA) of the command line's inputs."""
  from bert_jax import span_inference  # pylint: disable=g-import-not-at-top
  top_k = _TOP_K.value or 1
  if "qa" in pre.heads:
    if _INPUT.value is not None:
      if _QUESTION.value is not None or _CONTEXT.value is not None:
        raise UserError("give either --question and --context or --input=FILE, not both")
      return predict.predict_spans(pre, _INPUT.value, top_k, _MAX_ANSWER_LENGTH.value,
                                   _MAX_SEQ_LENGTH.value)
    if _QUESTION.value is None or _CONTEXT.value is None:
      raise UserError("a QA model needs --question and --context (or --input=FILE.jsonl with "
                      "question and context)")
    answers = span_inference.answer(pre, [_QUESTION.value], [_CONTEXT.value], top_k,
                                    _MAX_ANSWER_LENGTH.value, _MAX_SEQ_LENGTH.value)
    return [predict.qa_result(answers[0], top_k)]
  if (_TEXT.value is None) == (_INPUT.value is None):
    raise UserError("give exactly one of --text or --input=FILE (.conll or .jsonl)")
  if _INPUT.value is not None:
    return predict.predict_spans(pre, _INPUT.value, max_seq_length=_MAX_SEQ_LENGTH.value)
  return [{"entities": span_inference.tag(pre, [_TEXT.value], _MAX_SEQ_LENGTH.value)[0]}]


def _print_span(p: dict) -> None:
  if "entities" in p:
    for e in p["entities"]:
      print(f"{e['word']}\t{e['label']}\t{e['start']}\t{e['end']}\t{e['score']:.4f}")
    print()
  elif "labels" in p:
    for word, label in zip(p["words"], p["labels"]):
      print(f"{word}\t{label}")
    print()
  else:
    for a in p.get("top_k", [p]):
      print(f"{a['answer']}\t{a['score']:.4f}\t{a['start']}\t{a['end']}")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if _OUTPUT.value and not os.path.isdir(os.path.dirname(os.path.abspath(_OUTPUT.value))):
    raise UserError(f"--output={_OUTPUT.value}: its directory does not exist")
  pre = convert.from_pretrained(_MODEL.value)
  if "token_classifier" in pre.heads or "qa" in pre.heads:
    _emit(_span_results(pre), _print_span)
    return
  if _QUESTION.value is not None or _CONTEXT.value is not None:
    raise UserError("--question/--context need a QA model; this one has heads "
                    f"{list(pre.heads)}")
  texts, pairs = _inputs()
  predictor = predict.SequencePredictor(pre, _MAX_SEQ_LENGTH.value, _BATCH_SIZE.value)
  if (pairs is not None) != bool((pre.task or {}).get("text_pair", pairs is not None)):
    print("warning: the model was fine-tuned on " + ("text pairs" if pairs is None else
          "single texts") + "; predicting anyway", file=sys.stderr)
  _emit(predictor.predict(texts, pairs), _print_sequence)


def _print_sequence(p: dict) -> None:
  if "value" in p:
    print(f"{p['value']:.4f}")
    return
  best = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:max(1, _TOP_K.value or 3)]
  print("\t".join(f"{label} {prob:.4f}" for label, prob in best))


def _emit(results: list[dict], show) -> None:
  """--output (atomic), then --json lines or the human form, in input order."""
  if _OUTPUT.value:
    predict.write_predictions(_OUTPUT.value, results)
    print(f"{len(results)} predictions -> {_OUTPUT.value}", file=sys.stderr)
    if not _JSON.value:
      return
  for p in results:
    if _JSON.value:
      print(json.dumps(p, ensure_ascii=False))
    else:
      show(p)


if __name__ == "__main__":
  run_main(main, quiet=True)
