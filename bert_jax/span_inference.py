"""Inference with token-level heads: entities of a tagger, answer spans of a QA model.

Why the outputs look like this: users compare with the Hugging Face pipelines,
so both follow their conventions on the same weights.
- Tagging is word-level, as the model was trained (the label of a word is on
  its first piece): each word takes the argmax of its first piece's softmax and
  that probability as its score; words are grouped into entities as the
  token-classification pipeline with `aggregation_strategy="first"` does
  (`tasks.entities.group_words`), with the character span of the entity in the
  input text. A text longer than the model's rows is tagged in windows of whole
  words.
- QA is the classic question-answering postprocessing: per window, softmax of
  the start and of the end logits over the context pieces; spans with start <=
  end < start + max_answer_length ranked by the product of the two
  probabilities (`tasks.squad_eval.top_spans`); over windows the best spans
  win. Answers are character spans of the original context.
Rows of all inputs are batched by length bucket (`inference.plan_batches`), so
each bucket compiles once.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from bert_jax import inference
from bert_jax import model as model_lib
from bert_jax.data.readers import conll
from bert_jax.data.readers import squad
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained
from bert_jax.tasks import entities as entities_lib
from bert_jax.tasks import squad_eval


@functools.lru_cache(maxsize=8)
def _forward(config: model_lib.BertConfig, kind: str, num_labels: int) -> Callable:
  if kind == "tagging":
    module = model_lib.BertForTokenClassification(config, num_labels=num_labels)
  else:
    module = model_lib.BertForQuestionAnswering(config)

  def forward(params, ids, types, mask):
    out = module.apply({"params": params}, ids, types, mask)
    if kind == "tagging":
      return jax.nn.softmax(out, axis=-1)
    return out["start_logits"], out["end_logits"]

  return jax.jit(forward)


def _run(pre: Pretrained, kind: str, rows: Sequence[tuple[np.ndarray, np.ndarray]],
         max_length: int) -> list:
  """Per row, the head's outputs over its real positions (rows batched by length bucket)."""
  forward = _forward(pre.config, kind, pre.num_labels or 0)
  lengths = [len(ids) for ids, _ in rows]
  out: list = [None] * len(rows)
  for members, length in inference.plan_batches(lengths, max_length, 4096):
    ids = np.full((len(members), length), pre.tokenizer.pad_id, np.int32)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for b, r in enumerate(members):
      n = lengths[r]
      ids[b, :n], types[b, :n], mask[b, :n] = rows[r][0], rows[r][1], 1
    result = jax.device_get(forward(pre.params, ids, types, mask))
    for b, r in enumerate(members):
      n = lengths[r]
      out[r] = (result[b, :n] if kind == "tagging"
                else (result[0][b, :n], result[1][b, :n]))
  return out


def _task_setting(pre: Pretrained, key: str, default: int) -> int:
  return int((pre.task or {}).get(key) or default)


# --- Tagging. ---

def tag(pre: Pretrained, texts: Sequence[str], max_seq_length: Optional[int] = None
        ) -> list[list[dict]]:
  """Entities of each text: [{word, label, start, end, score}] (char offsets in the text)."""
  if "token_classifier" not in pre.heads:
    raise UserError(f"this model has no token-classification head (heads: {list(pre.heads)})")
  labels = pre.labels or [f"LABEL_{i}" for i in range(pre.num_labels)]
  max_length = inference.default_max_length(
      pre.config, max_seq_length or _task_setting(pre, "max_seq_length", 0) or None)
  tok = pre.tokenizer
  enc = tok.encode_batch(list(texts), padding="none", return_offsets=True)
  rows, plan = [], []  # plan[t] = [(row, first piece index in the text's pieces), ...]
  words_of = []
  for ids, offsets in zip(enc["input_ids"], enc["offsets"]):
    pieces = np.asarray(ids[1:-1], np.int32)
    offs = np.asarray(offsets[1:-1], np.int32).reshape(-1, 2)
    starts = np.nonzero(tok.word_start_mask(pieces))[0] if len(pieces) else np.zeros(0, int)
    words_of.append((pieces, offs, starts))
    # Windows of whole words, each at most max_length - 2 pieces (a longer word is cut).
    bounds = list(starts) + [len(pieces)]
    windows, begin = [], 0
    for k in range(1, len(bounds)):
      if bounds[k] - bounds[begin] > max_length - 2 and k - 1 > begin:
        windows.append((begin, k - 1))
        begin = k - 1
    windows.append((begin, len(bounds) - 1))
    text_rows = []
    for a, b in windows:
      lo, hi = bounds[a], min(bounds[b], bounds[a] + max_length - 2)
      row_ids = np.concatenate([[tok.cls_id], pieces[lo:hi], [tok.sep_id]]).astype(np.int32)
      text_rows.append((len(rows), lo, a, b))
      rows.append((row_ids, np.zeros_like(row_ids)))
    plan.append(text_rows)
  probs = _run(pre, "tagging", rows, max_length) if rows else []
  results = []
  for text, (pieces, offs, starts), text_rows in zip(texts, words_of, plan):
    word_labels, word_scores = [], []
    for row, lo, a, b in text_rows:
      for w in range(a, b):
        p = probs[row][1 + starts[w] - lo]
        word_labels.append(labels[int(np.argmax(p))])
        word_scores.append(float(np.max(p)))
    ends = list(starts[1:]) + [len(pieces)]
    found = []
    for kind, first, last, score in entities_lib.group_words(word_labels, word_scores):
      start, end = int(offs[starts[first], 0]), int(offs[ends[last] - 1, 1])
      found.append({"word": text[start:end], "label": kind, "start": start, "end": end,
                    "score": score})
    results.append(found)
  return results


