"""Predictions of a fine-tuned model: the head decides what comes out.

Why one module: `launch/predict.py` takes any model path and prints what its
head means; the head registry (`formats/heads.py`) and the model dir's task
record (labels, kind, max length) say which predictor applies. Inputs are
sorted by length and cut to length buckets (one compiled shape per bucket);
outputs come back in input order.

Sequence classification gives the label, its probability and every label's
probability (softmax of the logits, as transformers' text-classification
pipeline with `top_k=None`); regression gives the value. Token-level heads
(`span_inference`): a tagger gives the entities of a text (or a label per word
of pre-split CoNLL input), a QA model the answer span of a question in its
context.
"""

from __future__ import annotations

import functools
import json
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from bert_jax import files
from bert_jax import model as model_lib
from bert_jax.data import finetune_pipeline
from bert_jax.data.readers import sequences
from bert_jax.errors import UserError
from bert_jax.formats.convert import Pretrained


def max_length(pre: Pretrained, requested: Optional[int] = None) -> int:
  """--max_seq_length, else the length the model was fine-tuned with, else the position table."""
  limit = pre.config.max_position_embeddings
  if requested is not None:
    if not 3 <= requested <= limit:
      raise UserError(f"--max_seq_length={requested}: must be in [3, {limit}] for this model")
    return requested
  return int((pre.task or {}).get("max_seq_length") or min(limit, 512))


@functools.lru_cache(maxsize=8)
def _classifier_forward(config: model_lib.BertConfig, num_labels: int) -> Callable:
  module = model_lib.BertForSequenceClassification(config, num_labels=num_labels)
  return jax.jit(lambda params, ids, types, mask: module.apply({"params": params}, ids, types,
                                                                 mask))


