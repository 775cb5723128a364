"""Tests for bert_jax.tokenizer_json: a `tokenizer.json`-only dir gives transformers' ids.

The dirs are written by transformers itself: (a) BertTokenizer.save_pretrained
of a WordPiece vocabulary trained here (transformers 5 writes tokenizer.json +
tokenizer_config.json and no vocab.txt), uncased, cased, and uncased keeping
accents; (b) a byte-level BPE built with the `tokenizers` library the way
ModernBERT's is (NFC, ByteLevel pre-tokeniser and decoder, [MASK] stripping the
space on its left, TemplateProcessing `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B
[SEP]`), saved through PreTrainedTokenizerFast.save_pretrained. The reference is
AutoTokenizer on the same dir. The text is the committed multilingual sample.
"""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import tokenizers
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from bert_jax import tokenization
from bert_jax import tokenizer_json
from bert_jax import vocab_training
from bert_jax.errors import UserError

DATA = os.path.join(os.path.dirname(__file__), "data")
with open(os.path.join(DATA, "multilingual_sample.txt"), encoding="utf-8", newline="") as _f:
  LINES = _f.read()[:-1].split("\n")
ENGLISH = ("Paris is the capital of France. The model reads the text and learns "
           "the language of the world; it doesn't know what it's reading, they're numbers. "
           "Understanding tokenization is part of representation learning. Un CAFÉ naïve, "
           "déjà vu: Café, naïveté. ") * 4