def tag_words(pre: Pretrained, sentences: Sequence[Sequence[str]],
              max_seq_length: Optional[int] = None) -> list[list[tuple[str, float]]]:
  """(label, score) of every word of pre-split sentences (CoNLL input), as in training."""
  if "token_classifier" not in pre.heads:
    raise UserError(f"this model has no token-classification head (heads: {list(pre.heads)})")
  labels = pre.labels or [f"LABEL_{i}" for i in range(pre.num_labels)]
  max_length = inference.default_max_length(
      pre.config, max_seq_length or _task_setting(pre, "max_seq_length", 0) or None)
  items = [conll.Sentence(list(words), [""] * len(words)) for words in sentences]
  features = conll.encode(items, pre.tokenizer, None, max_length, "input")
  probs = _run(pre, "tagging", [(ids, np.zeros_like(ids)) for ids in features.input_ids],
               max_length)
  out: list[list[tuple[str, float]]] = [[("O", 0.0)] * len(s) for s in sentences]
  for f, p in enumerate(probs):
    si, w0 = int(features.sentence_index[f]), int(features.first_word[f])
    for k, pos in enumerate(features.positions[f]):
      out[si][w0 + k] = (labels[int(np.argmax(p[pos]))], float(np.max(p[pos])))
  return out


# --- Question answering. ---

def answer(pre: Pretrained, questions: Sequence[str], contexts: Sequence[str], top_k: int = 1,
           max_answer_length: int = 15, max_seq_length: Optional[int] = None,
           doc_stride: Optional[int] = None, max_query_length: Optional[int] = None
           ) -> list[list[dict]]:
  """The `top_k` answers of each (question, context): [{answer, score, start, end}]."""
  if "qa" not in pre.heads:
    raise UserError(f"this model has no question-answering head (heads: {list(pre.heads)})")
  if len(questions) != len(contexts):
    raise UserError(f"{len(questions)} questions but {len(contexts)} contexts")
  if top_k < 1 or max_answer_length < 1:
    raise UserError(f"--top_k={top_k} and --max_answer_length={max_answer_length} must be >= 1")
  requested = max_seq_length or _task_setting(pre, "max_seq_length", 0) or None
  max_length = inference.default_max_length(pre.config, requested)
  if requested is None:
    max_length = min(max_length, 384)  # BERT's SQuAD rows
  stride = doc_stride or _task_setting(pre, "doc_stride", min(128, max_length // 3))
  query = max_query_length or _task_setting(pre, "max_query_length", min(64, max_length // 3))
  examples = [squad.QAExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(questions,
                                                                               contexts))]
  features = squad.encode(examples, pre.tokenizer, max_length, stride, min(query, max_length - 4))
  logits = _run(pre, "qa", list(zip(features.input_ids, features.token_type_ids)), max_length)
  candidates: list[dict[tuple[int, int], float]] = [{} for _ in examples]
  for f, (start_L, end_L) in enumerate(logits):
    spans = features.char_spans[f]
    best = candidates[int(features.example_index[f])]
    for s, e, p in squad_eval.top_spans(start_L, end_L, spans[:, 0] >= 0, max_answer_length,
                                        top_k):
      key = (int(spans[s, 0]), int(spans[e, 1]))
      best[key] = max(best.get(key, 0.0), p)
  results = []
  for ex, best in zip(examples, candidates):
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:top_k]
    results.append([{"answer": ex.context[a:b], "score": p, "start": a, "end": b}
                    for (a, b), p in ranked])
  return results
