r"""The paper's tables in one command: fine-tune a model on GLUE, SQuAD or CoNLL-2003.

  python launch/benchmark.py --suite=glue --init_checkpoint=PATH --workdir=DIR \
      [--tasks=cola,sst2,...] [--learning_rates=5e-5,4e-5,3e-5,2e-5] [--seeds=1] \
      [--data=tfds|GLUE_DIR] [--task_epochs=mrpc=5,wnli=5] [--config=configs/finetune.py] \
      [--config.KEY=VALUE ...]

Each task x learning rate x seed is a normal fine-tuning workdir DIR/<task>/lr<lr>_seed<s>
(configs/finetune.py: the paper's batch 32, 3 epochs), run one after another; running the
same command again skips finished runs and resumes a half-finished one. The best run per
task (dev score of its main metric) gives the table (DIR/results.md, results.json, each
figure with its workdir), the plots (DIR/plots/<task>.png) and, for GLUE, the server's
files (DIR/submission/, DIR/submission.zip). --suite=squad1|squad2|conll: --data=DIR holds
train/dev JSON or CoNLL files (or tfds). --check_counts=false turns a test set whose size is
not the official one into a warning (small or partial test files).
Exit codes: 0 done, 1 user error (one line on stderr), 143 stopped by SIGTERM (run again).
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import launcher  # pylint: disable=g-import-not-at-top
from bert_jax.errors import UserError, run_main  # pylint: disable=g-import-not-at-top

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_ROOT, "configs", "finetune.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, f"Fine-tuning config every run starts from (default {_DEFAULT_CONFIG}).",
    lock_config=True)
_SUITE = flags.DEFINE_string("suite", None, "glue, squad1, squad2 or conll.")
_INIT = flags.DEFINE_string("init_checkpoint", None, "The model to fine-tune (any model path).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Suite directory: one workdir per run, results.")
_TASKS = flags.DEFINE_list("tasks", [], "GLUE tasks (default: all nine).")
_LRS = flags.DEFINE_string("learning_rates", "5e-5,4e-5,3e-5,2e-5",
                           "Comma-separated peak learning rates to sweep.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per learning rate (1..N).")
_DATA = flags.DEFINE_string("data", "tfds", "tfds, or a dir in the original GLUE download "
                            "layout (SQuAD: train/dev JSON; CoNLL: CoNLL files).")
_TASK_EPOCHS = flags.DEFINE_list(
    "task_epochs", [], "TASK=EPOCHS pairs (e.g. mrpc=5,wnli=5) replacing config.num_epochs for "
    "those tasks; default: the paper's 3 epochs everywhere.")
_CHECK_COUNTS = flags.DEFINE_bool("check_counts", True,
                                  "Refuse test sets whose size is not the official one.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not _SUITE.value or not _WORKDIR.value:
    raise UserError("--suite=glue|squad1|squad2|conll, --init_checkpoint=PATH and "
                    "--workdir=DIR are required")
  launcher.quiet_logs()
  from bert_jax.suite import benchmark  # pylint: disable=g-import-not-at-top
  from bert_jax.suite import glue  # pylint: disable=g-import-not-at-top
  from bert_jax.suite import runs  # pylint: disable=g-import-not-at-top
  options = benchmark.Options(
      suite=_SUITE.value, init_checkpoint=_INIT.value or "", workdir=_WORKDIR.value,
      tasks=_TASKS.value, learning_rates=runs.parse_learning_rates(_LRS.value),
      seeds=_SEEDS.value, data=_DATA.value, check_counts=_CHECK_COUNTS.value,
      task_epochs=runs.parse_task_epochs(_TASK_EPOCHS.value, list(glue.TASKS)))
  result = benchmark.run(options, _CONFIG.value)
  if result.get("preempted"):
    sys.exit(143)


def _with_default_config(argv: list[str]) -> list[str]:
  """argv with --config=configs/finetune.py first when no --config is given (a flag default
  would be parsed when defined, before its overrides could be checked)."""
  if any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
    return argv
  return argv[:1] + [f"--config={_DEFAULT_CONFIG}"] + argv[1:]


if __name__ == "__main__":
  sys.argv = _with_default_config(sys.argv)
  launcher.check_config_flags(sys.argv)
  run_main(main)
