"""Tests for launch/build_vocab.py and the training functions behind it.

The launcher is run as a user runs it (a subprocess) for the happy paths and
for bad input, where stderr must be one 'error:' line and no traceback.
"""

import gzip
import json
import os
import subprocess
import sys

import pytest

from bert_jax import tokenization
from bert_jax import vocab_training
from bert_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "multilingual_sample.txt")

TEXT = """\
Vocabulary training reads every line of the corpus once.
It counts the words, then merges frequent pairs of pieces until the vocabulary is full.
A small corpus gives a small vocabulary, and that is fine for a test.
Accents like café, naïve and Straße survive in a cased vocabulary.
"""


def run_launcher(*args):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "build_vocab.py"), *args],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
  return proc.returncode, proc.stdout, proc.stderr


def assert_one_error_line(rc, stderr, *fragments):
  assert rc == 1, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  assert "Traceback" not in stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


@pytest.fixture()
def inputs(tmp_path):
  text = tmp_path / "a.txt"
  text.write_text(TEXT * 5, encoding="utf-8")
  jsonl = tmp_path / "b.jsonl"
  jsonl.write_text("".join(json.dumps({"text": line, "id": i}) + "\n"
                           for i, line in enumerate(TEXT.splitlines() * 5)), encoding="utf-8")
  return tmp_path


def test_launcher_wordpiece_text_and_jsonl(inputs, tmp_path):
  out = tmp_path / "vocab"
  rc, stdout, stderr = run_launcher(f"--input={inputs / '*.txt'},{inputs / 'b.jsonl'},{SAMPLE}",
                                    f"--output={out}", "--vocab_size=700", "--lowercase")
  assert rc == 0, stderr
  summary = json.loads(stdout.strip().splitlines()[-1])
  assert summary["files"] == 3 and summary["lines"] == 20 + 20 + 179
  assert sorted(os.listdir(out)) == ["tokenizer_config.json", "vocab.txt"]
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left behind
  tok = tokenization.load_tokenizer(str(out))
  assert tok.kind == "wordpiece" and tok.lowercase and tok.vocab_size == summary["vocab_size"]
  assert tok.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert tok.tokenize("Vocabulary CAFÉ") == ["vocabulary", "cafe"]
  with open(out / "tokenizer_config.json") as f:
    assert json.load(f)["do_lower_case"] is True


def test_launcher_sentencepiece(inputs, tmp_path):
  out = tmp_path / "spm"
  rc, stdout, stderr = run_launcher(f"--input={SAMPLE},{inputs / 'a.txt'}", f"--output={out}",
                                    "--vocab_size=1200", "--kind=sentencepiece", "--model_type=bpe")
  assert rc == 0, stderr
  assert sorted(os.listdir(out)) == ["spm.model", "tokenizer_config.json"]
  tok = tokenization.load_tokenizer(str(out))
  assert tok.kind == "sentencepiece" and not tok.lowercase
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.decode(tok.encode("It counts the words.")["input_ids"]) == "It counts the words."


@pytest.mark.parametrize("case", ["missing", "empty", "bad_json", "not_empty_output", "bad_flag"])
def test_launcher_bad_input_is_one_line(case, inputs, tmp_path):
  out = tmp_path / "out"
  args = [f"--input={inputs / 'a.txt'}", f"--output={out}", "--vocab_size=500"]
  if case == "missing":
    args[0], want = f"--input={tmp_path / 'nope.txt'}", ["nope.txt", "does not exist"]
  elif case == "empty":
    (tmp_path / "empty.txt").write_text("\n  \n\n", encoding="utf-8")
    args[0], want = f"--input={tmp_path / 'empty.txt'}", ["empty.txt", "holds no text"]
  elif case == "bad_json":
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n', encoding="utf-8")
    args[0], want = f"--input={tmp_path / 'c.jsonl'}", ["c.jsonl:2", "'text'"]
  elif case == "not_empty_output":
    out.mkdir()
    (out / "keep.txt").write_text("precious", encoding="utf-8")
    want = ["not empty"]
  else:
    args.append("--model_type=wordpiece")
    rc, _, stderr = run_launcher(*args)
    assert rc != 0 and "Traceback" not in stderr
    return
  rc, _, stderr = run_launcher(*args)
  assert_one_error_line(rc, stderr, *want)
  if case == "not_empty_output":
    assert os.listdir(out) == ["keep.txt"]
  else:
    assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes(TEXT.encode("utf-8") * 3 + "caf\u00e9 cr\u00e8me\n".encode("latin-1") * 4)
  summary = vocab_training.train_wordpiece(str(path), str(tmp_path / "v"), vocab_size=300)
  assert summary["bad_utf8_lines"] == 4 and summary["lines"] == 16
  tok = tokenization.load_tokenizer(str(tmp_path / "v"))
  assert "\ufffd" not in tok.convert_ids_to_tokens(range(tok.vocab_size))  # BERT cleans U+FFFD


def test_gzipped_corpus_trains_the_same_vocabulary(inputs, tmp_path):
  gz = tmp_path / "a.txt.gz"
  gz.write_bytes(gzip.compress((inputs / "a.txt").read_bytes()))
  plain = vocab_training.train_wordpiece(str(inputs / "a.txt"), str(tmp_path / "p"), 300)
  packed = vocab_training.train_wordpiece(str(gz), str(tmp_path / "g"), 300)
  assert packed["bad_utf8_lines"] == 0 and packed["lines"] == plain["lines"] == 20
  # Read as text, not as compressed bytes: the corpus's words come out whole.
  tok_gz = tokenization.load_tokenizer(str(tmp_path / "g"))
  assert tok_gz.tokenize("the corpus counts the words") == ["the", "corpus", "counts", "the",
                                                            "words"]


def test_cased_wordpiece_and_overwrite(inputs, tmp_path):
  out = str(tmp_path / "v")
  vocab_training.train_wordpiece([str(inputs / "a.txt")], out, vocab_size=400)
  tok = tokenization.load_tokenizer(out)
  assert not tok.lowercase and "Straße" in "".join(tok.tokenize("Straße")).replace("##", "")
  with pytest.raises(UserError, match="not empty"):
    vocab_training.train_wordpiece(str(inputs / "a.txt"), out, vocab_size=400, lowercase=True)
  vocab_training.train_wordpiece(str(inputs / "a.txt"), out, vocab_size=400, lowercase=True,
                               overwrite=True)
  assert tokenization.load_tokenizer(out).lowercase
  assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.jsonl", "v"]


def test_sentencepiece_errors(inputs, tmp_path):
  with pytest.raises(UserError, match="model_type"):
    vocab_training.train_sentencepiece(str(inputs / "a.txt"), str(tmp_path / "s"), 100, "char")
  with pytest.raises(UserError, match="SentencePiece training failed"):
    vocab_training.train_sentencepiece(SAMPLE, str(tmp_path / "s"), 100)  # fewer ids than characters
  assert not (tmp_path / "s").exists()
  with pytest.raises(UserError, match="matches no file"):
    vocab_training.train_sentencepiece(str(tmp_path / "*.none"), str(tmp_path / "s"), 100)
