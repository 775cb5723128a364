"""Launchers turn bad flags and user errors into one `error:` line and exit 1."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv,culprit", [
    (["fill_mask.py", "--text=x"], "--model"),
    (["embed.py", "--model=m", "--input=i", "--output=o.npy", "--pooling=foo"], "--pooling=foo"),
    (["build_vocab.py", "--output=o", "--no_such_flag=1"], "no_such_flag"),
])
def test_flag_errors_are_one_line(argv, culprit):
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", argv[0]), *argv[1:]],
                     capture_output=True, text=True, timeout=120)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 1
  assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], r.stderr
