"""Tests for bert_jax.tokenization: ids equal Hugging Face's BertTokenizer, line by line.

The vocabularies are trained here (cased and uncased) on the committed
multilingual sample plus a short English text, so they hold real pieces of
many scripts and the comparison exercises [UNK], '##' pieces, CJK splitting,
accent stripping and control-character cleaning.
"""

import os
import pickle
import shutil
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm
import tokenizers
import transformers

from bert_jax import tokenization
from bert_jax import vocab_training
from bert_jax.errors import UserError

DATA = os.path.join(os.path.dirname(__file__), "data")
SAMPLE = os.path.join(DATA, "multilingual_sample.txt")

ENGLISH = """\
A tokenizer is the first and the last part of a language model that anybody sees.
It reads raw text, cleans it, splits it into words and then into pieces, and
maps every piece to a number. The model only ever learns about those numbers.
When two programs disagree about a single number, a model trained with one of
them quietly reads nonsense through the other, which is why these tests compare
every line of a multilingual sample against a reference implementation.
Short words such as the, and, of, to, in, is, it and that are common; longer
words such as understanding, tokenization, representation and international
are split into several pieces, each of which starts with two hash marks when it
continues a word. Numbers like 1999, 2024 and 3.14 are split on punctuation.
"""


def read_lines(path=SAMPLE):
  with open(path, encoding="utf-8", newline="") as f:
    text = f.read()
  assert text.endswith("\n")
  return text[:-1].split("\n")


LINES = read_lines()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  path.write_text(ENGLISH * 3 + "\n".join(LINES) + "\n", encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def pair(request, corpus, tmp_path_factory):
  """(our Tokenizer, HF BertTokenizer, HF BertTokenizerLegacy) on one trained vocab."""
  lowercase = request.param
  out = str(tmp_path_factory.mktemp("vocab") / "wp")
  vocab_training.train_wordpiece(corpus, out, vocab_size=1500, lowercase=lowercase)
  ours = tokenization.load_tokenizer(out)
  vocab_file = os.path.join(out, "vocab.txt")
  hf = transformers.BertTokenizer.from_pretrained(out)
  legacy = transformers.BertTokenizerLegacy(vocab_file, do_lower_case=lowercase)
  assert ours.lowercase == lowercase and hf.do_lower_case == lowercase
  return ours, hf, legacy


def test_sample_file_is_generated_from_script():
  import importlib.util
  spec = importlib.util.spec_from_file_location("gen", os.path.join(DATA, "make_multilingual_sample.py"))
  gen = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gen)
  assert gen.LINES == LINES
  assert len(LINES) >= 150
  assert any(len(word) > 100 for line in LINES for word in line.split())
  assert any("\x00" in line for line in LINES) and any("\u200d" in line for line in LINES)


def test_vocab_has_multilingual_pieces(pair):
  ours, _, _ = pair
  tokens = set(ours.convert_ids_to_tokens(range(ours.vocab_size)))
  assert ours.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  for char in ("\u4e2d", "\u306b", "\u0430", "\u03b1", "\u0627", "\u05dc", "\u0e19"):  # CJK, kana, ...
    assert char in tokens or "##" + char in tokens, char
  assert any(t.startswith("##") and len(t) > 3 for t in tokens)


def test_single_texts_match_bert_tokenizer(pair):
  ours, hf, _ = pair
  for line in LINES:
    got, want = ours.encode(line), hf(line)
    assert got["input_ids"] == want["input_ids"], repr(line)
    assert got["token_type_ids"] == want["token_type_ids"]
    assert got["attention_mask"] == want["attention_mask"]
    assert ours.tokenize(line) == hf.tokenize(line), repr(line)
  # The sample really exercises unknown words and continuation pieces.
  all_ids = np.concatenate(ours.encode_plain(LINES))
  assert (all_ids == ours.unk_id).sum() > 10
  assert (~ours.word_start_mask(all_ids)).sum() > 100


def test_python_reference_agrees_but_for_two_known_differences(pair):
  """BertTokenizerLegacy (pure Python, Google's tokenization.py plus NFC) on the same vocab.

  It differs from the Rust pipeline (and so from BertTokenizer and from us) in
  two ways, neutralised here: it NFC-normalises text (visible when cased:
  'e' + U+0301 becomes 'é'), and Python's str.lower() gives a word-final 'Σ'
  the final form 'ς' where the Rust lower-casing gives 'σ' (Google's original
  tokenizer, which also uses str.lower(), gives 'ς' too).
  """
  ours, _, legacy = pair
  differ = []
  for line in LINES:
    text = unicodedata.normalize("NFC", line).replace("\u03a3", "\u03c3")
    assert ours.encode(text)["input_ids"] == legacy(text)["input_ids"], repr(line)
    if ours.encode(line)["input_ids"] != legacy(line)["input_ids"]:
      differ.append(line)
  assert differ  # the sample does hit the difference
  for line in differ:
    assert ("\u03a3" in line) if ours.lowercase else (unicodedata.normalize("NFC", line) != line)


