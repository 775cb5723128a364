"""Predictions of a fine-tuned model: its head decides what comes out.

Why this shape: `launch/predict.py` takes any model path; the model's recorded
heads say which registered head predicts (`heads.predicting_head`), and that
head reads the inputs (its training formats), predicts and formats the results
(`bert_jax/heads/<name>.py`). This module only routes and writes files.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from bert_jax import files
from bert_jax import heads as heads_lib
from bert_jax.formats.model_dir import Pretrained


def head_of(pre: Pretrained) -> type[heads_lib.Head]:
  """The registered head `pre` predicts with (one-line error when it has none)."""
  return heads_lib.predicting_head(pre.heads)


def predict(pre: Pretrained, inputs: Any, options: Optional[Mapping[str, Any]] = None
            ) -> list[dict]:
  """One result per input (in input order), as the model's head defines them."""
  return head_of(pre).predict(pre, inputs, dict(options or {}))


def write_predictions(path: str, head: type[heads_lib.Head], results: list[dict]) -> None:
  """FILE.tsv: GLUE's submission format (`index<TAB>prediction`, the head's field);
  FILE.json of QA answers: SQuAD's `{id: answer}`; else JSON lines. Atomic."""
  if path.endswith(".json") and results and all("id" in p and "answer" in p for p in results):
    data = json.dumps({p["id"]: p["answer"] for p in results}, ensure_ascii=False).encode()
    files.write_file_atomically(path, lambda f: f.write(data))
    return
  if path.endswith(".tsv"):
    lines = ["index\tprediction"] + [f"{i}\t{head.tsv_field(p)}" for i, p in enumerate(results)]
  else:
    lines = [json.dumps(p, ensure_ascii=False) for p in results]
  data = ("\n".join(lines) + "\n").encode("utf-8")
  files.write_file_atomically(path, lambda f: f.write(data))


def predict_file(model_path: str, source: str, output: str,
                 options: Optional[Mapping[str, Any]] = None) -> int:
  """Predicts every input of `source` with the model at `model_path` into `output`."""
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top
  pre = convert.from_pretrained(model_path)
  head = head_of(pre)
  results = head.predict(pre, head.read_inputs(source), dict(options or {}))
  write_predictions(output, head, results)
  return len(results)
