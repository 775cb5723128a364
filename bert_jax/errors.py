"""User-facing errors and the launcher wrapper that turns them into one stderr line.

Why: a researcher who passes a wrong path should read one sentence naming the
path, not a 40-frame traceback. Library code turns bad user input into
`UserError` where it detects it; launchers call `run_main(main)`, which prints
`error: <message>` and exits 1 for those (and for file-system errors on paths
the user gave, and for a backend named by JAX_PLATFORMS that jax cannot start).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging

from bert_jax import platform as platform_lib


class UserError(ValueError):
  """Bad input from a user: the message names the culprit and what was expected.

  A ValueError, so code that validates values keeps catching it as one.
  """


_USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError)


def _one_line(exc: BaseException) -> str:
  message = str(exc)
  if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
    if exc.filename and exc.strerror:
      message = f"{exc.strerror}: {exc.filename}"
  message = " ".join(message.split()) or type(exc).__name__
  return f"error: {message}"


def _backend_start_error(exc: BaseException) -> Optional[str]:
  """One line for jax failing to start the backend that JAX_PLATFORMS names, else None.

  Why: a command copied from a GPU machine (`JAX_PLATFORMS=cuda`) or a typo in the variable
  is the user's environment, not a bug, but jax reports it from deep in its backend start-up
  (a RuntimeError, or a bare AssertionError for a platform it knows but cannot load). Only an
  exception raised inside jax's backend module with JAX_PLATFORMS set counts, so a bug in
  bert_jax keeps its traceback.
  """
  platforms = os.environ.get("JAX_PLATFORMS")
  if not platforms or not isinstance(exc, (RuntimeError, AssertionError)):
    return None
  frames = traceback.extract_tb(exc.__traceback__)
  if not frames or not frames[-1].filename.endswith(os.path.join("jax", "_src", "xla_bridge.py")):
    return None
  detail = " ".join(str(exc).split())
  return (f"error: JAX_PLATFORMS={platforms!r}: jax could not start that backend on this "
          f"machine{f' ({detail})' if detail else ''}; unset it to use what is available")


def run_main(main: Callable[[list[str]], object], quiet: bool = False,
             inference: bool = False) -> None:
  """`absl.app.run(main)` that reports user errors in one line and exits 1.

  Args:
    main: the launcher's main.
    quiet: for tools whose stdout is the product (fill-mask, embed, convert): library
      INFO logs (Orbax, JAX backend probing) are hidden unless --verbosity is given.
    inference: a tool that runs forwards through `inference.runner`: on CPU it gets one
      jax device per core (`platform.cpu_device_per_core`).
  """

  def wrapped(argv):
    if quiet and not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except _USER_ERRORS as exc:
      print(_one_line(exc), file=sys.stderr, flush=True)
      sys.exit(1)
    except (RuntimeError, AssertionError) as exc:
      line = _backend_start_error(exc)
      if line is None:
        raise
      print(line, file=sys.stderr, flush=True)
      sys.exit(1)
    except KeyboardInterrupt:
      print("error: interrupted", file=sys.stderr, flush=True)
      sys.exit(130)

  # Parse here, before app.run, so that a bad or missing flag is one `error:` line too
  # (absl would print 'FATAL Flags parsing error' and a usage hint).
  app.define_help_flags()
  try:
    remaining = flags.FLAGS(sys.argv)
  except flags.Error as exc:
    print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
    sys.exit(1)
  # CPU runs reuse freed memory instead of mapping it afresh each step; before jax starts
  # its threads (platform.keep_cpu_memory says why).
  platform_lib.keep_cpu_memory()
  if inference:
    platform_lib.cpu_device_per_core()
  # Parsed once only: config_flags defines its --config.KEY flags while parsing.
  app.run(wrapped, flags_parser=lambda argv: remaining)
