"""Entities and answers of fine-tuned heads against transformers on the same weights."""

import numpy as np
import pytest
import torch
import transformers

from bert_jax.heads import qa as qa_head
from bert_jax.heads import token_classifier as tagging_head
from bert_jax.errors import UserError
from bert_jax.formats import convert

import hf_fixtures

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "PER"]
TEXTS = ["Paris is the capital city of France, we read.",
         "the first woman in the world to learn bert was ibm's child!",
         "They had a new model of language; it writes text.",
         "one two three four five"]


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tagger"))
  model = hf_fixtures.make_model("BertForTokenClassification", seed=11,
                                 id2label=dict(enumerate(TAGS)))
  return hf_fixtures.save_hf_dir(model, d)


def test_entities_equal_the_token_classification_pipeline(tagger_dir):
  pipe = transformers.pipeline("token-classification", model=tagger_dir, tokenizer=tagger_dir,
                               aggregation_strategy="first", device="cpu")
  pre = convert.from_pretrained(tagger_dir)
  got = tagging_head.tag(pre, TEXTS)
  total = 0
  for text, ours in zip(TEXTS, got):
    want = pipe(text)
    total += len(want)
    assert [(e["label"], e["start"], e["end"]) for e in ours] == [
        (w["entity_group"], w["start"], w["end"]) for w in want], text
    np.testing.assert_allclose([e["score"] for e in ours], [float(w["score"]) for w in want],
                               atol=1e-5)
    for e in ours:
      assert e["word"] == text[e["start"]:e["end"]]
  assert total >= 6  # the random head tags enough words for the comparison to mean something


def test_long_text_is_tagged_in_windows(tagger_dir):
  pre = convert.from_pretrained(tagger_dir)
  text = " ".join(TEXTS * 4)  # ~140 pieces, more than the 64 positions
  windowed = tagging_head.tag(pre, [text], max_seq_length=24)[0]
  assert windowed and max(e["end"] for e in windowed) > len(text) * 0.9
  with pytest.raises(UserError, match="no question-answering head"):
    qa_head.answer(pre, ["q"], ["c"])


def _fine_tuned_qa(directory):
  """A tiny BertForQuestionAnswering that transformers trained a few steps and saved."""
  model = hf_fixtures.make_model("BertForQuestionAnswering", seed=5)
  hf_fixtures.save_hf_dir(model, directory)
  tok = transformers.BertTokenizerFast.from_pretrained(directory)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
  enc = tok(["who read the text?", "where is the capital?"],
            ["the woman read the text in paris.", "paris is the capital of france."],
            padding=True, return_tensors="pt")
  for _ in range(3):
    loss = model(**enc, start_positions=torch.tensor([7, 7]),
                 end_positions=torch.tensor([8, 7])).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
  model.eval()
  model.save_pretrained(directory)
  return model, tok


def classic_answers(model, tok, question, context, max_answer_length=15, top_k=3):
  """The classic QA postprocessing on transformers' logits (softmax over the context pieces,
  spans start <= end < start + max_answer_length ranked by p(start) * p(end))."""
  enc = tok(question, context, return_offsets_mapping=True, return_tensors="pt")
  offsets = enc.pop("offset_mapping")[0].numpy()
  with torch.no_grad():
    out = model(**enc)
  ctx = np.array([s == 1 for s in enc.sequence_ids(0)])
  pos = np.nonzero(ctx)[0]
  ps = torch.softmax(out.start_logits[0, pos].double(), -1).numpy()
  pe = torch.softmax(out.end_logits[0, pos].double(), -1).numpy()
  spans = []
  for i in range(len(pos)):
    for j in range(i, min(len(pos), i + max_answer_length)):
      spans.append((ps[i] * pe[j], int(offsets[pos[i], 0]), int(offsets[pos[j], 1])))
  spans.sort(key=lambda s: -s[0])
  return [{"answer": context[a:b], "score": p, "start": a, "end": b} for p, a, b in spans[:top_k]]


def test_answers_equal_the_classic_postprocessing_on_transformers_logits(tmp_path):
  model, tok = _fine_tuned_qa(str(tmp_path / "qa"))
  pre = convert.from_pretrained(str(tmp_path / "qa"))
  questions = ["who read the text?", "where is the capital?", "what does bert learn?"]
  contexts = ["The woman read the text in Paris, they had a new model.",
              "Paris is the capital city of France.",
              "Bert is a model: it can learn language and read text."]
  got = qa_head.answer(pre, questions, contexts, top_k=3)
  for q, c, ours in zip(questions, contexts, got):
    want = classic_answers(model, tok, q, c)
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [
        (w["answer"], w["start"], w["end"]) for w in want]
    np.testing.assert_allclose([a["score"] for a in ours], [w["score"] for w in want], rtol=1e-4)
