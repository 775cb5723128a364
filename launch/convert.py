"""Convert a BERT checkpoint between formats; the input format is detected.

  python launch/convert.py --input=PATH --output=DIR --to=bert_jax|hf [--overwrite]

PATH is a bert_jax export dir or training workdir, a Hugging Face BERT dir or an
original Google BERT dir. The output is written to a temporary dir next to DIR
and renamed at the end; an existing DIR is refused unless --overwrite.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
from bert_jax.errors import run_main  # pylint: disable=g-import-not-at-top

_INPUT = flags.DEFINE_string("input", None, "Model path (format detected).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.", required=True)
_TO = flags.DEFINE_string("to", None, "Output format: bert_jax or hf.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.")


def main(argv):
  del argv
  pre = convert.convert(_INPUT.value, _OUTPUT.value, _TO.value, overwrite=_OVERWRITE.value)
  print(f"wrote {_TO.value} model to {_OUTPUT.value} (from {pre.format}, heads {list(pre.heads)})")


if __name__ == "__main__":
  run_main(main, quiet=True)
