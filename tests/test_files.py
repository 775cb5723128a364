"""Tests for bert_jax.files: atomic output dirs/files and input expansion."""

import os
import stat

import pytest

from bert_jax import files
from bert_jax.errors import UserError


def _write(name, text):
  def write(tmp):
    with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
      f.write(text)
  return write


def _leftovers(parent):
  return [n for n in os.listdir(parent) if n.startswith(".")]


def test_existing_output_is_refused_without_overwrite(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  with pytest.raises(UserError, match=f"{out} already exists .*--overwrite"):
    files.write_dir_atomically(str(out), _write("a.txt", "new"))
  (out / "keep.txt").write_text("precious")
  with pytest.raises(UserError, match="already exists and is not empty"):
    files.write_dir_atomically(str(out), _write("a.txt", "new"))
  assert os.listdir(out) == ["keep.txt"]
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="is not a directory"):
    files.write_dir_atomically(str(tmp_path / "file"), _write("a.txt", "new"), overwrite=True)
  assert _leftovers(tmp_path) == []


def test_new_output_and_overwrite_replaces(tmp_path):
  out = tmp_path / "sub" / "out"
  files.write_dir_atomically(str(out), _write("a.txt", "one"))
  assert os.listdir(out) == ["a.txt"]
  files.write_dir_atomically(str(out), _write("b.txt", "two"), overwrite=True)
  assert os.listdir(out) == ["b.txt"] and (out / "b.txt").read_text() == "two"
  assert _leftovers(tmp_path / "sub") == []


@pytest.mark.parametrize("exists", [False, True])
def test_failing_write_leaves_nothing_behind(tmp_path, exists):
  out = tmp_path / "out"
  if exists:
    out.mkdir()
    (out / "old.txt").write_text("old")

  def write(tmp):
    _write("partial.txt", "half")(tmp)
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError, match="boom"):
    files.write_dir_atomically(str(out), write, overwrite=True)
  assert (os.listdir(out) == ["old.txt"]) if exists else not out.exists()
  assert _leftovers(tmp_path) == []


def test_write_file_atomically(tmp_path):
  path = tmp_path / "x.bin"
  files.write_file_atomically(str(path), lambda f: f.write(b"abc"))
  assert path.read_bytes() == b"abc"

  def fail(f):
    f.write(b"half")
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError):
    files.write_file_atomically(str(path), fail)
  assert path.read_bytes() == b"abc" and os.listdir(tmp_path) == ["x.bin"]


def test_expand_inputs_globs_and_commas(tmp_path):
  for name in ("b.txt", "a.txt", "c.jsonl"):
    (tmp_path / name).write_text("x")
  a, b, c = (str(tmp_path / n) for n in ("a.txt", "b.txt", "c.jsonl"))
  assert files.expand_inputs(f"{tmp_path}/*.txt") == [a, b]
  assert files.expand_inputs([f"{c}, {tmp_path}/*.txt", b]) == [c, a, b, b]


@pytest.mark.parametrize("spec, message", [
    ("nope.txt", "nope.txt does not exist"),
    ("*.none", r"\*.none matches no file"),
    ("", "no input files given"),
    (".", "is a directory")])
def test_expand_inputs_errors_name_the_path(tmp_path, spec, message):
  spec = str(tmp_path / spec) if spec else spec
  with pytest.raises(UserError, match=message):
    files.expand_inputs(spec)


def test_outputs_get_ordinary_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    out = tmp_path / "out"
    files.write_dir_atomically(str(out), lambda d: open(os.path.join(d, "a"), "w").close())
    files.write_file_atomically(str(tmp_path / "f.bin"), lambda f: f.write(b"x"))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
  assert stat.S_IMODE(os.stat(tmp_path / "f.bin").st_mode) == 0o644


def test_check_output_refuses_unwritable_places_naming_the_flag(tmp_path):
  files.check_output(str(tmp_path / "x.npy"))  # fine, and leaves nothing behind
  files.check_output(str(tmp_path / "index"), kind="dir")
  assert os.listdir(tmp_path) == []
  with pytest.raises(UserError, match=r"--output=.*/nope/x.npy: directory .*nope does not exist"):
    files.check_output(str(tmp_path / "nope" / "x.npy"))
  with pytest.raises(UserError, match="--output=/sys/x.npy: cannot write in /sys"):
    files.check_output("/sys/x.npy")  # read-only even for root
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(UserError, match="--index_dir=.*a_file exists and is a file"):
    files.check_output(str(tmp_path / "a_file"), "--index_dir", kind="dir")
  with pytest.raises(UserError, match="is a directory"):
    files.check_output(str(tmp_path))
  locked = tmp_path / "locked"
  locked.mkdir()
  os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
  try:
    if os.access(locked, os.W_OK):  # root writes anywhere: /sys above covers it
      return
    with pytest.raises(UserError, match="cannot write in"):
      files.check_output(str(locked / "x.npy"))
  finally:
    os.chmod(locked, stat.S_IRWXU)


def test_read_lines_crlf_and_bad_bytes(tmp_path):
  path = tmp_path / "in.txt"
  path.write_bytes(b"one\r\ntwo\n\nthree")
  assert files.read_lines(str(path)) == ["one", "two", "", "three"]
  path.write_bytes(b"fine\nbad \xff here\n")
  with pytest.raises(UserError, match=r"in.txt:2: not UTF-8 text \(byte 0xff at column 5\)"):
    files.read_lines(str(path))
