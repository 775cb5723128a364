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
  python launch/predict.py --model=MC_MODEL --text="Brom bakes bread." --choices=baker,farmer
  python launch/predict.py --model=MC_MODEL --input=choices.jsonl --json
  python launch/predict.py --model=SUMMARY_MODEL --input=articles.jsonl --json [--top_k=3]

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
A multiple-choice model takes --text=CONTEXT --choices=a,b,c or --input=FILE.jsonl (`context` or
`question`, `choices`) and prints {"label": index, "choice", "probabilities"}.
A summary model takes --text=ARTICLE or --input=FILE.jsonl (`article`) and prints
{"summary", "sentences": [{"index", "text", "score"}]}: --top_k sentences (default 3).

The human form prints each input above its prediction(s) when there are several inputs.
Which flags apply is the model's head's business (bert_jax/heads/<name>.py).
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
_TEXT = flags.DEFINE_string("text", None, "One text to predict (multiple choice: the context).")
_TEXT_PAIR = flags.DEFINE_string("text_pair", None, "Its second text, for pair tasks.")
_INPUT = flags.DEFINE_string("input", None, "File of inputs (training formats) or glue/NAME:SPLIT.")
_OUTPUT = flags.DEFINE_string("output", None, "Write predictions here (.tsv: GLUE format).")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per input instead of a table.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Labels shown per input (table; default 3), or "
                               "answers per question (QA; default 1), or summary sentences "
                               "(default 3).")
_QUESTION = flags.DEFINE_string("question", None, "QA: the question (with --context).")
_CONTEXT = flags.DEFINE_string("context", None, "QA: the text that holds the answer.")
_CHOICES = flags.DEFINE_string("choices", None, "Multiple choice: the choices, comma-separated.")
_MAX_ANSWER_LENGTH = flags.DEFINE_integer("max_answer_length", 15,
                                          "QA: longest answer span, in word pieces.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None,
                                       "Tokens per input (default: the fine-tuning length).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Inputs per batch.")

_INLINE = ("text", "text_pair", "question", "context", "choices")


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr)


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if _OUTPUT.value and not os.path.isdir(os.path.dirname(os.path.abspath(_OUTPUT.value))):
    raise UserError(f"--output={_OUTPUT.value}: its directory does not exist")
  if _OUTPUT.value and not os.access(os.path.dirname(os.path.abspath(_OUTPUT.value)), os.W_OK):
    raise UserError(f"--output={_OUTPUT.value}: its directory is not writable")
  pre = convert.from_pretrained(_MODEL.value)
  head = predict.head_of(pre)
  inline = {k: flags.FLAGS[k].value for k in _INLINE}
  given = sorted(k for k, v in inline.items() if v is not None)
  if _INPUT.value is not None:
    if given:
      raise UserError(f"give either --input=FILE or --{'/--'.join(given)}, not both")
    inputs = head.read_inputs(_INPUT.value)
  elif given:
    inputs = head.command_line_inputs(inline)
  else:
    raise UserError("give exactly one of --text (with optional --text_pair), --question and "
                    "--context, or --input=FILE")
  options = dict(top_k=_TOP_K.value, max_answer_length=_MAX_ANSWER_LENGTH.value,
                 max_seq_length=_MAX_SEQ_LENGTH.value, batch_size=_BATCH_SIZE.value, warn=_warn)
  results = head.predict(pre, inputs, options)
  if _OUTPUT.value:
    predict.write_predictions(_OUTPUT.value, head, results)
    print(f"{len(results)} predictions -> {_OUTPUT.value}", file=sys.stderr)
    if not _JSON.value:
      return
  shown = head.shown_inputs(inputs) if len(results) > 1 else [None] * len(results)
  for shown_input, p in zip(shown, results):
    if _JSON.value:
      print(json.dumps(p, ensure_ascii=False))
      continue
    text = head.show(p, options).rstrip("\n")
    if shown_input is not None:
      print(f"== {shown_input}")
    print(text)
    if "\n" in text or shown_input is not None:
      print()


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
