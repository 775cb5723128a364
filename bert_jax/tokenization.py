"""One tokenizer interface over WordPiece (`vocab.txt`), SentencePiece and `tokenizer.json`.

Why this module exists: pretraining data, fine-tuning and inference must turn
text into exactly the ids the checkpoint was trained with. For WordPiece that
means Google BERT's pipeline (clean control characters, split CJK characters,
lower-case and strip accents when uncased, split on punctuation, greedy
longest-match WordPiece with `##` continuations); we build it from the
`tokenizers` library (the same Rust pipeline as Hugging Face's `BertTokenizer`)
rather than by hand, so ids, truncation and offsets match it. SentencePiece
models run on the `sentencepiece` library, with BERT's [CLS]/[SEP]/[MASK]/
[PAD]/[UNK] mapped onto pieces of the model.

All kinds share `Tokenizer`: single texts and pairs become [CLS] a [SEP] b
[SEP] with token types 0/1, truncated longest-first; batches are encoded with
the libraries' batch APIs; `word_start_mask` feeds whole-word masking. A
Hugging Face `tokenizer.json` (what transformers 5 saves, and ModernBERT's
byte-level BPE) runs as its file says: `bert_jax/tokenizer_json.py`.

Vocabulary training lives in `bert_jax/vocab_training.py`; it writes what
`load_tokenizer` reads.
"""

from __future__ import annotations

import glob
import json
import os
import re
import threading
from typing import Iterable, Optional, Sequence

import numpy as np
import sentencepiece as spm
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors

from bert_jax import files as files_lib
from bert_jax.errors import UserError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in vocabularies we train
VOCAB_NAME = "vocab.txt"
SPM_NAME = "spm.model"
JSON_NAME = "tokenizer.json"  # Hugging Face's tokenizers file: bert_jax/tokenizer_json.py
CONFIG_NAME = "tokenizer_config.json"
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT
_SPM_WORD = "\u2581"  # SentencePiece's word-boundary mark
# Piece names tried, in order, for each BERT special in a foreign SentencePiece model.
_SPM_CANDIDATES = {
    "pad": (PAD, "<pad>"), "unk": (UNK, "<unk>"), "cls": (CLS, "<cls>", "<s>"),
    "sep": (SEP, "<sep>", "</s>"), "mask": (MASK, "<mask>"),
}
_PADDINGS = ("longest", "max_length", "none")


