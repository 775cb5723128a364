"""What the training launchers share: distributed start-up, quiet logs, config-flag checks.

Why a library module: `launch/pretrain.py` and `launch/finetune.py` are thin
absl mains (the only files that define flags); everything they do alike lives
here and takes plain values.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys
from typing import Optional

from absl import flags
from absl import logging

from bert_jax.errors import UserError


def cluster_detected() -> bool:
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


def initialize_distributed(coordinator: Optional[str], num_processes: Optional[int],
                           process_id: Optional[int], distributed: Optional[bool],
                           cpu_collectives: str = "gloo") -> None:
  """jax.distributed.initialize() from explicit flags, or the cluster's environment, or not."""
  import jax  # pylint: disable=g-import-not-at-top

  given = [coordinator, num_processes, process_id]
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise UserError("multi-host needs all of --coordinator_address, --num_processes and "
                      "--process_id (or none of them, inside a TPU/SLURM/MPI job)")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator, num_processes, process_id)
  elif distributed or (distributed is None and cluster_detected()):
    jax.distributed.initialize()


class _QuietOrbax(py_logging.Filter):
  """Orbax logs every save step at INFO; keep its warnings only."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def quiet_logs() -> None:
  """Orbax's per-save INFO lines and JAX's backend probing ('Unable to initialize backend
  tpu') are hidden, so a user error before training is the only line on stderr."""
  py_logging.getLogger("absl").addFilter(_QuietOrbax())
  logging.get_absl_handler().addFilter(_QuietOrbax())
  py_logging.getLogger("jax._src.xla_bridge").setLevel(py_logging.WARNING)


def run_training(config, workdir: str) -> dict:
  """Logs the topology, trains (or resumes) and returns the trainer's result."""
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top

  if config.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  return train.train_and_evaluate(config, workdir)


def check_config_flags(argv: list[str]) -> None:
  """Parses --config and its overrides on a scratch FlagValues first, so that a wrong config
  key, value or file is one line on stderr, not absl's traceback (which run_main cannot catch:
  it happens while flags are parsed). Exits 1 on a bad flag."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

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
