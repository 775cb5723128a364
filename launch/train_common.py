r"""The flags and main shared by launch/pretrain.py and launch/finetune.py.

Multi-host: pass --coordinator_address=HOST:PORT --num_processes=N --process_id=I,
or run under a cluster that `jax.distributed.initialize()` reads by itself: SLURM and
Open MPI jobs are recognised from their environment, TPU pod slices need --distributed
(launch/tpu_pod.sh passes it). A plain machine never calls initialize(). Running
again with the same --workdir resumes.
Exit codes: 0 done, 1 user error (one line on stderr), 143 stopped by SIGTERM
after saving a checkpoint.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import launcher  # pylint: disable=g-import-not-at-top
from bert_jax import platform as platform_lib  # pylint: disable=g-import-not-at-top
from bert_jax.errors import UserError, run_main  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, model files.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0 (multi-host without a cluster env).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() with the cluster's own settings "
    "(TPU pod slice, SLURM, Open MPI). Default: when such an environment is detected.")
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", "gloo", "Cross-process collectives on CPU: gloo or mpi.")


def main(argv, example: str):
  """Trains `--config` in `--workdir`; `example` is shown when a required flag is missing."""
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise UserError(f"--config=CONFIG_FILE and --workdir=DIR are required, e.g. {example}")
  launcher.quiet_logs()
  platform_lib.set_performance_flags()  # XLA GPU flags, before JAX starts its backends
  launcher.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                  _DISTRIBUTED.value, _CPU_COLLECTIVES.value)
  result = launcher.run_training(_CONFIG.value, _WORKDIR.value)
  if result.get("preempted"):
    sys.exit(143)



def run(example: str) -> None:
  """The launcher's entry point."""
  launcher.check_config_flags(sys.argv)
  run_main(lambda argv: main(argv, example))
