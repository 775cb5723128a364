"""A Hugging Face `tokenizer.json` behind bert_jax's `Tokenizer` interface.

Why this module exists: transformers 5's `save_pretrained` writes a BERT's
tokenizer as `tokenizer.json` + `tokenizer_config.json` and no `vocab.txt`,
and ModernBERT ships a byte-level BPE `tokenizer.json`. Both must give the ids
the model was trained with, that is transformers' ids. The file is run by the
`tokenizers` library as it stands: its normaliser (lower-casing, accents), pre-
tokeniser, model (WordPiece, BPE, Unigram), post-processor ([CLS] a [SEP] b
[SEP] and token types) and added tokens; truncation is the library's
longest-first, as in transformers. Nothing BERT-specific is assumed.

Read from `tokenizer_config.json`, as transformers 5 reads it:
- the special tokens (`pad_token`, `unk_token`, `cls_token`, `sep_token`,
  `mask_token`); where the config names none, the post-processor's first and
  last special tokens are [CLS] and [SEP], the model's `unk_token` is [UNK],
  and the usual names ([PAD]/<pad>, [MASK]/<mask>, ...) are looked up. Every
  special the config names that is not yet an added token becomes one (so a
  typed "[MASK]" keeps its id; one missing from the vocabulary gets the next
  id), as transformers does;
- for `tokenizer_class` BertTokenizer (and its aliases), transformers rebuilds
  the normaliser, pre-tokeniser and post-processor from the config
  (`do_lower_case` defaulting to true, `strip_accents`, `tokenize_chinese_chars`,
  [CLS]/[SEP] with token types 0/1) and keeps only the file's vocabulary; so
  do we, so that a file edited out of step with its config still gives
  transformers' ids. Any other class (PreTrainedTokenizerFast, ModernBERT's)
  runs the file unchanged;
- `clean_up_tokenization_spaces` for `decode` (transformers skips it for BPE).

`save` writes the resolved pipeline and the config (with the special tokens
named), which both `load_tokenizer` and transformers' AutoTokenizer read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np
import tokenizers
from tokenizers import normalizers, pre_tokenizers, processors

from bert_jax import files as files_lib
from bert_jax import tokenization
from bert_jax.errors import UserError

FILE_NAME = tokenization.JSON_NAME
CONFIG_NAME = tokenization.CONFIG_NAME
# transformers 5 classes that are BertTokenizer (or a subclass keeping its __init__).
BERT_CLASSES = frozenset({"BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer",
                          "DistilBertTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast"})
_BERT_DEFAULTS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# Token names tried, in order, for a special the config does not name.
_CANDIDATES = {
    "pad": ("[PAD]", "<pad>", "<|padding|>"), "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<cls>", "<s>"), "sep": ("[SEP]", "<sep>", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}
_TRANSFORMERS_ORDER = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_BYTE_LEVEL_SPACE = "\u0120"  # 'Ġ': how the byte-level alphabet writes a space
_METASPACE = "\u2581"  # '▁': Metaspace's default word-boundary mark


class JsonTokenizer(tokenization.LibraryTokenizer):
  """A `tokenizer.json` file (and its `tokenizer_config.json`) run by the `tokenizers` library.

  Attributes (beyond `Tokenizer`'s):
    model_type: the file's model, 'WordPiece', 'BPE', 'Unigram' or 'WordLevel'.
    config: the tokenizer_config.json it was read with (the special tokens filled in).
  """

  kind = "tokenizer_json"

  def __init__(self, text: str, config: Optional[dict] = None, *, source: str = FILE_NAME):
    config = dict(config or {})
    tok = _parse(text, source)
    tok.no_truncation()
    tok.no_padding()
    doc = json.loads(tok.to_str())
    self.model_type = (doc.get("model") or {}).get("type") or type(tok.model).__name__
    if config.get("tokenizer_class") in BERT_CLASSES and self.model_type == "WordPiece":
      _as_bert_tokenizer(tok, config, source)
      doc = json.loads(tok.to_str())
    for name in _CANDIDATES:
      if config.get(f"{name}_token") is None:
        config[f"{name}_token"] = _find_special(tok, doc, name, source)
    _add_named_specials(tok, config, source)
    special = {name: tok.token_to_id(_token_text(config[f"{name}_token"])) for name in _CANDIDATES}
    vocab = tok.get_vocab(with_added_tokens=True)
    id_to_token = [""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
      id_to_token[index] = token
    word_start = _word_starts(id_to_token, doc)
    for index in tok.get_added_tokens_decoder():
      word_start[index] = True
    super().__init__(id_to_token, special, _lowercases(doc.get("normalizer")), word_start)
    self.config = config
    self._json = tok.to_str()
    self._cleanup = bool(config.get("clean_up_tokenization_spaces")) and (
        self.model_type != "BPE" or bool(config.get(
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")))
    self._start_pipelines()

  def _pipeline(self) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_str(self._json)

  def __repr__(self) -> str:
    return (f"JsonTokenizer(model={self.model_type}, vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase})")

  def _rows(self, texts, pairs, max_length, offsets):
    if max_length is not None and self._tok.post_processor is not None:
      needed = self._tok.post_processor.num_special_tokens_to_add(pairs is not None)
      if max_length < needed:
        raise UserError(f"max_length={max_length} leaves no room for the {needed} special tokens "
                        "the tokenizer adds")
    return super()._rows(texts, pairs, max_length, offsets)

  def decode(self, ids, skip_special_tokens=True):
    text = super().decode(ids, skip_special_tokens)
    return clean_up_tokenization(text) if self._cleanup else text

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    config = dict(self.config)
    # Without a class, transformers would take the model's own (BertTokenizer: lower-cased).
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for name, text in ((FILE_NAME, self._json),
                       (CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")):
      data = text.encode("utf-8")
      files_lib.write_file_atomically(os.path.join(directory, name), lambda f, d=data: f.write(d))


def load(path: str, config: dict, lowercase: Optional[bool] = None) -> JsonTokenizer:
  """The tokenizer of a `tokenizer.json` file; `config` is its dir's tokenizer_config.json."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  except IsADirectoryError:
    raise UserError(f"{path} is a directory, expected a tokenizer.json file") from None
  tok = JsonTokenizer(text, config, source=path)
  if lowercase is not None and bool(lowercase) != tok.lowercase:
    raise UserError(f"{path} {'lower-cases' if tok.lowercase else 'keeps case'}; lowercase="
                    f"{bool(lowercase)} cannot change it (its normalizer decides)")
  return tok


def clean_up_tokenization(text: str) -> str:
  """transformers' `clean_up_tokenization`: no space before . ? ! , and English clitics."""
  for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                         (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                         (" 're", "'re")):
    text = text.replace(spaced, joined)
  return text


# --------------------------------------------------------------------------- helpers


def _parse(text: str, source: str) -> tokenizers.Tokenizer:
  try:
    doc = json.loads(text)
  except ValueError as e:
    raise UserError(f"{source} is not valid JSON ({e})") from None
  if not isinstance(doc, dict) or "model" not in doc:
    raise UserError(f"{source} is not a tokenizers file (expected a JSON object with a 'model', "
                    "as transformers' save_pretrained writes)")
  try:
    return tokenizers.Tokenizer.from_str(text)
  except Exception as e:  # pylint: disable=broad-except  (the library raises a bare Exception)
    raise UserError(f"{source} is not a tokenizers file the tokenizers library reads ({e})") from None


def _as_bert_tokenizer(tok: tokenizers.Tokenizer, config: dict, source: str) -> None:
  """What transformers 5's BertTokenizer.__init__ builds around the file's WordPiece vocabulary."""
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
      strip_accents=config.get("strip_accents"), lowercase=bool(config.get("do_lower_case", True)))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = tokenizers.decoders.WordPiece(prefix="##")
  for name, default in _BERT_DEFAULTS.items():
    if config.get(f"{name}_token") is None:
      config[f"{name}_token"] = default
  _add_named_specials(tok, config, source)
  cls, sep = _token_text(config["cls_token"]), _token_text(config["sep_token"])
  tok.post_processor = processors.TemplateProcessing(
      single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
      special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])