@pytest.mark.parametrize("max_length", [None, 5, 8, 17, 32])
def test_pairs_and_truncation_match(pair, max_length):
  ours, hf, legacy = pair
  kwargs = dict(truncation=True, max_length=max_length) if max_length else {}
  for a, b in zip(LINES[::2], LINES[1::2] + LINES[:1]):
    got = ours.encode(a, b, max_length=max_length)
    want = hf(a, b, **kwargs)
    assert got["input_ids"] == want["input_ids"], (a, b)
    assert got["token_type_ids"] == want["token_type_ids"]
    assert got["attention_mask"] == want["attention_mask"]
    if max_length:
      assert len(got["input_ids"]) <= max_length
      assert ours.encode(a, max_length=max_length)["input_ids"] == hf(a, **kwargs)["input_ids"]


def test_truncated_lengths_follow_tokenizers_library():
  vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])}
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.post_processor = tokenizers.processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
  for max_length in (3, 4, 7, 10):
    tok.enable_truncation(max_length)
    for n_a in range(0, 9):
      for n_b in range(0, 9):
        enc = tok.encode(" ".join("a" * n_a), " ".join("a" * n_b))
        want = (enc.type_ids.count(0) - 2, enc.type_ids.count(1) - 1)
        assert tokenization.truncated_lengths(n_a, n_b, max_length - 3) == want, (n_a, n_b)


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_batch_encode_matches(pair, padding):
  ours, hf, _ = pair
  texts, pairs = LINES[:60], LINES[60:120]
  for second in (None, pairs):
    got = ours.encode_batch(texts, second, max_length=40, padding=padding)
    want = hf(texts, second, truncation=True, max_length=40, padding=padding, return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
      assert got[key].dtype == np.int32
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert got["input_ids"].shape == (60, 40)
  unpadded = ours.encode_batch(LINES, padding="none")
  assert unpadded["input_ids"] == [hf(line)["input_ids"] for line in LINES]
  longest = ours.encode_batch(LINES[:3])
  assert longest["input_ids"].shape[1] == max(len(r) for r in unpadded["input_ids"][:3])


def test_offsets_match(pair):
  ours, hf, _ = pair
  got = ours.encode_batch(LINES, return_offsets=True, padding="longest")
  assert got["offsets"].shape == got["input_ids"].shape + (2,)
  for i, line in enumerate(LINES):
    want = hf(line, return_offsets_mapping=True)["offset_mapping"]
    n = len(want)
    assert [tuple(o) for o in got["offsets"][i, :n].tolist()] == [tuple(o) for o in want], repr(line)
    assert not got["offsets"][i, n:].any()
  text = "the model reads  raw\ttext, pneumonoultramicroscopic."
  enc = ours.encode_batch([text], return_offsets=True, padding="none")
  tokens = ours.convert_ids_to_tokens(enc["input_ids"][0])
  assert enc["offsets"][0][0] == enc["offsets"][0][-1] == (0, 0)
  assert [text[b:e] for b, e in enc["offsets"][0][1:-1]] == [t.removeprefix("##") for t in tokens[1:-1]]


def test_decode_matches(pair):
  ours, hf, _ = pair
  for line in LINES:
    ids = hf(line)["input_ids"]
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), repr(line)
    assert ours.decode(ids, skip_special_tokens=False) == hf.decode(ids), repr(line)
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
  assert ours.decode(ours.encode("the model reads text")["input_ids"]) == "the model reads text"


def test_special_tokens_typed_in_text(pair):
  ours, hf, _ = pair
  ids = ours.encode("IBM [MASK] me BERT.")["input_ids"]
  assert ids == hf("IBM [MASK] me BERT.")["input_ids"]
  assert ids.count(ours.mask_id) == 1 and ids[0] == ours.cls_id and ids[-1] == ours.sep_id
  lower = ours.encode("the [mask] and [cls]")["input_ids"]  # only the exact strings are special
  assert lower == hf("the [mask] and [cls]")["input_ids"]
  assert not set(lower[1:-1]) & ours.special_ids - {ours.unk_id}