PAIRS = list(zip(LINES[::2], LINES[1::2] + LINES[:1]))
BERT_KINDS = {"uncased": dict(do_lower_case=True), "cased": dict(do_lower_case=False),
              "uncased_accents": dict(do_lower_case=True, strip_accents=False)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  path.write_text(ENGLISH + "\n" + "\n".join(LINES) + "\n", encoding="utf-8")
  return str(path)


def save_bert_tokenizer(corpus, directory, vocab_size=1500, **kwargs) -> str:
  """A trained WordPiece vocab through transformers 5's BertTokenizer.save_pretrained."""
  vocab_dir = directory + "_vocab"
  # Lower-casing that keeps accents needs a vocabulary with them: train it cased.
  lowercase = kwargs.get("do_lower_case", True) and kwargs.get("strip_accents") is not False
  vocab_training.train_wordpiece(corpus, vocab_dir, vocab_size=vocab_size, lowercase=lowercase)
  transformers.BertTokenizer(os.path.join(vocab_dir, "vocab.txt"), **kwargs).save_pretrained(directory)
  shutil.rmtree(vocab_dir)
  assert sorted(os.listdir(directory)) == ["tokenizer.json", "tokenizer_config.json"]
  return directory


def save_bpe_tokenizer(corpus, directory, vocab_size=1200) -> str:
  """A ModernBERT-style byte-level BPE, saved by transformers."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                               use_regex=True)
  tok.decoder = decoders.ByteLevel()
  with open(corpus, encoding="utf-8") as f:
    text = f.read().split("\n")
  tok.train_from_iterator(text, trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=["<|padding|>"], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True)
                          for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]")])
  tok.add_special_tokens([tokenizers.AddedToken("[MASK]", lstrip=True, special=True)])
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
      mask_token="[MASK]", unk_token="[UNK]", clean_up_tokenization_spaces=True,
      model_max_length=8192).save_pretrained(directory)
  return directory


@pytest.fixture(scope="module", params=[*BERT_KINDS, "bpe"])
def pair(request, corpus, tmp_path_factory):
  """(our tokenizer, transformers' AutoTokenizer, the dir) on one tokenizer.json-only dir."""
  out = str(tmp_path_factory.mktemp("tok") / request.param)
  if request.param == "bpe":
    save_bpe_tokenizer(corpus, out)
  else:
    save_bert_tokenizer(corpus, out, **BERT_KINDS[request.param])
  ours = tokenization.load_tokenizer(out)
  hf = transformers.AutoTokenizer.from_pretrained(out)
  assert ours.kind == "tokenizer_json"
  assert ours.model_type == ("BPE" if request.param == "bpe" else "WordPiece")
  return ours, hf, out


def hf_ids(hf, *args, **kwargs):
  return hf(*args, return_token_type_ids=True, **kwargs)


def test_special_ids_and_casing_read_from_the_dir(pair):
  ours, hf, out = pair
  assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
      hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)
  assert ours.vocab_size == len(hf)
  assert ours.lowercase == json.load(open(os.path.join(out, "tokenizer_config.json"))).get(
      "do_lower_case", False)
  if ours.model_type == "BPE":  # the config's [PAD], not the file's first added token
    assert ours.convert_ids_to_tokens(ours.pad_id) == ["[PAD]"] and ours.pad_id != 0


def test_single_texts_match(pair):
  ours, hf, _ = pair
  for line in LINES + [ENGLISH]:
    got, want = ours.encode(line), hf_ids(hf, line)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
      assert got[key] == want[key], (key, line)
    # hf.tokenize shows an lstrip token with the space it took (' [MASK]'); its id's token is '[MASK]'.
    tokens = hf.convert_ids_to_tokens(hf(line, add_special_tokens=False)["input_ids"])
    assert ours.tokenize(line) == tokens, repr(line)
    if ours.model_type == "WordPiece":
      assert tokens == hf.tokenize(line)
  all_ids = np.concatenate(ours.encode_plain(LINES))
  assert (~ours.word_start_mask(all_ids)).sum() > 100  # continuation pieces were exercised


def test_accents_and_case(pair):
  ours, hf, out = pair
  text = "Élan CAFÉ naïve Über déjà ΣΟΦΙΑ İstanbul e\u0301"
  assert ours.encode(text)["input_ids"] == hf(text)["input_ids"]
  config = json.load(open(os.path.join(out, "tokenizer_config.json")))
  pieces = " ".join(t.removeprefix("##") for t in ours.tokenize("CAFÉ naïve")).replace(" ", "")
  if ours.model_type == "BPE":  # bytes of the text as they are
    assert ours.decode(ours.encode(text)["input_ids"]) == text.replace("e\u0301", "é")  # NFC
  elif not config["do_lower_case"]:
    assert pieces == "CAFÉnaïve"
  elif config["strip_accents"] is False:
    assert pieces == "cafénaïve"
  else:
    assert pieces == "cafenaive"


@pytest.mark.parametrize("max_length", [None, 5, 8, 17, 32])
def test_pairs_and_truncation_match(pair, max_length):
  ours, hf, _ = pair
  kwargs = dict(truncation=True, max_length=max_length) if max_length else {}
  for a, b in PAIRS:
    got, want = ours.encode(a, b, max_length=max_length), hf_ids(hf, a, b, **kwargs)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
      assert got[key] == want[key], (key, a, b)
    if max_length:
      assert len(got["input_ids"]) <= max_length
      assert ours.encode(a, max_length=max_length)["input_ids"] == hf(a, **kwargs)["input_ids"]


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_batch_padding_matches(pair, padding):
  ours, hf, _ = pair
  texts, pairs = LINES[:60], LINES[60:120]
  for second in (None, pairs):
    got = ours.encode_batch(texts, second, max_length=40, padding=padding)
    want = hf_ids(hf, texts, second, truncation=True, max_length=40, padding=padding,
                  return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
      assert got[key].dtype == np.int32
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert got["input_ids"].shape == (60, 40) if padding == "max_length" else True
  assert (got["input_ids"][got["attention_mask"] == 0] == ours.pad_id).all()
  unpadded = ours.encode_batch(LINES, padding="none")
  assert unpadded["input_ids"] == [hf(line)["input_ids"] for line in LINES]


def test_offsets_match(pair):
  ours, hf, _ = pair
  got = ours.encode_batch(LINES, return_offsets=True, padding="longest")
  for i, line in enumerate(LINES):
    want = hf(line, return_offsets_mapping=True)["offset_mapping"]
    assert [tuple(o) for o in got["offsets"][i, :len(want)].tolist()] == [tuple(o) for o in want]
    assert not got["offsets"][i, len(want):].any()


def test_special_tokens_typed_in_text(pair):
  ours, hf, _ = pair
  for text in ("Paris is the [MASK] of France.", "IBM [MASK] me [MASK].", "the [mask] and [cls]",
               "[CLS] twice [SEP] in text [PAD]"):
    got = ours.encode(text)["input_ids"]
    assert got == hf(text)["input_ids"], text
  ids = ours.encode("Paris is the [MASK] of France.")["input_ids"]
  assert ids.count(ours.mask_id) == 1 and ids[0] == ours.cls_id and ids[-1] == ours.sep_id


def test_decode_and_tokens_match(pair):
  ours, hf, _ = pair
  for line in LINES[:80] + ["Paris is the [MASK] of France. It doesn't , they're"]:
    ids = hf(line)["input_ids"]
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), repr(line)
    assert ours.decode(ids, skip_special_tokens=False) == hf.decode(ids), repr(line)
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)