def _token_text(value: Any) -> Optional[str]:
  """A config's special token: a string, or an AddedToken as JSON ({"content": ...})."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _added_token(value: Any) -> tokenizers.AddedToken:
  if isinstance(value, dict):
    flags = {k: bool(value[k]) for k in ("single_word", "lstrip", "rstrip", "normalized")
             if k in value}
    return tokenizers.AddedToken(value["content"], special=True, **flags)
  return tokenizers.AddedToken(value, special=True)


def _add_named_specials(tok: tokenizers.Tokenizer, config: dict, source: str) -> None:
  """Makes every special token the config names an added token, as transformers does.

  In transformers' order (bos, eos, unk, sep, pad, cls, mask, then the extra
  ones), so that a named token missing from the vocabulary gets the id it gets
  there: the next free one (a model whose embedding table is smaller says so).
  """
  named = [config.get(f"{key}_token") for key in _TRANSFORMERS_ORDER]
  for key in ("additional_special_tokens", "extra_special_tokens"):
    extra = config.get(key) or []
    named.extend(extra if isinstance(extra, list) else [])
  added = {t.content for t in tok.get_added_tokens_decoder().values()}
  missing = []
  for value in named:
    if value is None:
      continue
    text = _token_text(value)
    if text is None:
      raise UserError(f"{source}: tokenizer_config.json names a special token {value!r}; "
                      "expected a string or an AddedToken object with a 'content'")
    if text not in added:
      missing.append(_added_token(value))
      added.add(text)
  if missing:
    tok.add_special_tokens(missing)


def _find_special(tok: tokenizers.Tokenizer, doc: dict, name: str, source: str) -> str:
  """The token for `name` that the file implies, for a config that names none."""
  candidates = list(_CANDIDATES[name])
  implied = _post_processor_specials(doc.get("post_processor"))
  if implied and name in ("cls", "sep"):
    candidates.insert(0, implied[0] if name == "cls" else implied[-1])
  model_unk = (doc.get("model") or {}).get("unk_token")
  if name == "unk" and isinstance(model_unk, str):
    candidates.insert(0, model_unk)
  for token in candidates:
    if tok.token_to_id(token) is not None:
      return token
  raise UserError(f"{source} has no {name} token: its tokenizer_config.json names no "
                  f"{name}_token and none of {', '.join(candidates)} is in its vocabulary "
                  "(BERT-style models need pad, unk, cls, sep and mask tokens)")


def _post_processor_specials(node: Optional[dict]) -> list[str]:
  """Special tokens of the single-text template, in order ([CLS] ... [SEP])."""
  if not node:
    return []
  kind = node.get("type")
  if kind == "TemplateProcessing":
    return [piece["SpecialToken"]["id"] for piece in node.get("single", []) if "SpecialToken" in piece]
  if kind in ("BertProcessing", "RobertaProcessing"):
    return [node["cls"][0], node["sep"][0]]
  if kind == "Sequence":
    for child in node.get("processors", []):
      found = _post_processor_specials(child)
      if found:
        return found
  return []


def _lowercases(node: Optional[dict]) -> bool:
  """Whether the normalizer (a JSON node of tokenizer.json) lower-cases."""
  if not node:
    return False
  kind = node.get("type")
  if kind == "Lowercase":
    return True
  if kind == "BertNormalizer":
    return bool(node.get("lowercase"))
  if kind == "Sequence":
    return any(_lowercases(child) for child in node.get("normalizers", []))
  return False


def _pre_tokenizer_types(node: Optional[dict]) -> dict[str, dict]:
  if not node:
    return {}
  if node.get("type") == "Sequence":
    found = {}
    for child in node.get("pretokenizers", []):
      found.update(_pre_tokenizer_types(child))
    return found
  return {node.get("type"): node}


def _word_starts(id_to_token: list[str], doc: dict) -> np.ndarray:
  """True where a token begins a word, from how the model marks word boundaries.

  WordPiece (and BPE with a continuing-subword prefix) marks continuations ('##');
  byte-level BPE marks a preceding space ('Ġ'), Metaspace models '▁'. A model with
  no mark (e.g. BPE with an end-of-word suffix) counts every token as a word.
  Byte-level BPE without `add_prefix_space` leaves a text's first word unmarked.
  """
  model = doc.get("model") or {}
  prefix = model.get("continuing_subword_prefix")
  if model.get("type") == "WordPiece" or prefix:
    prefix = prefix or "##"
    return np.array([not t.startswith(prefix) for t in id_to_token], bool)
  kinds = _pre_tokenizer_types(doc.get("pre_tokenizer"))
  if "ByteLevel" in kinds:
    return np.array([t.startswith(_BYTE_LEVEL_SPACE) for t in id_to_token], bool)
  if "Metaspace" in kinds:
    mark = kinds["Metaspace"].get("replacement") or _METASPACE
    return np.array([t.startswith(mark) for t in id_to_token], bool)
  return np.ones(len(id_to_token), bool)
