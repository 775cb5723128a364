r"""MLM+NSP pretraining launcher (single host, multi-host, TPU pod, SLURM).

  python launch/pretrain.py --config=configs/tiny.py --workdir=/tmp/bert_tiny \
      [--config.KEY=VALUE ...]

Multi-host: pass --coordinator_address=HOST:PORT --num_processes=N --process_id=I,
or run under a cluster that `jax.distributed.initialize()` reads by itself: SLURM and
Open MPI jobs are recognised from their environment, TPU pod slices need --distributed
(launch/tpu_pod.sh passes it). A plain machine never calls initialize(). Running
again with the same --workdir resumes.
Exit codes: 0 done, 1 user error (one line on stderr), 143 stopped by SIGTERM
after saving a checkpoint.
"""

import logging as py_logging
import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def _cluster_detected() -> bool:
  """A cluster environment that jax.distributed.initialize() can read by itself."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  # TPU VM of a multi-host slice: the worker list names more than one host.
  hostnames = env.get("TPU_WORKER_HOSTNAMES", "")
  return (len([h for h in hostnames.split(",") if h]) > 1
          or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS")))


def _initialize_distributed() -> None:
  import jax  # pylint: disable=g-import-not-at-top

  given = [_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value]
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise UserError("multi-host needs all of --coordinator_address, --num_processes and "
                      "--process_id (or none of them, inside a TPU/SLURM/MPI job)")
    jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _DISTRIBUTED.value or (_DISTRIBUTED.value is None and _cluster_detected()):
    jax.distributed.initialize()


class _QuietOrbax(py_logging.Filter):
  """Orbax logs every save step at INFO; keep its warnings only."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise UserError("--config=CONFIG_FILE and --workdir=DIR are required, e.g. "
                    "--config=configs/tiny.py --workdir=/tmp/bert_tiny")
  py_logging.getLogger("absl").addFilter(_QuietOrbax())
  logging.get_absl_handler().addFilter(_QuietOrbax())
  _initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if config.get("compilation_cache_dir"):
    jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  logging.info("JAX %s: %d processes, %d devices (%s)", jax.__version__, jax.process_count(),
               jax.device_count(), jax.devices()[0].device_kind)
  result = train.train_and_evaluate(config, _WORKDIR.value)
  if result.get("preempted"):
    sys.exit(143)


def _check_config_flags(argv: list[str]) -> None:
  """Parses --config and its overrides on a scratch FlagValues first, so that a wrong config
  key, value or file is one line on stderr, not absl's traceback (which run_main cannot catch:
  it happens while flags are parsed)."""
  probe = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=probe)
  try:
    probe(argv, known_only=True)
    if probe["config"].value is not None:
      probe["config"].value.keys()  # config_flags loads the file lazily
  except (AttributeError, KeyError) as e:  # unknown key: ml_collections' "did you mean"
    while e.args and isinstance(e.args[0], BaseException):
      e = e.args[0]
    msg = str(e.args[0] if e.args else e).strip("'\"")
    first = msg.split("\n")[0].strip("'\"")
    key = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                and a.split("=")[0].rsplit(".", 1)[-1] == first), first)
    hint = msg.split("\n", 1)[1].strip() if "\n" in msg else ""
    _fail(f"unknown config key {key}" + (f" ({hint})" if hint else ""))
  except flags.Error as e:
    _fail(" ".join(str(e).split()))
  except (OSError, SyntaxError, NameError, ImportError) as e:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith("[Errno")), lines[-1] if lines else "")
    _fail(f"cannot load --config: {detail}")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


if __name__ == "__main__":
  _check_config_flags(sys.argv)
  run_main(main)
