r"""Training curves of one or several runs, from their metrics.jsonl.

  python launch/plot.py DIR [DIR ...] [--metrics=loss,eval_accuracy] [--x=step|tokens] \
      --output=FILE.png

One subplot per metric (train rows and `eval_*` rows alike), one line per run,
the legend naming each run by its dir's basename (parent dirs added where two
basenames are equal). `--x=tokens` needs runs that log a `tokens` column.
Exit codes: 0 written, 1 user error (one line on stderr).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax.errors import UserError, run_main  # pylint: disable=g-import-not-at-top

_METRICS = flags.DEFINE_list("metrics", ["loss", "eval_accuracy"],
                             "Comma-separated metric names (metrics.jsonl keys).")
_X = flags.DEFINE_enum("x", "step", ["step", "tokens"], "The x axis.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write.")
_TITLE = flags.DEFINE_string("title", "", "Figure title.")


def main(argv):
  dirs = argv[1:]
  if not dirs:
    raise UserError("give one or more run dirs: python launch/plot.py DIR [DIR ...] "
                    "--output=FILE.png")
  if not _OUTPUT.value:
    raise UserError("--output=FILE.png is required")
  from bert_jax import plots  # pylint: disable=g-import-not-at-top
  data = plots.plot_runs(dirs, _OUTPUT.value, _METRICS.value, _X.value, _TITLE.value)
  runs = sorted({name for by_run in data.values() for name in by_run})
  print(f"{len(data)} metric(s) of {len(runs)} run(s) -> {_OUTPUT.value}")


if __name__ == "__main__":
  run_main(main, quiet=True)
