"""Safe output writes and input-path expansion shared by the data and model tools.

Why a module of its own: every tool (build_vocab, prepare_data, convert, embed)
takes input files the same way and must never leave a half-written output
behind, so there is one rule for each, with one wording of its errors:
- `write_dir_atomically`: a directory is built under a temporary sibling name
  and renamed into place at the end. An existing output is refused unless
  `overwrite`; a failed write leaves neither partial output nor temp dir.
- `write_file_atomically`: the same for a single file (temp sibling, then
  `os.replace`).
- `expand_inputs`: comma-separated lists and globs -> a list of existing files;
  a pattern that matches nothing, a directory or a missing path is a
  `UserError` naming it.
- `check_output`: before any work, that an output can be written where the
  user asked (its directory exists and takes a file), so an hour of embedding
  is not lost to a typo in `--output`.
- `read_lines`: one text per line for the inference tools; a line that is not
  UTF-8 is a `UserError` naming file, line and column.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from typing import BinaryIO, Callable, Sequence

from bert_jax.errors import UserError


def write_dir_atomically(output_dir: str, write: Callable[[str], object],
                         overwrite: bool = False) -> None:
  """Runs `write(tmp_dir)` on a temporary sibling of `output_dir`, then renames it.

  Args:
    output_dir: the directory to create (`~` is expanded).
    write: fills the (existing, empty) directory it is given.
    overwrite: replace an existing `output_dir`; without it any existing
      `output_dir` is refused. A path that is not a directory is always refused.

  Raises:
    UserError: `output_dir` exists (and not `overwrite`) or is not a directory.
  """
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  if os.path.exists(output_dir):
    if not os.path.isdir(output_dir):
      raise UserError(f"output {output_dir} exists and is not a directory")
    if not overwrite:
      state = "already exists and is not empty" if os.listdir(output_dir) else "already exists"
      raise UserError(f"output dir {output_dir} {state} (use --overwrite to replace it)")
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  name = os.path.basename(output_dir)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
  try:
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700: others could not read it.
    write(tmp)
    if os.path.exists(output_dir):
      old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      os.rename(output_dir, os.path.join(old, "dir"))
      try:
        os.rename(tmp, output_dir)
      except BaseException:
        os.rename(os.path.join(old, "dir"), output_dir)  # Put the old output back.
        os.rmdir(old)
        raise
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def write_file_atomically(path: str, write: Callable[[BinaryIO], object]) -> None:
  """Runs `write(f)` on a binary temporary file beside `path`, then renames it to `path`."""
  if os.path.isdir(path):
    raise UserError(f"output {path} is a directory, expected a file path")
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it 0600.
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def expand_inputs(files: str | Sequence[str]) -> list[str]:
  """Files named by comma-separated paths and globs (`~` expanded), in order.

  Args:
    files: one string or several; each may hold comma-separated paths or globs
      (matches of a glob are sorted).

  Returns:
    The paths, every one an existing regular file.

  Raises:
    UserError: a glob matches nothing, a path does not exist or is not a file,
      or no path is given at all.
  """
  specs = [files] if isinstance(files, str) else list(files)
  paths = []
  for spec in specs:
    for part in (p.strip() for p in str(spec).split(",")):
      if not part:
        continue
      part = os.path.expanduser(part)
      matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
      if not matches:
        raise UserError(f"input {part} matches no file")
      for path in matches:
        if os.path.isdir(path):
          raise UserError(f"input {path} is a directory, expected text or JSONL files")
        if not os.path.exists(path):
          raise UserError(f"input file {path} does not exist")
        if not os.path.isfile(path):
          raise UserError(f"input {path} is not a regular file")
      paths.extend(matches)
  if not paths:
    raise UserError("no input files given")
  return paths


def umask() -> int:
  """The process umask (reading it means setting it: set it straight back)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask


def read_json(path: str) -> dict:
  """A JSON file; unreadable JSON is a UserError naming the file."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as exc:
    raise UserError(f"{path} is not valid JSON: {exc}") from None


def jsonl_objects(lines, path: str):
  """(line number, object) of each non-blank JSONL line; a line that is not a JSON object is
  a UserError naming the file and line."""
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as exc:
      raise UserError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
    if not isinstance(row, dict):
      raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    yield number, row


def check_output(path: str, flag: str = "--output", kind: str = "file") -> None:
  """Refuses, naming `flag`, an output that cannot be written, before any work is done.

  Args:
    path: the output the user named (`~` expanded).
    flag: the flag to name in the error.
    kind: 'file' or 'dir': what `path` is to be; an existing path of the other kind is
      refused. Its parent directory must exist and take new entries.

  Raises:
    UserError: the directory is missing or not writable, or `path` is of the wrong kind.
  """
  full = os.path.abspath(os.path.expanduser(path))
  parent = os.path.dirname(full)
  if kind == "file" and os.path.isdir(full):
    raise UserError(f"{flag}={path} is a directory, expected a file path")
  if kind == "dir" and os.path.exists(full) and not os.path.isdir(full):
    raise UserError(f"{flag}={path} exists and is a file, not a directory")
  if not os.path.isdir(parent):
    raise UserError(f"{flag}={path}: directory {parent} does not exist")
  try:  # try it: permissions alone do not tell (root, read-only mounts, ACLs)
    fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=parent)
  except OSError as exc:
    raise UserError(f"{flag}={path}: cannot write in {parent} "
                    f"({exc.strerror or type(exc).__name__})") from None
  os.close(fd)
  os.unlink(probe)


def read_lines(path: str) -> list[str]:
  """One text per line ('\\n' or '\\r\\n'); a non-UTF-8 line is an error naming file and line."""
  with open(path, "rb") as f:
    raw = f.read()
  lines = raw.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  texts = []
  for number, line in enumerate(lines, start=1):
    try:
      texts.append(line.removesuffix(b"\r").decode("utf-8"))
    except UnicodeDecodeError as exc:
      raise UserError(f"{path}:{number}: not UTF-8 text (byte {line[exc.start]:#04x} at column "
                      f"{exc.start + 1})") from None
  return texts