def test_word_start_mask_and_encode_plain(pair):
  ours, hf, _ = pair
  for line, ids in zip(LINES, ours.encode_plain(LINES)):
    assert ids.dtype == np.int32
    assert ids.tolist() == hf(line, add_special_tokens=False)["input_ids"]
  ids = np.array(ours.encode("Pneumonoultramicroscopic understanding of tokenizers")["input_ids"])
  tokens = ours.convert_ids_to_tokens(ids)
  if ours.model_type == "WordPiece":
    want = [not t.startswith("##") for t in tokens]
  else:  # byte-level: a word starts after a space ('Ġ'); the text's first word has none
    want = [t.startswith("\u0120") for t in tokens]
  want[0] = want[-1] = True  # [CLS], [SEP]
  assert ours.word_start_mask(ids).tolist() == want
  assert not all(want) and ours.word_start_mask(np.stack([ids, ids])).shape == (2, len(ids))


def test_save_reload_and_pickle(pair, tmp_path):
  ours, hf, _ = pair
  ours.save(str(tmp_path / "copy"))
  assert sorted(os.listdir(tmp_path / "copy")) == ["tokenizer.json", "tokenizer_config.json"]
  again = tokenization.load_tokenizer(str(tmp_path / "copy"))
  by_file = tokenization.load_tokenizer(str(tmp_path / "copy" / "tokenizer.json"))  # its dir's config
  assert by_file.encode(LINES[9], LINES[10]) == again.encode(LINES[9], LINES[10])
  assert (by_file.pad_id, by_file.mask_id) == (ours.pad_id, ours.mask_id)
  reread = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "copy"))
  assert again.vocab_size == ours.vocab_size and again.lowercase == ours.lowercase
  for a, b in PAIRS[:40]:
    want = hf(a, b, truncation=True, max_length=24)["input_ids"]
    assert again.encode(a, b, max_length=24)["input_ids"] == want
    assert reread(a, b, truncation=True, max_length=24)["input_ids"] == want
  unpickled = pickle.loads(pickle.dumps(ours))  # data loaders ship it to worker processes
  assert unpickled.encode(LINES[3], LINES[4], max_length=12) == ours.encode(LINES[3], LINES[4],
                                                                            max_length=12)
  assert unpickled.decode(ours.encode(LINES[7])["input_ids"]) == ours.decode(
      ours.encode(LINES[7])["input_ids"])


# ------------------------------------------------------------------ what the dir decides


