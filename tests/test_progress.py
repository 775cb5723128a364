"""progress.Progress: rate and ETA from after the first batch, a bar on a terminal, lines when piped."""

import io

from bert_jax import progress


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_eta_leaves_out_the_first_batch_and_piped_lines_are_spaced():
  clock, out = Clock(), io.StringIO()
  report = progress.Progress("embedded", "lines", stream=out, every_s=2.0, clock=clock)
  clock.now = 10.0  # the first batch paid 10 s of compiling
  report(10, 100)
  clock.now = 12.0
  report(20, 100)  # 10 lines in the 2 s since the first batch: 5 lines/s, 80 left
  clock.now = 12.5
  report(25, 100)  # within 2 s of the last line: not printed
  clock.now = 14.0
  report(100, 100)
  lines = out.getvalue().splitlines()
  assert lines == ["embedded 10/100 lines (10s)",
                   "embedded 20/100 lines, 5.0 lines/s, ETA 16s (12s)",
                   "embedded 100/100 lines, 22.5 lines/s (14s)"]


def test_terminal_gets_one_redrawn_bar():
  clock, out = Clock(), Terminal()
  report = progress.Progress("indexed", "lines", stream=out, width=10, clock=clock)
  clock.now = 1.0
  report(50, 200)
  clock.now = 2.0
  report(100, 200)
  clock.now = 70.0
  report(200, 200)
  text = out.getvalue()
  assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
  frames = text.split("\r")[1:]
  assert frames[1] == "[#####.....] indexed 100/200 lines, 50.0 lines/s, ETA 2s (2s)"
  assert frames[2] == "[##########] indexed 200/200 lines, 2.2 lines/s (1m10s)\n"


def test_quick_job_prints_nothing_when_piped():
  clock, out = Clock(), io.StringIO()
  report = progress.Progress(stream=out, clock=clock)
  clock.now = 0.3
  report(5, 5)
  assert out.getvalue() == ""