def batched_rows(lengths: np.ndarray, batch_size: int, limit: int):
  """(rows, bucket length) batches over inputs sorted by length; rows index the inputs."""
  order = np.argsort(lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    yield rows, finetune_pipeline.bucket_length(int(lengths[rows].max()), limit)


class SequencePredictor:
  """Label + probabilities (classification) or value (regression) per text or text pair."""

  def __init__(self, pre: Pretrained, max_seq_length: Optional[int] = None,
               batch_size: int = 32):
    if "classifier" not in pre.heads:
      raise UserError(f"this model has no sequence-classification head (heads: "
                      f"{list(pre.heads) or 'none'})")
    self.pre = pre
    self.length = max_length(pre, max_seq_length)
    self.batch_size = batch_size
    task = pre.task or {}
    self.regression = task.get("kind") == "regression" or pre.num_labels == 1
    self.labels = pre.labels or [f"LABEL_{i}" for i in range(pre.num_labels)]
    self._forward = _classifier_forward(pre.config, pre.num_labels)
    self._params = jax.device_put(pre.params)

  def logits(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
    """[N, num_labels] float32 logits in input order."""
    seq, lengths = finetune_pipeline.encode_texts(self.pre.tokenizer, texts, pairs, self.length)
    out = np.zeros((len(lengths), self.pre.num_labels), np.float32)
    for rows, length in batched_rows(lengths, self.batch_size, self.length):
      shape_rows = np.concatenate([rows, np.full(self.batch_size - len(rows), rows[0])])
      ids, types = seq["input_ids"][shape_rows, :length], seq["token_type_ids"][shape_rows, :length]
      mask = (np.arange(length)[None] < lengths[shape_rows][:, None]).astype(np.int32)
      out[rows] = np.asarray(self._forward(self._params, ids, types, mask))[:len(rows)]
    return out

  def predict(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> list[dict]:
    """Per input: {'value'} (regression) or {'label', 'score', 'probabilities'}."""
    logits = self.logits(texts, pairs)
    if self.regression:
      return [{"value": float(row[0])} for row in logits]
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    out = []
    for row in probs:
      best = int(np.argmax(row))
      out.append({"label": self.labels[best], "score": float(row[best]),
                  "probabilities": {label: float(p) for label, p in zip(self.labels, row)}})
    return out


# --------------------------------------------------------------------------- files


def read_inputs(source: str) -> tuple[list[str], Optional[list[str]]]:
  """(texts, pairs) of a training-format file, a .txt file (one text a line) or glue/NAME:SPLIT."""
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  if source.startswith("glue/"):
    name, _, split = source.partition(":")
    examples = sequences.read_glue(sequences.glue_name(name), split or "test")
    return examples.texts, examples.pairs
  if source.endswith(".txt"):
    return inference.read_lines(source), None
  examples = sequences.read_local(source, require_labels=False)
  return examples.texts, examples.pairs


def _prediction_text(p: dict) -> str:
  if "entities" in p:
    return " ".join(f"{e['word']}/{e['label']}" for e in p["entities"])
  if "labels" in p:
    return " ".join(p["labels"])
  if "answer" in p:
    return p["answer"].replace("\t", " ").replace("\n", " ")
  return str(p["value"]) if "value" in p else p["label"]


def write_predictions(path: str, results: list[dict]) -> None:
  """FILE.tsv: GLUE's submission format (`index<TAB>prediction`; a tagger's labels separated
  by spaces, a QA answer); FILE.json of QA answers: SQuAD's `{id: answer}`; else JSON lines.
  Atomic."""
  if path.endswith(".json") and results and all("id" in p for p in results):
    data = json.dumps({p["id"]: p["answer"] for p in results}, ensure_ascii=False).encode()
    files.write_file_atomically(path, lambda f: f.write(data))
    return
  if path.endswith(".tsv"):
    lines = ["index\tprediction"] + [f"{i}\t{_prediction_text(p)}"
                                     for i, p in enumerate(results)]
  else:
    lines = [json.dumps(p, ensure_ascii=False) for p in results]
  data = ("\n".join(lines) + "\n").encode("utf-8")
  files.write_file_atomically(path, lambda f: f.write(data))


def predict_file(model_path: str, source: str, output: str) -> int:
  """Predicts every input of `source` with the model at `model_path` into `output`."""
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  pre = convert.from_pretrained(model_path)
  if "token_classifier" in pre.heads or "qa" in pre.heads:
    results = predict_spans(pre, source)
  else:
    texts, pairs = read_inputs(source)
    results = SequencePredictor(pre).predict(texts, pairs)
  write_predictions(output, results)
  return len(results)


# --------------------------------------------------------------------------- token-level heads


def read_tagging_inputs(source: str) -> tuple[Optional[list[str]], Optional[list[list[str]]]]:
  """(texts, None) from JSONL with `text`, or (None, word lists) from a CoNLL file (labels
  optional: a token per line, a blank line between sentences)."""
  from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top
  if source.endswith(".jsonl"):
    return [r["text"] for r in _jsonl(source, ("text",))], None
  return None, [s.words for s in conll.read_conll(source, require_labels=False)]


def read_qa_inputs(source: str) -> tuple[list[str], list[str], list[str]]:
  """(ids, questions, contexts) from JSONL with `question` and `context` (`id` optional) or a
  SQuAD JSON file."""
  if source.endswith(".jsonl"):
    rows = _jsonl(source, ("question", "context"))
    return ([str(r.get("id", i)) for i, r in enumerate(rows)], [r["question"] for r in rows],
            [r["context"] for r in rows])
  from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
  examples, _ = squad.read_squad_json(source)
  return ([e.qid for e in examples], [e.question for e in examples],
          [e.context for e in examples])


def _jsonl(path: str, keys: Sequence[str]) -> list[dict]:
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  rows = []
  for number, row in files.jsonl_objects(inference.read_lines(path), path):
    if any(not isinstance(row.get(k), str) for k in keys):
      raise UserError(f"{path}:{number}: expected a JSON object with string fields "
                      f"{list(keys)}")
    rows.append(row)
  return rows


def predict_spans(pre: Pretrained, source: str, top_k: int = 1, max_answer_length: int = 15,
                  max_seq_length: Optional[int] = None) -> list[dict]:
  """Per input of `source`: {'entities'} or {'words', 'labels', 'scores'} (tagger), or
  {'id', 'answer', 'score', 'start', 'end'} (+ 'top_k' when top_k > 1) for QA."""
  from bert_jax import span_inference  # pylint: disable=g-import-not-at-top
  if "token_classifier" in pre.heads:
    texts, sentences = read_tagging_inputs(source)
    if texts is not None:
      return [{"entities": e} for e in span_inference.tag(pre, texts, max_seq_length)]
    tagged = span_inference.tag_words(pre, sentences, max_seq_length)
    return [{"words": list(words), "labels": [l for l, _ in t], "scores": [p for _, p in t]}
            for words, t in zip(sentences, tagged)]
  ids, questions, contexts = read_qa_inputs(source)
  answers = span_inference.answer(pre, questions, contexts, top_k, max_answer_length,
                                  max_seq_length)
  return [qa_result(a, top_k, qid) for qid, a in zip(ids, answers)]


def qa_result(answers: list[dict], top_k: int, qid: Optional[str] = None) -> dict:
  """The best answer's fields (empty answer when none), plus all `top_k` when more than one."""
  best = answers[0] if answers else {"answer": "", "score": 0.0, "start": -1, "end": -1}
  out = ({"id": qid} if qid is not None else {}) | best
  if top_k > 1:
    out["top_k"] = answers
  return out
