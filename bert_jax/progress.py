"""Progress of a long inference job on stderr: a live bar on a terminal, plain lines when piped.

Why the ETA starts after the first batch: the first batch pays for compiling
(seconds on CPU, more on a TPU), so a rate measured from the start would make
the first estimates several times too long. The rate is items per second since
the first report. On a terminal one line is redrawn in place (`\\r`); piped to a
file or a log it writes a plain line at most every `every_s` seconds (and one
at the end), so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


def format_duration(seconds: float) -> str:
  """`45s`, `6m10s`, `2h05m`: the one duration format of progress bars and console lines."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f"{minutes}m{seconds:02d}s"
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m"


class Progress:
  """A `progress(done, total)` callback; `Progress("embedded", "lines")(5, 10)`."""

  def __init__(self, verb: str = "done", unit: str = "lines", *, stream: Optional[TextIO] = None,
               every_s: float = 2.0, width: int = 24,
               clock: Callable[[], float] = time.monotonic):
    self.verb, self.unit, self.every_s, self.width = verb, unit, every_s, width
    self.stream = stream if stream is not None else sys.stderr
    self.clock = clock
    self.start = clock()
    self._first: Optional[tuple[float, int]] = None  # (time, done) of the first report
    self._last_line = self.start
    isatty = getattr(self.stream, "isatty", None)
    self.live = bool(isatty and isatty())

  def rate(self, done: int, now: float) -> Optional[float]:
    """Items per second since the first report (None until there are two)."""
    if self._first is None or now <= self._first[0] or done <= self._first[1]:
      return None
    return (done - self._first[1]) / (now - self._first[0])

  def line(self, done: int, total: int, now: float) -> str:
    rate = self.rate(done, now)
    text = f"{self.verb} {done}/{total} {self.unit}"
    if rate is not None:
      text += f", {rate:.1f} {self.unit}/s"
      if done < total:
        text += f", ETA {format_duration((total - done) / rate)}"
    text += f" ({format_duration(now - self.start)})"
    if self.live:
      filled = int(self.width * done / total) if total else self.width
      text = f"[{'#' * filled}{'.' * (self.width - filled)}] " + text
    return text

  def __call__(self, done: int, total: int) -> None:
    now = self.clock()
    if self._first is None:
      self._first = (now, done)
    finished = done >= total
    if self.live:
      self.stream.write("\r" + self.line(done, total, now) + ("\n" if finished else ""))
      self.stream.flush()
      return
    if now - self._last_line >= self.every_s or (finished and now - self.start >= self.every_s):
      self._last_line = now
      print(self.line(done, total, now), file=self.stream, flush=True)