def test_word_start_mask_and_encode_plain(pair):
  ours, hf, _ = pair
  plain = ours.encode_plain(LINES)
  for line, ids in zip(LINES, plain):
    assert ids.dtype == np.int32
    assert ids.tolist() == hf(line, add_special_tokens=False)["input_ids"]
  ids = np.array(ours.encode("Pneumonoultramicroscopic understanding")["input_ids"])
  tokens = ours.convert_ids_to_tokens(ids)
  want = np.array([not t.startswith("##") for t in tokens])
  np.testing.assert_array_equal(ours.word_start_mask(ids), want)
  assert want[0] and want[-1] and not want.all()
  batch_BxL = np.stack([ids, ids])
  assert ours.word_start_mask(batch_BxL).shape == (2, len(ids))


def test_save_and_reload(pair, tmp_path):
  ours, _, _ = pair
  ours.save(str(tmp_path / "copy"))
  again = tokenization.load_tokenizer(str(tmp_path / "copy"))
  assert again.lowercase == ours.lowercase and again.vocab_size == ours.vocab_size
  assert again.encode_plain(LINES)[5].tolist() == ours.encode_plain(LINES)[5].tolist()
  unpickled = pickle.loads(pickle.dumps(ours))  # data loaders may ship it to worker processes
  assert unpickled.encode(LINES[3], LINES[4], max_length=12) == ours.encode(LINES[3], LINES[4], max_length=12)
  # A Google-style dir (vocab.txt, no tokenizer_config.json): casing inferred from the vocabulary.
  os.makedirs(tmp_path / "google")
  shutil.copy(tmp_path / "copy" / "vocab.txt", tmp_path / "google" / "vocab.txt")
  google = tokenization.load_tokenizer(str(tmp_path / "google" / "vocab.txt"))
  assert google.lowercase == ours.lowercase
  assert tokenization.load_tokenizer(str(tmp_path / "google"), lowercase=True).lowercase


