"""Attention of a BERT model over a text: a table, JSON, a PNG grid of heatmaps or an HTML view.

  python launch/attention.py --model=PATH --text="The bank of the river was flooded." \
      [--text_pair=T] [--layer=L|all] [--head=H|all|mean] [--word=bank] [--rollout] \
      [--output=FILE.png|FILE.html] [--json]

--json prints {"tokens": [...], "attention": [layers][heads][query][key], "layers",
"heads"} (transformers' output_attentions order; --layer/--head narrow it, the
default is every layer and head), plus "rollout" [query][key] with --rollout and
"word" with --word. Otherwise a table: with --word the tokens that word attends to
most per layer; else each token's top keys in the view picked (--rollout: the
whole-model attention rollout). --output=*.png draws layers x heads heatmaps,
--output=*.html writes a self-contained page to explore them by hovering.
"""

import json
import os
import sys

from absl import flags

from bert_jax.errors import UserError
from bert_jax.errors import run_main

_MODEL = flags.DEFINE_string("model", None, "Model path (any supported format).", required=True)
_TEXT = flags.DEFINE_string("text", None, "The text to look at.", required=True)
_TEXT_PAIR = flags.DEFINE_string("text_pair", None, "A second segment ([SEP]-separated).")
_LAYER = flags.DEFINE_string("layer", "all", "A layer index (negative from the end) or 'all'.")
_HEAD = flags.DEFINE_string("head", "all", "A head index, 'all', or 'mean' (over heads).")
_WORD = flags.DEFINE_string("word", None, "A word of the text: what it attends to most.")
_ROLLOUT = flags.DEFINE_bool("rollout", False, "Attention rollout (Abnar & Zuidema 2020).")
_OUTPUT = flags.DEFINE_string("output", None, "A heatmap grid FILE.png or a view FILE.html.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of tables.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Tokens per row of the tables.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None, "Truncate to this many tokens.")


def main(argv):
  del argv
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  from bert_jax.inference import attention  # pylint: disable=g-import-not-at-top
  from bert_jax.inference import attention_render as render  # pylint: disable=g-import-not-at-top
  output = _OUTPUT.value
  if output is not None:
    if not output.lower().endswith((".png", ".html")):
      raise UserError(f"--output={output}: name a *.png (heatmaps) or *.html (view) file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
      raise UserError(f"--output={output}: directory {os.path.dirname(os.path.abspath(output))} "
                      "does not exist")
  if _TOP_K.value < 1:
    raise UserError(f"--top_k={_TOP_K.value}: must be >= 1")
  config = convert.read_model_config(_MODEL.value)  # validate the view before loading weights
  layer = attention.parse_layer(_LAYER.value, config.num_layers)
  head = attention.parse_head(_HEAD.value, config.num_heads)
  pre = convert.from_pretrained(_MODEL.value)
  att = attention.attention(pre, _TEXT.value, _TEXT_PAIR.value, _MAX_SEQ_LENGTH.value)
  if att.truncated:
    print(f"note: the text was truncated to {len(att.tokens)} tokens", file=sys.stderr)
  word = (attention.word_attention(att, _WORD.value, _TEXT.value, _TEXT_PAIR.value)
          if _WORD.value is not None else None)
  document = attention.to_json(att, layer, head, with_rollout=_ROLLOUT.value)
  if _JSON.value:
    if word is not None:
      document["word"] = {"word": word.word, "pieces": word.pieces,
                          "per_layer": word.per_layer_NxL.tolist(),
                          "overall": word.overall_L.tolist()}
    print(json.dumps(document, ensure_ascii=False))
  elif word is not None:
    print(render.word_table(att, word, _TOP_K.value))
  elif _ROLLOUT.value:
    print(render.top_table(att.tokens, attention.rollout(att.probs_NxHxLxL),
                           "attention rollout: where each token's output flows from",
                           _TOP_K.value))
  else:
    view = attention.select(att, layer, head)
    rows, cols = render.grid_names(layer, head, *att.probs_NxHxLxL.shape[:2])
    for r, row in enumerate(rows):
      for c, col in enumerate(cols):
        print(render.top_table(att.tokens, view[r, c], f"{row}, {col}", _TOP_K.value) + "\n")
  if output is None:
    return
  text = _TEXT.value + (f" / {_TEXT_PAIR.value}" if _TEXT_PAIR.value is not None else "")
  title = f"{os.path.normpath(_MODEL.value)}: {text}"
  if output.lower().endswith(".html"):
    render.save_html(output, document, title)
  elif _ROLLOUT.value:
    render.save_png(output, att.tokens, attention.rollout(att.probs_NxHxLxL)[None, None],
                    ["rollout"], ["all layers"], title)
  else:
    render.save_png(output, att.tokens, attention.select(att, layer, head),
                    *render.grid_names(layer, head, *att.probs_NxHxLxL.shape[:2]), title)
  print(f"attention -> {output}", file=sys.stderr)


if __name__ == "__main__":
  run_main(main, quiet=True, inference=True)
