"""Extractive question answering: a 2-output linear layer -> start/end logits [B, L].

Training rows are BERT's windows (`data.readers.squad`); the loss is BERT's: the
mean of the start and end cross-entropies over all positions ([CLS] = no
answer in this window). The official exact match and F1 (`eval_exact_match`,
`eval_f1`, in [0, 1]) need answers chosen over all windows of a question and
read back from the context, so the eval step returns each row's start/end
logits and `score` runs BERT's n-best selection (`heads.squad_eval`). Main
metric: f1.

Prediction is the classic question-answering postprocessing: per window,
softmax of the start and of the end logits over the context pieces; spans with
start <= end < start + max_answer_length ranked by the product of the two
probabilities (`squad_eval.top_spans`); over windows the best spans win.
Answers are character spans of the original context.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.heads import base
from bert_jax.heads import squad_eval

_NEG = -1e9  # logits of padding positions beyond a length bucket


class BertForQuestionAnswering(nn.Module):
  """Extractive QA: a 2-output linear layer on the sequence output -> start/end logits [B, L]."""

  config: model_lib.BertConfig

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL=None, attention_mask_BxL=None,
               position_ids_BxL=None, packing_ids_BxL=None, *, deterministic: bool = True):
    cfg = self.config
    out = model_lib.BertModel(cfg, add_pooling_layer=False, name="bert")(
        input_ids_BxL, token_type_ids_BxL, attention_mask_BxL, position_ids_BxL,
        packing_ids_BxL, deterministic=deterministic)
    logits_BxLx2 = model_lib.dense(2, ("embed", None), cfg, "qa_outputs")(
        out.sequence_output).astype(jnp.float32)
    return dict(start_logits=logits_BxLx2[..., 0], end_logits=logits_BxLx2[..., 1])


class QuestionAnswering(base.Head):
  """BertForQuestionAnswering on SQuAD-style questions."""

  name = "qa"
  description = "question-answering"
  hf_prefix = "qa_outputs."
  param_key = "qa_outputs"
  architecture = "BertForQuestionAnswering"
  loss_terms = (("qa_loss_sum", "qa_count"),)
  main_metric = "f1"

  @classmethod
  def rows(cls, config, num_labels):
    return base.dense_rows("qa_outputs", ("qa_outputs",), 2, config.hidden_size)

  @classmethod
  def modern_rows(cls, config, num_labels):
    """ModernBertForQuestionAnswering names its start/end layer `classifier`."""
    return base.dense_rows("classifier", ("qa_outputs",), 2, config.hidden_size)

  @classmethod
  def hf_kind(cls, hf, num_labels):
    return "qa"

  # --- Training. ---

  def build_model(self, bert_config) -> BertForQuestionAnswering:
    return BertForQuestionAnswering(bert_config)

  def sums(self, model, params, batch, rng) -> dict:
    out = base.apply_model(model, params, batch, rng)
    w_B = batch["example_weights"].astype(jnp.float32)
    start_B = optax.softmax_cross_entropy_with_integer_labels(out["start_logits"],
                                                              batch["start_positions"])
    end_B = optax.softmax_cross_entropy_with_integer_labels(out["end_logits"],
                                                            batch["end_positions"])
    exact_B = ((jnp.argmax(out["start_logits"], -1) == batch["start_positions"])
               & (jnp.argmax(out["end_logits"], -1) == batch["end_positions"]))
    return dict(qa_loss_sum=jnp.sum(0.5 * (start_B + end_B) * w_B), qa_count=jnp.sum(w_B),
                qa_span_correct=jnp.sum(exact_B.astype(jnp.float32) * w_B))

  def denominators(self, batch) -> dict:
    return dict(qa_count=jnp.sum(batch["example_weights"].astype(jnp.float32)))

  def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
    if "qa_count" not in sums:
      return {}
    return {"span_accuracy": base.ratio(sums, "qa_span_correct", "qa_count")}

  def predictions(self, model, params, batch) -> dict:
    out = base.apply_model(model, params, batch, None)
    pad = ((0, 0), (0, self.spec.max_seq_length - out["start_logits"].shape[1]))
    return dict(start_logits=jnp.pad(out["start_logits"], pad, constant_values=_NEG),
                end_logits=jnp.pad(out["end_logits"], pad, constant_values=_NEG),
                feature_index=batch["feature_index"],
                weights=batch["example_weights"].astype(jnp.float32))

  def score(self, gathered, eval_items) -> dict[str, float]:
    found = eval_items.real_rows(gathered)
    if found is None:
      return {}
    o = self.spec.options
    keep, features, examples, local = found
    answers = squad_eval.best_answers(
        examples, features, local, gathered["start_logits"][keep],
        gathered["end_logits"][keep], n_best=o["n_best_size"],
        max_answer_length=o["max_answer_length"], version_2=o["version_2"],
        null_score_diff_threshold=o["null_score_diff_threshold"])
    # Only questions this pass reached (config.num_eval_batches may cap a pass).
    seen = sorted(set(features.example_index[local].tolist()))
    return squad_eval.score([examples[k] for k in seen], answers)

  # --- Prediction. ---

  @classmethod
  def read_inputs(cls, source: str) -> tuple[list[str], list[str], list[str]]:
    """(ids, questions, contexts) from JSONL with `question` and `context` (`id` optional) or
    a SQuAD JSON file."""
    if source.endswith(".jsonl"):
      rows = base.jsonl_rows(source, ("question", "context"))
      return ([str(r.get("id", i)) for i, r in enumerate(rows)], [r["question"] for r in rows],
              [r["context"] for r in rows])
    from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
    examples, _ = squad.read_squad_json(source)
    return ([e.qid for e in examples], [e.question for e in examples],
            [e.context for e in examples])

  @classmethod
  def command_line_inputs(cls, args):
    if args.get("question") is None or args.get("context") is None:
      raise UserError("a QA model needs --question and --context (or --input=FILE.jsonl with "
                      "question and context)")
    return None, [args["question"]], [args["context"]]

  @classmethod
  def predict(cls, pre, inputs, options) -> list[dict]:
    ids, questions, contexts = inputs
    top_k = options.get("top_k") or 1
    answers = answer(pre, questions, contexts, top_k, options.get("max_answer_length") or 15,
                     options.get("max_seq_length"))
    if ids is None:
      return [qa_result(a, top_k) for a in answers]
    return [qa_result(a, top_k, qid) for qid, a in zip(ids, answers)]

  @classmethod
  def shown_inputs(cls, inputs) -> list[str]:
    return list(inputs[1])

  @classmethod
  def show(cls, result, options) -> str:
    return "".join(f"{a['answer']}\t{a['score']:.4f}\t{a['start']}\t{a['end']}\n"
                   for a in result.get("top_k", [result]))

  @classmethod
  def tsv_field(cls, result) -> str:
    return result["answer"].replace("\t", " ").replace("\n", " ")


def qa_result(answers: list[dict], top_k: int, qid: Optional[str] = None) -> dict:
  """The best answer's fields (empty answer when none), plus all `top_k` when more than one."""
  best = answers[0] if answers else {"answer": "", "score": 0.0, "start": -1, "end": -1}
  out = ({"id": qid} if qid is not None else {}) | best
  if top_k > 1:
    out["top_k"] = answers
  return out