def test_google_vocab_order(tmp_path):
  """Google's vocab.txt: [PAD]=0, [unused..], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103."""
  tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  tokens += ["the", "cat", "##s", "sat", ".", "Σ"]
  (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
  tok = tokenization.load_tokenizer(str(tmp_path))
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert tok.lowercase  # one upper-case token in 110 is noise: uncased
  hf = transformers.BertTokenizer.from_pretrained(str(tmp_path))
  for text in ("The cats sat.", "the dog", "[MASK] sat"):
    assert tok.encode(text)["input_ids"] == hf(text)["input_ids"]
  assert tok.encode("The cats sat.")["input_ids"] == [101, 104, 105, 106, 107, 108, 102]


def test_text_that_was_not_utf8_is_a_user_error(pair):
  tok = pair[0]
  # Python turns undecodable argv bytes into lone surrogates (surrogateescape).
  bad = b"ok \xff [MASK]".decode("utf-8", errors="surrogateescape")
  with pytest.raises(UserError, match=r"text 1 of texts is not valid UTF-8 \(byte 0xff at character 3\)"):
    tok.encode_batch(["fine", bad])
  with pytest.raises(UserError, match="byte 0xff"):
    tok.encode(bad)


# ------------------------------------------------------------------ SentencePiece


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sp_dir(request, corpus, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("spm") / request.param)
  vocab_training.train_sentencepiece(corpus, out, vocab_size=1500, model_type=request.param)
  return out


def test_sentencepiece_ids_match_library(sp_dir):
  tok = tokenization.load_tokenizer(sp_dir)
  raw = spm.SentencePieceProcessor(model_file=os.path.join(sp_dir, "spm.model"))
  assert tok.kind == "sentencepiece" and tok.vocab_size == raw.get_piece_size()
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.special_ids == frozenset(range(5))
  lines = [line for line in LINES if "[" not in line]
  for line, ids in zip(lines, tok.encode_plain(lines)):
    assert ids.tolist() == raw.encode(line), repr(line)
  enc = tok.encode(LINES[0], LINES[1])
  a, b = raw.encode(LINES[0]), raw.encode(LINES[1])
  assert enc["input_ids"] == [2, *a, 3, *b, 3]
  assert enc["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
  short = tok.encode(LINES[0], LINES[1], max_length=9)
  assert short["input_ids"] == [2, *a[:3], 3, *b[:3], 3]
  ids = tok.encode("IBM [MASK] me BERT.")["input_ids"]
  assert ids == [2, *raw.encode("IBM "), 4, *raw.encode(" me BERT."), 3]
  assert tok.decode(tok.encode(LINES[0])["input_ids"]) == LINES[0]
  assert pickle.loads(pickle.dumps(tok)).encode(LINES[5]) == tok.encode(LINES[5])
  assert tok.decode(ids, skip_special_tokens=False).startswith("[CLS] IBM [MASK] me")
  starts = tok.word_start_mask(np.array(ids))
  pieces = tok.convert_ids_to_tokens(ids)
  assert starts.tolist() == [p.startswith("\u2581") or i in tok.special_ids for p, i in zip(pieces, ids)]


def test_sentencepiece_batch_and_offsets(sp_dir):
  tok = tokenization.load_tokenizer(sp_dir)
  texts = ["Größere Bäume wachsen.", "IBM [MASK] me", "中文里夹杂English单词", ""]
  batch = tok.encode_batch(texts, max_length=12, padding="max_length", return_offsets=True)
  assert batch["input_ids"].shape == (4, 12) and batch["offsets"].shape == (4, 12, 2)
  for i, text in enumerate(texts):
    row = tok.encode(text, max_length=12)["input_ids"]
    assert batch["input_ids"][i, :len(row)].tolist() == row
    assert batch["attention_mask"][i].sum() == len(row)
    surface = [text[b:e] for b, e in batch["offsets"][i][1:len(row) - 1]]
    assert "".join(surface).replace(" ", "") == text.replace(" ", "")[:len("".join(surface).replace(" ", ""))]
  assert surface == [] and batch["input_ids"][3, :2].tolist() == [2, 3]
  at = batch["input_ids"][1].tolist().index(tok.mask_id)
  b, e = batch["offsets"][1, at]
  assert texts[1][b:e] == "[MASK]"


def test_sentencepiece_lowercase(corpus, tmp_path):
  out = str(tmp_path / "lc")
  vocab_training.train_sentencepiece(corpus, out, vocab_size=1200, model_type="unigram", lowercase=True)
  tok = tokenization.load_tokenizer(out)
  assert tok.lowercase
  assert tok.encode_plain(["ÜBER İstanbul"])[0].tolist() == tok.encode_plain(["über i̇stanbul"])[0].tolist()
  offs = tok.encode_batch(["İstanbul X"], return_offsets=True, padding="none")["offsets"][0]
  assert offs[-2][1] == len("İstanbul X")


def test_foreign_sentencepiece_model(corpus, tmp_path):
  """A model trained elsewhere: specials found under their own names, or a clear error."""
  def train(**kwargs):
    model = tmp_path / "m"
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=str(model), vocab_size=1200,
                                   minloglevel=2, hard_vocab_limit=False, **kwargs)
    return str(model) + ".model"

  albert_like = train(pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"])
  tok = tokenization.load_tokenizer(albert_like, lowercase=True)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.encode("a [MASK] b")["input_ids"].count(4) == 1
  assert tok.lowercase
  roberta_like = train(pad_id=1, unk_id=3, bos_id=0, eos_id=2, user_defined_symbols=["<mask>"])
  tok = tokenization.load_tokenizer(roberta_like)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (1, 3, 0, 2)
  assert tok.convert_ids_to_tokens(tok.mask_id) == ["<mask>"]
  no_mask = train()
  with pytest.raises(UserError, match=r"no piece for BERT's \[PAD\]|no piece for BERT's \[MASK\]"):
    tokenization.load_tokenizer(no_mask)


# ------------------------------------------------------------------ errors


def test_load_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    tokenization.load_tokenizer(str(tmp_path / "missing"))
  with pytest.raises(UserError, match="no vocab.txt"):
    tokenization.load_tokenizer(str(tmp_path))
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n", encoding="utf-8")
  with pytest.raises(UserError, match=r"lacks the special token\(s\) \[CLS\], \[SEP\], \[MASK\]"):
    tokenization.load_tokenizer(str(tmp_path))
  (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
  with pytest.raises(UserError, match="not UTF-8"):
    tokenization.load_tokenizer(str(tmp_path))
  (tmp_path / "bad.model").write_bytes(b"not a model")
  with pytest.raises(UserError, match="not a SentencePiece model"):
    tokenization.load_tokenizer(str(tmp_path / "bad.model"))


def test_encode_errors(pair):
  ours, _, _ = pair
  with pytest.raises(UserError, match="list of strings"):
    ours.encode_batch("one string")
  with pytest.raises(UserError, match="no room"):
    ours.encode("a", "b", max_length=2)
  with pytest.raises(UserError, match="needs max_length"):
    ours.encode_batch(["a"], padding="max_length")
  with pytest.raises(UserError, match="2 texts but 1 pairs"):
    ours.encode_batch(["a", "b"], ["c"])
