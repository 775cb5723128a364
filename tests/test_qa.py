"""Extractive QA: the official SQuAD score on hand-worked cases, windows that give the answers
back as character spans, BERT's answer selection, training whose eval score equals the same
selection on transformers' logits of the same weights, tfds squad, bad input."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch
import transformers

from bert_jax import tokenization
from bert_jax import train
from bert_jax.data import sample_tasks
from bert_jax.data.readers import squad
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.tasks import qa
from bert_jax.heads import squad_eval

from conftest import read_rows
import hf_fixtures
from test_finetune import tiny_finetune_config


def test_official_normalisation_and_scores_hand_worked():
  assert squad_eval.normalize_answer("The Quick,  brown fox!") == "quick brown fox"
  assert squad_eval.normalize_answer("An apple a day") == "apple day"
  assert squad_eval.normalize_answer("theatre") == "theatre"  # articles only as whole words
  # pred {cat, sat} vs gold {cat, sat, down}: precision 1, recall 2/3 -> F1 0.8.
  assert squad_eval.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
  # pred {cat, cat} vs gold {cat}: one common token -> P 1/2, R 1 -> F1 2/3.
  assert squad_eval.token_f1("cat cat", "cat") == pytest.approx(2 / 3)
  assert squad_eval.token_f1("", "") == 1.0 and squad_eval.token_f1("a", "cat") == 0.0
  ex = lambda qid, answers, impossible=False: squad.QAExample(  # noqa: E731
      qid, "q?", "ctx", [(a, 0) for a in answers], impossible)
  examples = [ex("1", ["Paris", "the city of Paris"]),  # EM 1 via the second gold
              ex("2", [], True),  # no answer, predicted "" -> 1
              ex("3", [], True),  # no answer, predicted text -> 0
              ex("4", ["blue sky"])]  # predicted "the blue" -> EM 0, F1 2*(1*.5)/1.5 = 2/3
  got = squad_eval.score(examples, {"1": "city of Paris", "2": "", "3": "Paris",
                                    "4": "the blue"})
  assert got["exact_match"] == pytest.approx(2 / 4)
  assert got["f1"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("vocab"))
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", max_position_embeddings=128), d)
  return d


def _examples(seed=5, n=6, version_2=True):
  doc = sample_tasks.squad_json(seed, n, version_2)
  path = f"/tmp/bert_jax_test_squad_{os.getpid()}_{seed}.json"
  with open(path, "w", encoding="utf-8") as f:
    json.dump(doc, f)
  try:
    return squad.read_squad_json(path)
  finally:
    os.remove(path)


def test_windows_cover_the_context_and_give_answers_back(tok_dir):
  tok = tokenization.load_tokenizer(tok_dir)
  examples, stats = _examples()
  examples = squad.check_examples(examples, stats, "sample", training=True)
  assert stats.impossible == 6 and stats.misaligned_answers == 0
  features = squad.encode(examples, tok, max_seq_length=48, doc_stride=8, max_query_length=10)
  assert features.truncated_questions > 0  # the sample's questions have > 10 pieces
  context_pieces = {ex.qid: len(tok.encode_plain([ex.context])[0]) for ex in examples}
  seen = {ex.qid: set() for ex in examples}
  found = {ex.qid: 0 for ex in examples}
  flagged = {ex.qid: [] for ex in examples}
  for i in range(len(features)):
    ex = examples[features.example_index[i]]
    ids, spans = features.input_ids[i], features.char_spans[i]
    assert len(ids) <= 48
    assert (features.token_type_ids[i] == 1).sum() == (spans[:, 0] >= 0).sum() + 1
    seen[ex.qid].update(map(tuple, spans[spans[:, 0] >= 0].tolist()))
    flagged[ex.qid] += [tuple(x) for x in spans[features.max_context[i]].tolist()]
    s, e = features.start_positions[i], features.end_positions[i]
    if s:
      assert ex.context[spans[s, 0]:spans[e, 1]] == ex.answers[0][0]
      found[ex.qid] += 1
    else:
      assert e == 0
  assert all(len(seen[q]) == context_pieces[q] for q in seen)  # every context piece is in a window
  # ... and exactly one window is its max-context window.
  assert all(sorted(flagged[q]) == sorted(seen[q]) for q in seen)
  assert len(features) > len(examples)  # some contexts needed several windows
  for ex in examples:
    assert (found[ex.qid] > 0) != ex.is_impossible, ex


def test_misaligned_answers_are_counted_and_skipped_for_training(tmp_path):
  doc = sample_tasks.squad_json(1, 2)
  doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 3
  path = tmp_path / "s.json"
  path.write_text(json.dumps(doc))
  examples, stats = squad.read_squad_json(str(path))
  kept = squad.check_examples(examples, stats, str(path), training=True)
  assert stats.misaligned_answers == 1 and len(kept) == len(examples) - 1
  _, stats = squad.read_squad_json(str(path))
  assert len(squad.check_examples(examples, stats, str(path), training=False)) == len(examples)
  path.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
  with pytest.raises(UserError, match=r"s.json: data\[0\].paragraphs\[0\] is not a SQuAD"):
    squad.read_squad_json(str(path))
  path.write_text("{")
  with pytest.raises(UserError, match="s.json is not valid JSON"):
    squad.read_squad_json(str(path))


def test_best_answers_hand_worked(tok_dir):
  tok = tokenization.load_tokenizer(tok_dir)
  ex = squad.QAExample("q1", "what is the capital of france?",
                       "Paris is the capital of France.", [("Paris", 0)])
  features = squad.encode([ex], tok, 64, 16, 16)
  spans = features.char_spans[0]
  first = int(np.nonzero(spans[:, 0] == 0)[0][0])  # the piece that starts "Paris"
  last = int(np.nonzero(spans[:, 1] == 5)[0][-1])
  start, end = np.zeros((1, 64)), np.zeros((1, 64))
  start[0, first], end[0, last] = 5.0, 5.0  # span score 10
  start[0, 0], end[0, 0] = 6.0, 6.0  # null score 12
  kw = dict(n_best=20, max_answer_length=30)
  assert squad_eval.best_answers([ex], features, [0], start, end, **kw) == {"q1": "Paris"}
  assert squad_eval.best_answers([ex], features, [0], start, end, version_2=True,
                                 **kw) == {"q1": ""}  # 12 - 10 > 0
  assert squad_eval.best_answers([ex], features, [0], start, end, version_2=True,
                                 null_score_diff_threshold=2.5, **kw) == {"q1": "Paris"}
  end[0, last + 2] = 7.0  # a longer span ending in "capital" now scores 12
  assert squad_eval.best_answers([ex], features, [0], start, end, **kw)["q1"].startswith(
      "Paris is the")
  assert squad_eval.best_answers([ex], features, [0], start, end, n_best=20,
                                 max_answer_length=2)["q1"] == "Paris"


def _config(paths, init, **overrides):
  c = tiny_finetune_config()
  c.update(task="squad_json", init_checkpoint=init, train_file=paths["train"],
           validation_file=paths["validation"], test_file="", max_seq_length=64,
           eval_every_steps=2, num_eval_batches=0, num_train_steps=2, learning_rate=1e-4)
  c.qa.update(doc_stride=16, max_query_length=16)
  c.update(**overrides)
  return c


def test_train_eval_score_equals_selection_on_transformers_logits(tmp_path):
  paths = sample_tasks.write(str(tmp_path / "data"), num_train=32, num_eval=32)["squad"]
  init = str(tmp_path / "hf_qa")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertForQuestionAnswering", seed=4,
                                                 max_position_embeddings=128), init)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(paths, init), workdir)
  last = [r for r in read_rows(workdir) if "eval_f1" in r][-1]

  exported = str(tmp_path / "hf_back")
  convert.convert(workdir, exported, "hf")
  model = transformers.BertForQuestionAnswering.from_pretrained(exported).eval()
  examples, stats = squad.read_squad_json(paths["validation"])
  examples = squad.check_examples(examples, stats, "v", training=False)
  features = squad.encode(examples, tokenization.load_tokenizer(exported), 64, 16, 16)
  start = np.full((len(features), 64), -1e9, np.float32)
  end = start.copy()
  for i, ids in enumerate(features.input_ids):
    with torch.no_grad():
      out = model(input_ids=torch.tensor(np.array([ids])),
                  token_type_ids=torch.tensor(np.array([features.token_type_ids[i]])))
    start[i, :len(ids)], end[i, :len(ids)] = out.start_logits[0].numpy(), out.end_logits[0].numpy()
  answers = squad_eval.best_answers(examples, features, np.arange(len(features)), start, end,
                                    version_2=True)
  want = squad_eval.score(examples, answers)
  assert 0 < want["f1"] < 1 and any(answers.values())
  assert last["eval_exact_match"] == pytest.approx(want["exact_match"], abs=1e-9)
  assert last["eval_f1"] == pytest.approx(want["f1"], abs=1e-9)
  info = convert.from_pretrained(os.path.join(workdir, "best")).task
  assert info["kind"] == "qa" and info["version_2"] and info["doc_stride"] == 16


def test_tfds_squad(tmp_path, tok_dir):
  stored = {"train": _raw(sample_tasks.squad_json(1, 3)),
            "validation": _raw(sample_tasks.squad_json(2, 2))}
  c = _config({"train": "", "validation": ""}, tok_dir, task="squad/v1.1")
  with tfds.testing.mock_data(as_data_source_fn=lambda self, split, **kw: stored[split]):
    data, spec = qa.make_data(c)
    examples, _ = squad.read_squad_tfds("squad/v1.1", "validation")
  assert [e.qid for e in examples] == [r["id"] for r in stored["validation"]]
  assert examples[0].answers == [(stored["validation"][0]["answers"]["text"][0],
                                  stored["validation"][0]["answers"]["answer_start"][0])]
  assert sorted(data.eval_sets) == [""] and not spec.options["version_2"]
  batch = next(data.train)
  assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64
  assert batch["start_positions"].max() > 0


def _raw(doc):
  """A SQuAD JSON dict as tfds squad examples (fields as data_source returns them)."""
  out = []
  for article in doc["data"]:
    for p in article["paragraphs"]:
      for q in p["qas"]:
        out.append({"id": q["id"], "title": article["title"], "context": p["context"],
                    "question": q["question"],
                    "answers": {"text": np.array([a["text"] for a in q["answers"]]),
                                "answer_start": np.array([a["answer_start"]
                                                          for a in q["answers"]], np.int32)}})
  return out