class Tokenizer:
  """Text <-> ids with BERT's special tokens; see `load_tokenizer`.

  Attributes:
    kind: 'wordpiece', 'sentencepiece' or 'tokenizer_json'.
    vocab_size: number of ids (rows of the embedding table).
    lowercase: whether text is lower-cased (and, for WordPiece, accent-stripped).
    pad_id, unk_id, cls_id, sep_id, mask_id: ids of the special tokens.
    special_ids: the five ids above.
  """

  kind: str = ""

  def __init__(self, id_to_token: list[str], special: dict[str, int], lowercase: bool,
               word_start: np.ndarray):
    self._id_to_token = id_to_token
    self.vocab_size = len(id_to_token)
    self.lowercase = lowercase
    self.pad_id, self.unk_id = special["pad"], special["unk"]
    self.cls_id, self.sep_id, self.mask_id = special["cls"], special["sep"], special["mask"]
    self.special_ids = frozenset(special.values())
    word_start[list(self.special_ids)] = True
    self._word_start = word_start

  def __repr__(self) -> str:
    return f"{type(self).__name__}(vocab_size={self.vocab_size}, lowercase={self.lowercase})"

  # Backend hooks: pieces without specials, and rows with specials, truncated.
  def _plain(self, texts: list[str], offsets: bool) -> list[tuple[list[int], list]]:
    raise NotImplementedError

  def _rows(self, texts, pairs, max_length, offsets):
    """Rows of (ids, type_ids, offsets) as [CLS] a [SEP] (b [SEP]), truncated."""
    rows = []
    encoded_a = self._plain(texts, offsets)
    encoded_b = self._plain(pairs, offsets) if pairs is not None else [None] * len(texts)
    for (a, off_a), b_enc in zip(encoded_a, encoded_b):
      b, off_b = b_enc if b_enc is not None else ([], [])
      a_len, b_len = len(a), len(b)
      if max_length is not None:
        a_len, b_len = truncated_lengths(a_len, b_len, max_length - (2 if b_enc is None else 3))
      ids = [self.cls_id, *a[:a_len], self.sep_id]
      types = [0] * len(ids)
      offs = [(0, 0), *off_a[:a_len], (0, 0)] if offsets else None
      if b_enc is not None:
        ids += [*b[:b_len], self.sep_id]
        types += [1] * (b_len + 1)
        if offsets:
          offs += [*off_b[:b_len], (0, 0)]
      rows.append((ids, types, offs))
    return rows

  def tokenize(self, text: str) -> list[str]:
    """The tokens of `text`, without special tokens."""
    return self.convert_ids_to_tokens(self.encode_plain([text])[0])

  def encode(self, text: str, text_pair: Optional[str] = None,
             max_length: Optional[int] = None) -> dict[str, list[int]]:
    """[CLS] text [SEP] (text_pair [SEP]) as lists `input_ids`, `token_type_ids`, `attention_mask`."""
    out = self.encode_batch([text], None if text_pair is None else [text_pair],
                            max_length=max_length, padding="none")
    return {key: value[0] for key, value in out.items()}

  def encode_batch(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None,
                   max_length: Optional[int] = None, padding: str = "longest",
                   return_offsets: bool = False) -> dict:
    """Encodes a batch; int32 arrays [N, L] (lists of lists when padding='none').

    Args:
      texts: N first segments.
      pairs: N second segments, or None.
      max_length: truncate each row to this many ids (longest segment first).
      padding: 'longest' (to the longest row), 'max_length' (to max_length) or 'none'.
      return_offsets: add 'offsets' [N, L, 2]: char (start, end) in its own text,
        (0, 0) for special and padding tokens.
    """
    texts = _check_texts(texts, "texts")
    if pairs is not None:
      pairs = _check_texts(pairs, "pairs")
      if len(pairs) != len(texts):
        raise UserError(f"encode_batch got {len(texts)} texts but {len(pairs)} pairs")
    if padding not in _PADDINGS:
      raise UserError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    if padding == "max_length" and max_length is None:
      raise UserError("padding='max_length' needs max_length")
    if max_length is not None and max_length < (3 if pairs is not None else 2):
      raise UserError(f"max_length={max_length} leaves no room for [CLS] and [SEP]")
    rows = self._rows(texts, pairs, max_length, return_offsets)
    if padding == "none":
      out = {"input_ids": [r[0] for r in rows], "token_type_ids": [r[1] for r in rows],
             "attention_mask": [[1] * len(r[0]) for r in rows]}
      if return_offsets:
        out["offsets"] = [[tuple(o) for o in r[2]] for r in rows]
      return out
    length = max_length if padding == "max_length" else max([len(r[0]) for r in rows] + [0])
    ids_NxL = np.full((len(rows), length), self.pad_id, np.int32)
    types_NxL = np.zeros((len(rows), length), np.int32)
    mask_NxL = np.zeros((len(rows), length), np.int32)
    offsets_NxLx2 = np.zeros((len(rows), length, 2), np.int32)
    for i, (ids, types, offs) in enumerate(rows):
      ids_NxL[i, :len(ids)] = ids
      types_NxL[i, :len(ids)] = types
      mask_NxL[i, :len(ids)] = 1
      if return_offsets and ids:
        offsets_NxLx2[i, :len(ids)] = offs
    out = {"input_ids": ids_NxL, "token_type_ids": types_NxL, "attention_mask": mask_NxL}
    if return_offsets:
      out["offsets"] = offsets_NxLx2
    return out

  def encode_plain(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Ids of each text without special tokens or truncation (int32), for data preparation."""
    return [np.asarray(ids, np.int32) for ids, _ in self._plain(_check_texts(texts, "texts"), False)]

  def convert_ids_to_tokens(self, ids: Iterable[int] | int) -> list[str]:
    """Token strings of `ids` (an int gives a one-element list)."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise UserError(f"token id out of range [0, {self.vocab_size}): {ids.min()}..{ids.max()}")
    return [self._id_to_token[i] for i in ids.tolist()]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids`; WordPiece joins '##' pieces, SentencePiece turns '▁' into spaces."""
    raise NotImplementedError

  def word_start_mask(self, ids: np.ndarray) -> np.ndarray:
    """Bool, same shape as ids: True where a token starts a word (special tokens too)."""
    return self._word_start[np.asarray(ids)]

  def save(self, directory: str) -> None:
    """Writes the vocabulary and tokenizer_config.json into `directory`."""
    raise NotImplementedError


def truncated_lengths(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
  """Longest-first truncation of segments of n_a and n_b tokens to `budget` in all.

  The rule of the `tokenizers` library (and so of `BertTokenizer`): the longer
  segment is cut first; when both must be cut the budget is halved and the
  odd token goes to the segment that was longer (the second one on a tie).
  """
  if not n_b:
    return min(n_a, budget), 0
  if n_a + n_b <= budget:
    return n_a, n_b
  short, long_ = sorted((n_a, n_b))
  long_ = short if short > budget else max(short, budget - short)
  if short + long_ > budget:
    short, long_ = budget // 2, budget // 2 + budget % 2
  return (long_, short) if n_a > n_b else (short, long_)


def bert_pipeline(vocab: Optional[dict[str, int]], lowercase: bool,
                  strip_accents: Optional[bool] = None,
                  chinese_chars: bool = True) -> tokenizers.Tokenizer:
  """BERT's basic tokenization + WordPiece, shared by encoding and vocabulary training
  so that a vocabulary is trained on exactly the pieces it will later be asked for."""
  tok = tokenizers.Tokenizer(models.WordPiece(
      vocab, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents,
      lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return tok


class LibraryTokenizer(Tokenizer):
  """A Tokenizer whose whole pipeline, specials and truncation included, is a `tokenizers.Tokenizer`.

  Rows come from the library's own post-processor and longest-first truncation,
  so they equal Hugging Face's fast tokenizers by construction. Subclasses build
  the pipeline (`_pipeline`); it is rebuilt after unpickling.
  """

  def _pipeline(self) -> tokenizers.Tokenizer:
    raise NotImplementedError

  def _start_pipelines(self) -> None:
    self._tok = self._pipeline()  # never truncates
    self._truncating = self._pipeline()  # truncation is state of the object: guarded by a lock
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    for key in ("_tok", "_truncating", "_lock"):
      del state[key]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._start_pipelines()

  def _plain(self, texts, offsets):
    if offsets:
      encodings = self._tok.encode_batch(texts, add_special_tokens=False)
      return [(e.ids, e.offsets) for e in encodings]
    return [(e.ids, None) for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]

  def _rows(self, texts, pairs, max_length, offsets):
    inputs = texts if pairs is None else list(zip(texts, pairs))
    if max_length is None:
      encode = self._tok.encode_batch if offsets else self._tok.encode_batch_fast
      encodings = encode(inputs, add_special_tokens=True)
    else:
      with self._lock:
        tok = self._truncating
        tok.enable_truncation(max_length, strategy="longest_first")
        encode = tok.encode_batch if offsets else tok.encode_batch_fast
        encodings = encode(inputs, add_special_tokens=True)
    return [(e.ids, e.type_ids, e.offsets if offsets else None) for e in encodings]

  def decode(self, ids, skip_special_tokens=True):
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)


class WordPieceTokenizer(LibraryTokenizer):
  """BERT WordPiece over a `vocab.txt`, run by the `tokenizers` library."""

  kind = "wordpiece"

  def __init__(self, id_to_token: list[str], lowercase: bool, *, strip_accents: Optional[bool] = None,
               tokenize_chinese_chars: bool = True, source: str = "vocabulary"):
    vocab = {token: i for i, token in enumerate(id_to_token)}  # a repeated line: the last wins, as HF
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
      raise UserError(f"{source} lacks the special token(s) {', '.join(missing)}")
    special = dict(zip(("pad", "unk", "cls", "sep", "mask"), (vocab[t] for t in SPECIAL_TOKENS)))
    word_start = np.array([not t.startswith("##") for t in id_to_token], bool)
    super().__init__(id_to_token, special, lowercase, word_start)
    self.strip_accents = strip_accents
    self.tokenize_chinese_chars = tokenize_chinese_chars
    self._vocab = vocab
    self._start_pipelines()

  def _pipeline(self) -> tokenizers.Tokenizer:
    tok = bert_pipeline(self._vocab, self.lowercase, self.strip_accents,
                        self.tokenize_chinese_chars)
    tok.post_processor = processors.BertProcessing((SEP, self.sep_id), (CLS, self.cls_id))
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")
    # Special tokens typed in the text ("Paris is the [MASK] of France.") keep their ids.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    _write_file(os.path.join(directory, VOCAB_NAME),
                "".join(t + "\n" for t in self._id_to_token).encode("utf-8"))
    _write_config(directory, {
        "tokenizer_class": "BertTokenizer", "kind": self.kind, "do_lower_case": self.lowercase,
        "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars})


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model, BERT's specials mapped onto its pieces."""

  kind = "sentencepiece"

  def __init__(self, model_proto: bytes, lowercase: bool, *, source: str = "model",
               model_name: str = SPM_NAME):
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(model_proto)
    except Exception as e:  # the library raises RuntimeError/OSError with C++ text
      raise UserError(f"{source} is not a SentencePiece model ({e})") from None
    self._proto = model_proto
    self._model_name = model_name
    size = self._sp.get_piece_size()
    id_to_token = [self._sp.id_to_piece(i) for i in range(size)]
    special = {}
    for name, candidates in _SPM_CANDIDATES.items():
      found = [self._sp.piece_to_id(p) for p in candidates
               if self._sp.id_to_piece(self._sp.piece_to_id(p)) == p]
      if name == "unk" and not found:
        found = [self._sp.unk_id()]
      if name == "pad" and not found and self._sp.pad_id() >= 0:
        found = [self._sp.pad_id()]
      if not found:
        raise UserError(f"{source} has no piece for BERT's {candidates[0]} (looked for "
                        f"{', '.join(candidates)}); BERT needs [PAD], [UNK], [CLS], [SEP] and [MASK]")
      special[name] = found[0]
    word_start = np.array([t.startswith(_SPM_WORD) for t in id_to_token], bool)
    super().__init__(id_to_token, special, lowercase, word_start)
    self._special_by_text = {id_to_token[i]: i for i in self.special_ids}
    self._special_re = re.compile("|".join(
        re.escape(t) for t in sorted(self._special_by_text, key=len, reverse=True)))

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_sp"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._sp = spm.SentencePieceProcessor()
    self._sp.LoadFromSerializedProto(self._proto)

  def _plain(self, texts, offsets):
    # Split out special tokens typed in the text, lower-case the rest, encode all pieces in one batch.
    plans, chunks = [], []
    for text in texts:
      plan, start = [], 0
      for m in self._special_re.finditer(text):
        if m.start() > start:
          plan.append((start, None))
          chunks.append(text[start:m.start()])
        plan.append((m.start(), self._special_by_text[m.group()]))
        start = m.end()
      if start < len(text) or not plan:
        plan.append((start, None))
        chunks.append(text[start:])
      plans.append(plan)
    lowered = [_lower_with_map(c) if self.lowercase else (c, None) for c in chunks]
    inputs = [low for low, _ in lowered]
    if offsets:
      protos = self._sp.encode(inputs, return_type="proto")
      encoded = [_proto_ids_offsets(p, low, index_map)
                 for p, (low, index_map) in zip(protos, lowered)]
    else:
      encoded = [(ids, None) for ids in self._sp.encode(inputs, out_type=int)]
    results, k = [], 0
    for text, plan in zip(texts, plans):
      ids, offs = [], []
      for j, (start, special_id) in enumerate(plan):
        if special_id is not None:
          ids.append(special_id)
          offs.append((start, start + len(self._id_to_token[special_id])))
          continue
        chunk_ids, chunk_offs = encoded[k]
        k += 1
        ids.extend(chunk_ids)
        if offsets:
          offs.extend((start + b, start + e) for b, e in chunk_offs)
      results.append((ids, offs if offsets else None))
    return results

  def decode(self, ids, skip_special_tokens=True):
    pieces, run = [], []
    for i in (int(i) for i in np.asarray(ids).reshape(-1)):
      if i in self.special_ids:
        if run:
          pieces.append(self._sp.decode(run))
          run = []
        if not skip_special_tokens:
          pieces.append(self._id_to_token[i])
      else:
        run.append(i)
    if run:
      pieces.append(self._sp.decode(run))
    return " ".join(p for p in pieces if p)

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    _write_file(os.path.join(directory, self._model_name), self._proto)
    _write_config(directory, {"kind": self.kind, "model_file": self._model_name,
                              "do_lower_case": self.lowercase})


def load_tokenizer(path: str, lowercase: Optional[bool] = None) -> Tokenizer:
  """Loads a tokenizer from a directory, a `vocab.txt`, a `tokenizer.json` or a `.model` file.

  A directory holds `tokenizer.json`, `vocab.txt` or one SentencePiece `*.model`,
  and may hold `tokenizer_config.json` (its `do_lower_case` is used for
  `vocab.txt` unless `lowercase` is given; a `tokenizer.json`'s own normalizer
  decides, see `bert_jax.tokenizer_json`). A WordPiece vocabulary without any
  config (an original Google BERT dir) is taken as uncased unless it holds
  upper-case tokens.

  Precedence in a directory: a bert_jax config (`kind` wordpiece or
  sentencepiece, written by `save`) names its file; otherwise `tokenizer.json`
  wins over `vocab.txt`, as in transformers (Hugging Face dirs saved by
  transformers 4 hold both, from the same vocabulary); then `vocab.txt`, then
  the one `*.model`.
  """
  path = os.path.expanduser(os.fspath(path))
  if not os.path.exists(path):
    raise UserError(f"tokenizer path {path} does not exist (expected a dir with tokenizer.json, "
                    "vocab.txt or a SentencePiece .model, or such a file)")
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  config = _read_config(directory)
  if os.path.isdir(path):
    model_file = config.get("model_file")
    kind = config.get("kind")
    json_file = os.path.join(directory, JSON_NAME)
    if kind == "sentencepiece" and model_file:
      path = os.path.join(directory, model_file)
    elif kind == "wordpiece" and os.path.isfile(os.path.join(directory, VOCAB_NAME)):
      path = os.path.join(directory, VOCAB_NAME)
    elif os.path.isfile(json_file):
      path = json_file
    elif os.path.isfile(os.path.join(directory, VOCAB_NAME)):
      path = os.path.join(directory, VOCAB_NAME)
    else:
      found = sorted(glob.glob(os.path.join(directory, "*.model")))
      if len(found) != 1:
        raise UserError(f"{directory} holds no {JSON_NAME}, no {VOCAB_NAME} and "
                        f"{'several' if found else 'no'} SentencePiece *.model files")
      path = found[0]
  if path.endswith(".json"):
    from bert_jax import tokenizer_json  # pylint: disable=g-import-not-at-top  (imports this module)
    return tokenizer_json.load(path, config, lowercase)
  if lowercase is None:
    lowercase = config.get("do_lower_case")
  if path.endswith(".model"):
    with open(path, "rb") as f:
      proto = f.read()
    return SentencePieceTokenizer(proto, bool(lowercase), source=path,
                                  model_name=os.path.basename(path))
  id_to_token = _read_vocab(path)
  if lowercase is None:
    lowercase = _looks_uncased(id_to_token)
  return WordPieceTokenizer(id_to_token, bool(lowercase), strip_accents=config.get("strip_accents"),
                            tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                            source=path)


# --------------------------------------------------------------------------- helpers


def _check_texts(texts, name: str) -> list[str]:
  if isinstance(texts, str):
    raise UserError(f"{name} must be a list of strings, got one string")
  texts = list(texts)
  for index, t in enumerate(texts):
    if not isinstance(t, str):
      raise UserError(f"{name} must be strings, got {type(t).__name__}")
    try:
      t.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates, e.g. bytes that were not UTF-8 in argv
      bad = t[e.start]
      byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else repr(bad)
      raise UserError(f"text {index} of {name} is not valid UTF-8 ({byte} at character "
                      f"{e.start})") from None
  return texts


def _lower_with_map(text: str) -> tuple[str, Optional[list[int]]]:
  """text.lower(), and where its length changes (e.g. 'İ') the source index of each char."""
  low = text.lower()
  if len(low) == len(text):
    return low, None
  chars, index_map = [], []
  for i, c in enumerate(text):
    lc = c.lower()
    chars.append(lc)
    index_map.extend([i] * len(lc))
  return "".join(chars), index_map


def _proto_ids_offsets(proto, text: str, index_map: Optional[list[int]]):
  """Ids and char offsets of a SentencePieceText (its offsets are in UTF-8 bytes)."""
  if text.isascii():
    byte_to_char = None
  else:
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    byte_to_char = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])
  ids, offs = [], []
  for p in proto.pieces:
    b, e = p.begin, p.end
    if byte_to_char is not None:
      b, e = int(byte_to_char[b]), int(byte_to_char[e])
    while b < e and text[b].isspace():  # '▁word' covers its leading space; offsets do not
      b += 1
    if index_map is not None and e > b:
      b, e = index_map[b], index_map[e - 1] + 1
    ids.append(p.id)
    offs.append((b, e))
  return ids, offs


def _read_vocab(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8", newline="") as f:
      lines = f.read().split("\n")
  except UnicodeDecodeError as e:
    raise UserError(f"vocabulary {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  except IsADirectoryError:
    raise UserError(f"vocabulary {path} is a directory") from None
  if lines and lines[-1] == "":
    lines.pop()
  if not lines:
    raise UserError(f"vocabulary {path} is empty")
  return lines


def _looks_uncased(id_to_token: list[str]) -> bool:
  """Google's uncased vocabularies hold (almost) no upper-case tokens; cased ones hold thousands."""
  upper = sum(1 for t in id_to_token if not t.startswith("[") and t != t.lower())
  return upper <= max(2, len(id_to_token) // 1000)


def _read_config(directory: str) -> dict:
  path = os.path.join(directory, CONFIG_NAME)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e})") from None
  if not isinstance(config, dict):
    raise UserError(f"{path} must hold a JSON object")
  return config


def _write_file(path: str, data: bytes) -> None:
  files_lib.write_file_atomically(path, lambda f: f.write(data))


def _write_config(directory: str, config: dict) -> None:
  _write_file(os.path.join(directory, CONFIG_NAME),
              (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