def test_tokenizer_json_wins_over_vocab_txt_unless_bert_jax_wrote_it(corpus, tmp_path):
  """transformers 4 saved both files; bert_jax's own dirs name their kind."""
  out = str(tmp_path / "v4")
  vocab_training.train_wordpiece(corpus, out, vocab_size=800, lowercase=True)
  ours = tokenization.load_tokenizer(out)
  assert ours.kind == "wordpiece"
  transformers.BertTokenizer(os.path.join(out, "vocab.txt")).save_pretrained(str(tmp_path / "hf"))
  shutil.copy(tmp_path / "hf" / "tokenizer.json", out)
  assert tokenization.load_tokenizer(out).kind == "wordpiece"  # its config says kind=wordpiece
  shutil.copy(os.path.join(out, "vocab.txt"), tmp_path / "hf")  # now the v4 layout
  both = tokenization.load_tokenizer(str(tmp_path / "hf"))
  assert both.kind == "tokenizer_json"
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  for line in LINES[:50]:
    assert both.encode(line)["input_ids"] == hf(line)["input_ids"] == ours.encode(line)["input_ids"]


def test_bert_class_config_decides_casing_as_in_transformers(corpus, tmp_path):
  """transformers 5's BertTokenizer rebuilds the normaliser from tokenizer_config.json."""
  out = save_bert_tokenizer(corpus, str(tmp_path / "edited"), vocab_size=800, do_lower_case=False)
  path = os.path.join(out, "tokenizer.json")
  doc = json.load(open(path))
  doc["normalizer"]["lowercase"] = True  # out of step with do_lower_case=false
  json.dump(doc, open(path, "w"))
  hf = transformers.AutoTokenizer.from_pretrained(out)
  ours = tokenization.load_tokenizer(out)
  assert not ours.lowercase
  for line in LINES[:60]:
    assert ours.encode(line)["input_ids"] == hf(line)["input_ids"], line
  assert "Paris" in ours.tokenize("Paris")
  # Another class runs the file as it is (lower-cased), as transformers does.
  config_path = os.path.join(out, "tokenizer_config.json")
  config = json.load(open(config_path))
  config["tokenizer_class"] = "PreTrainedTokenizerFast"
  json.dump(config, open(config_path, "w"))
  hf = transformers.AutoTokenizer.from_pretrained(out)
  ours = tokenization.load_tokenizer(out)
  assert ours.lowercase
  for line in LINES[:60]:
    assert ours.encode(line)["input_ids"] == hf(line)["input_ids"], line


