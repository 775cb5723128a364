"""User-facing errors and the launcher wrapper that turns them into one stderr line.

Why: a researcher who passes a wrong path should read one sentence naming the
path, not a 40-frame traceback. Library code turns bad user input into
`UserError` where it detects it; launchers call `run_main(main)`, which prints
`error: <message>` and exits 1 for those (and for file-system errors on paths
the user gave). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

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