@functools.lru_cache(maxsize=8)
def _forward(config: model_lib.BertConfig):
  module = BertForQuestionAnswering(config)

  @jax.jit
  def forward(params, batch):
    out = module.apply({"params": params}, *base.padded_inputs(batch))
    return {"tokens": jnp.stack([out["start_logits"], out["end_logits"]], -1)}  # [B, L, 2]

  return forward


def answer(pre, questions: Sequence[str], contexts: Sequence[str], top_k: int = 1,
           max_answer_length: int = 15, max_seq_length: Optional[int] = None,
           doc_stride: Optional[int] = None, max_query_length: Optional[int] = None
           ) -> list[list[dict]]:
  """The `top_k` answers of each (question, context): [{answer, score, start, end}]."""
  from bert_jax import inference  # pylint: disable=g-import-not-at-top
  from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
  if QuestionAnswering.name not in pre.heads:
    raise UserError(f"this model has no question-answering head (heads: {list(pre.heads)})")
  if len(questions) != len(contexts):
    raise UserError(f"{len(questions)} questions but {len(contexts)} contexts")
  if top_k < 1 or max_answer_length < 1:
    raise UserError(f"--top_k={top_k} and --max_answer_length={max_answer_length} must be >= 1")
  task = pre.task or {}
  requested = max_seq_length or int(task.get("max_seq_length") or 0) or None
  max_length = inference.default_max_length(pre.config, requested)
  if requested is None:
    max_length = min(max_length, 384)  # BERT's SQuAD rows
  stride = doc_stride or int(task.get("doc_stride") or min(128, max_length // 3))
  query = max_query_length or int(task.get("max_query_length") or min(64, max_length // 3))
  examples = [squad.QAExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(questions,
                                                                               contexts))]
  features = squad.encode(examples, pre.tokenizer, max_length, stride, min(query, max_length - 4))
  logits = base.run_rows(pre, _forward(pre.config), features.input_ids,
                         features.token_type_ids, max_length)
  candidates: list[dict[tuple[int, int], float]] = [{} for _ in examples]
  for f, out in enumerate(logits):
    start_L, end_L = out["tokens"][:, 0], out["tokens"][:, 1]
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
