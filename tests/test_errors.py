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


@pytest.mark.parametrize("raised,one_line", [
    ("UserError('config.x=3 is not allowed')", True),
    ("FileNotFoundError(2, 'No such file', '/no/such')", True),
    ("ValueError('an internal bug')", False),
    ("KeyError('k')", False),
])
def test_only_user_errors_are_one_line(raised, one_line):
  """A bug keeps its traceback; bad input (UserError, a missing path) is one line."""
  script = ("from bert_jax.errors import UserError, run_main\n"
            f"def main(argv):\n  raise {raised}\n"
            "run_main(main)\n")
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode == 1
  lines = r.stderr.strip().splitlines()
  if one_line:
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
  else:
    assert "Traceback" in r.stderr and not lines[-1].startswith("error: "), r.stderr


@pytest.mark.parametrize("platforms", ["no_such_backend", "cuda", "tpu"])
def test_unavailable_jax_platform_is_one_line(platforms):
  """JAX_PLATFORMS naming a backend this machine cannot start (a typo, or a GPU/TPU command
  run on another machine) is the user's environment: one line naming it, exit 1."""
  import jax  # pylint: disable=g-import-not-at-top
  if platforms == jax.default_backend() or (platforms == "cuda" and jax.default_backend() == "gpu"):
    pytest.skip(f"this machine has the {platforms} backend")
  script = ("from bert_jax.errors import run_main\n"
            "import jax\n"
            "def main(argv):\n  print(jax.devices())\n"
            "run_main(main)\n")
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS=platforms))
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 1 and r.stdout == "", r.stderr
  assert len(lines) == 1 and lines[0].startswith(f"error: JAX_PLATFORMS={platforms!r}"), r.stderr


def test_assertion_outside_jax_backend_start_keeps_traceback():
  """With JAX_PLATFORMS set, a failed assertion in bert_jax's own code is still a bug."""
  script = ("from bert_jax.errors import run_main\n"
            "def main(argv):\n  assert False, 'a bug'\n"
            "run_main(main)\n")
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  assert r.returncode == 1
  assert "Traceback" in r.stderr and "AssertionError: a bug" in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["abc", "2.5", ""])
def test_malformed_cpu_device_count_is_one_line(value, tmp_path):
  """jax parses JAX_NUM_CPU_DEVICES while a launcher imports it, before run_main: a typo
  there is still one line naming it, exit 1, and nothing written."""
  text = tmp_path / "in.txt"
  text.write_text("a line\n")
  out = tmp_path / "out.npy"
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "embed.py"), "--model=m",
                      f"--input={text}", f"--output={out}"], capture_output=True, text=True,
                     timeout=120, env=dict(os.environ, JAX_NUM_CPU_DEVICES=value))
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 1 and not out.exists(), r.stderr
  assert len(lines) == 1 and lines[0].startswith(f"error: JAX_NUM_CPU_DEVICES={value!r}"), r.stderr