def test_file_without_config_and_specials_from_the_post_processor(corpus, tmp_path):
  """A bare tokenizer.json: [CLS]/[SEP] are the template's, the rest found by name."""
  out = save_bpe_tokenizer(corpus, str(tmp_path / "bare"), vocab_size=600)
  os.remove(os.path.join(out, "tokenizer_config.json"))
  ours = tokenization.load_tokenizer(out)
  raw = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
  assert (ours.cls_id, ours.sep_id, ours.mask_id, ours.pad_id, ours.unk_id) == tuple(
      raw.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"))
  for a, b in PAIRS[:30]:
    assert ours.encode(a, b)["input_ids"] == raw.encode(a, b).ids
  ours.save(str(tmp_path / "saved"))  # names the specials and a class for transformers
  config = json.load(open(tmp_path / "saved" / "tokenizer_config.json"))
  assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["mask_token"] == "[MASK]"
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
  assert hf.mask_token_id == ours.mask_id
  assert hf(LINES[0])["input_ids"] == ours.encode(LINES[0])["input_ids"]


def test_named_specials_become_added_tokens_as_in_transformers(corpus, tmp_path):
  """A config's special missing from the file's added tokens (or from its vocabulary)."""
  out = save_bpe_tokenizer(corpus, str(tmp_path / "bpe"), vocab_size=500)
  path, config_path = os.path.join(out, "tokenizer.json"), os.path.join(out, "tokenizer_config.json")
  doc = json.load(open(path))
  doc["added_tokens"] = [t for t in doc["added_tokens"] if t["content"] not in ("[MASK]", "[PAD]")]
  json.dump(doc, open(path, "w"))
  config = json.load(open(config_path))
  config["mask_token"] = {"__type": "AddedToken", "content": "[MASK]", "lstrip": True,
                          "rstrip": False, "normalized": False, "single_word": False}
  config["pad_token"] = "<pad>"
  json.dump(config, open(config_path, "w"))
  hf = transformers.AutoTokenizer.from_pretrained(out)
  ours = tokenization.load_tokenizer(out)
  assert (ours.mask_id, ours.pad_id) == (hf.mask_token_id, hf.pad_token_id)
  assert ours.vocab_size == len(hf) and ours.convert_ids_to_tokens(ours.pad_id) == ["<pad>"]
  for text in ("Paris is the [MASK] of France.", "a <pad> b [MASK]"):
    assert ours.encode(text)["input_ids"] == hf(text)["input_ids"], text
  # A WordPiece file without added tokens: BertTokenizer's specials are found in its vocabulary.
  out = save_bert_tokenizer(corpus, str(tmp_path / "wp"), vocab_size=800)
  path = os.path.join(out, "tokenizer.json")
  doc = json.load(open(path))
  doc["added_tokens"] = []
  json.dump(doc, open(path, "w"))
  hf = transformers.AutoTokenizer.from_pretrained(out)
  ours = tokenization.load_tokenizer(out)
  for text in ("Paris is the [MASK] of France.", "[CLS] the[SEP]text [PAD]"):
    assert ours.encode(text)["input_ids"] == hf(text)["input_ids"], text
    assert ours.decode(ours.encode(text)["input_ids"]) == hf.decode(hf(text)["input_ids"],
                                                                   skip_special_tokens=True)


def test_bad_tokenizer_json_names_the_file(corpus, tmp_path):
  good = save_bpe_tokenizer(corpus, str(tmp_path / "good"), vocab_size=500)
  bad = tmp_path / "bad"
  shutil.copytree(good, bad)
  path = bad / "tokenizer.json"
  cases = [
      (b'{"version": "1.0", "model": ', "tokenizer.json is not valid JSON"),
      (b"\xff\xfe not text", "tokenizer.json is not UTF-8"),
      (b"[1, 2, 3]", "tokenizer.json is not a tokenizers file"),
      (b'{"model": {"type": "NoSuchModel"}}', "tokenizer.json is not a tokenizers file"),
  ]
  for content, message in cases:
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
      tokenization.load_tokenizer(str(bad))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
  shutil.copy(os.path.join(good, "tokenizer.json"), path)
  config = json.load(open(bad / "tokenizer_config.json"))
  config["pad_token"] = 7
  (bad / "tokenizer_config.json").write_text(json.dumps(config))
  with pytest.raises(UserError, match=r"tokenizer_config.json names a special token 7; expected"):
    tokenization.load_tokenizer(str(bad))
  doc = json.load(open(path))  # a model with no mask token at all
  doc["added_tokens"] = [t for t in doc["added_tokens"] if t["content"] != "[MASK]"]
  path.write_text(json.dumps(doc))
  os.remove(bad / "tokenizer_config.json")
  with pytest.raises(UserError, match=r"has no mask token: .* none of \[MASK\], <mask>"):
    tokenization.load_tokenizer(str(bad))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match="holds no tokenizer.json, no vocab.txt and no SentencePiece"):
    tokenization.load_tokenizer(str(empty))
  with pytest.raises(UserError, match="cannot change it"):
    tokenization.load_tokenizer(good, lowercase=True)


def test_max_length_below_the_special_tokens_is_a_user_error(corpus, tmp_path):
  tok = tokenization.load_tokenizer(save_bpe_tokenizer(corpus, str(tmp_path / "t"), vocab_size=500))
  with pytest.raises(UserError, match="no room"):
    tok.encode("a", "b", max_length=2)
  assert tokenizer_json.clean_up_tokenization("it 's a test , isn't it ?") == "it's a test, isn't it?"
