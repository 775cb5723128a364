"""Small tagging (CoNLL), QA (SQuAD JSON) and multiple-choice (JSONL) sets about the sample
corpus's invented world.

Why: fine-tuning must run offline in tests, in the README and in benchmarks.
These sets reuse the towns, rivers, people, companies and animals of
`sample_corpus` (the same world: `_entities` of the same seed), so a model
pretrained on the sample corpus already knows the words. Entities are tagged
PER (people), LOC (towns, rivers), ORG (companies) and MISC (animals) in IOB2;
QA contexts state a person's facts and the questions ask for one of them, with
some questions about facts the context leaves out (no answer, for v2.0).
Multiple-choice contexts state two of a person's facts and the four choices
continue with one fact about them, only one of which the context supports
(the others take another person's job, town, pet or colour). Summary articles
state 6-10 facts about a person, their town and a company; the highlights
restate 2-3 of the person's key facts (job, home, pet, colour) in other words.

  python -m bert_jax.data.sample_tasks OUT_DIR   # OUT_DIR/{ner,squad,mc,summary}/*
"""

from __future__ import annotations

import json
import os
import sys

from bert_jax import files
from bert_jax.data import sample_corpus as corpus

_SPLITS = ("train", "validation", "test")


def _words(text: str) -> list[str]:
  """Whitespace words with a final '.'/',' and "'s" split off, as CoNLL tokenises."""
  out = []
  for word in text.split():
    tail = []
    while word and word[-1] in ".,":
      tail.insert(0, word[-1])
      word = word[:-1]
    if word.endswith("'s"):
      out += [word[:-2], "'s"]
    elif word:
      out.append(word)
    out += tail
  return out


def _tagged(parts: list) -> list[tuple[str, str]]:
  """Parts are plain strings or (text, type) entities -> (word, IOB2 label) pairs."""
  out = []
  for part in parts:
    if isinstance(part, tuple):
      text, kind = part
      out += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(_words(text))]
    else:
      out += [(w, "O") for w in _words(part)]
  return out


def _ner_sentence(rng: corpus._Rng, world: dict) -> list[tuple[str, str]]:
  p = rng.pick(world["people"])
  t, c, a = p["town"], rng.pick(world["companies"]), p["pet"]
  per, town, river = (p["name"], "PER"), (t["name"], "LOC"), (t["river"], "LOC")
  templates = [
      [per, f" is a {p['job']} in ", town, "."],
      ["The ", p["job"], " ", per, " lives in ", town, "."],
      [town, " lies on the river ", river, "."],
      [(c["name"], "ORG"), " was founded by ", (c["founder"]["name"], "PER"), "."],
      [(c["name"], "ORG"), " makes ", c["product"], " in ", (c["town"]["name"], "LOC"), "."],
      [(p["first"], "PER"), " keeps a ", (a["name"], "MISC"), " as a pet."],
      ["The ", (a["name"], "MISC"), " eats ", a["food"], "."],
      [per, " works for ", (c["name"], "ORG"), " in ", (c["town"]["name"], "LOC"), "."],
      ["People in ", town, " fish in the river ", river, " every ", t["day"], "."],
      [(p["first"], "PER"), " was born in ", town, ", a ", t["size"], " town."],
  ]
  return _tagged(rng.pick(templates))


def conll_text(seed: int, num_sentences: int) -> str:
  """A CoNLL file: `word label` lines, a blank line between sentences."""
  world = corpus._entities(corpus._Rng(0))  # pylint: disable=protected-access
  rng = corpus._Rng(seed)  # pylint: disable=protected-access
  blocks = ["-DOCSTART- O"]
  for _ in range(num_sentences):
    blocks.append("\n".join(f"{w} {l}" for w, l in _ner_sentence(rng, world)))
  return "\n\n".join(blocks) + "\n"


def _qa_paragraph(rng: corpus._Rng, p: dict, qid: str, with_impossible: bool) -> dict:
  f, t, pet = p["first"], p["town"], p["pet"]
  facts = [  # (sentence, answer, question)
      (f"{p['name']} works as a {p['job']}.", p["job"], f"What does {p['name']} work as?"),
      (f"{f} lives in {t['name']}, a town on the river {t['river']}.", t["name"],
       f"Where does {f} live?"),
      (f"The favourite colour of {f} is {p['colour']}.", p["colour"],
       f"What is the favourite colour of {f}?"),
      (f"{f} keeps a {pet['name']} as a pet.", pet["name"], f"What pet does {f} keep?"),
      (f"{f} is {p['age']} years old.", str(p["age"]), f"How old is {f}?"),
      (f"Every {p['day']} {f} goes to the market.", p["day"],
       f"On which day does {f} go to the market?"),
  ]
  facts = corpus._shuffled(rng, facts)  # pylint: disable=protected-access
  stated = facts[:4]  # the context states four facts; the others can be asked without answer
  context, starts = "", []
  for sentence, answer, _ in stated:
    context += (" " if context else "")
    starts.append(len(context) + sentence.index(answer))
    context += sentence
  qas = []
  for i, ((_, answer, question), start) in enumerate(zip(stated, starts)):
    assert context[start:start + len(answer)] == answer
    qas.append({"id": f"{qid}-{i}", "question": question,
                "answers": [{"text": answer, "answer_start": start}], "is_impossible": False})
  if with_impossible:
    _, _, question = facts[4 + rng.below(2)]
    qas.append({"id": f"{qid}-x", "question": question, "answers": [], "is_impossible": True})
  return {"context": context, "qas": qas}


def squad_json(seed: int, num_paragraphs: int, version_2: bool = False) -> dict:
  """A SQuAD-format dict: one article per paragraph, 4 questions each (+1 unanswerable in v2)."""
  world = corpus._entities(corpus._Rng(0))  # pylint: disable=protected-access
  rng = corpus._Rng(seed)  # pylint: disable=protected-access
  data = []
  for i in range(num_paragraphs):
    p = rng.pick(world["people"])
    data.append({"title": p["name"],
                 "paragraphs": [_qa_paragraph(rng, p, f"s{seed}-{i}", version_2)]})
  return {"version": "v2.0" if version_2 else "1.1", "data": data}


def _choice_example(rng: corpus._Rng, world: dict, p: dict) -> dict:
  f, t, pet = p["first"], p["town"], p["pet"]
  facts = [  # (context sentence, continuation, field, value)
      (f"{p['name']} works as a {p['job']}.", "works as a {}", "job", p["job"]),
      (f"{f} lives in {t['name']}.", "lives in {}", "town", t["name"]),
      (f"{f} keeps a {pet['name']} as a pet.", "keeps a {} as a pet", "pet", pet["name"]),
      (f"The favourite colour of {f} is {p['colour']}.", "likes the colour {}", "colour",
       p["colour"]),
  ]
  facts = corpus._shuffled(rng, facts)  # pylint: disable=protected-access
  (first, _, _, _), (stated, pattern, field, value) = facts[0], facts[1]
  def value_of(person):
    return {"job": person["job"], "town": person["town"]["name"], "pet": person["pet"]["name"],
            "colour": person["colour"]}[field]
  wrong = []
  while len(wrong) < 3:
    other = value_of(rng.pick(world["people"]))
    if other != value_of(p) and other not in wrong:
      wrong.append(other)
  label = rng.below(4)
  values = wrong[:label] + [value] + wrong[label:]
  return {"context": f"{first} {stated}",
          "choices": [f"So {f} {pattern.format(v)}." for v in values], "label": label}


def choices_jsonl(seed: int, num_examples: int) -> str:
  """Multiple-choice JSONL: {"context", "choices" (4), "label"} per line."""
  world = corpus._entities(corpus._Rng(0))  # pylint: disable=protected-access
  rng = corpus._Rng(seed)  # pylint: disable=protected-access
  rows = [_choice_example(rng, world, rng.pick(world["people"])) for _ in range(num_examples)]
  return "".join(json.dumps(r) + "\n" for r in rows)


def _summary_example(rng: corpus._Rng, world: dict, p: dict) -> dict:
  f, t, pet, c = p["first"], p["town"], p["pet"], rng.pick(world["companies"])
  facts = [  # (article sentence, its restatement in the highlights)
      (f"{p['name']} works as a {p['job']} in {t['name']}.", f"{f} is a {p['job']}."),
      (f"{f} lives in {t['name']}, a {t['size']} town on the river {t['river']}.",
       f"{f} lives by the river {t['river']}."),
      (f"{f} keeps a {pet['name']} as a pet.", f"{f} has a pet {pet['name']}."),
      (f"The {pet['name']} of {f} eats {pet['food']} every morning.",
       f"The pet eats {pet['food']}."),
      (f"The favourite colour of {f} is {p['colour']}.", f"{f} likes {p['colour']}."),
      (f"{f} is {p['age']} years old.", f"{f} is {p['age']}."),
      (f"Every {p['day']} {f} goes to the market in {t['name']}.",
       f"{f} shops on {p['day']}."),
      (f"{f} buys {c['product']} from {c['name']}.", f"{f} buys from {c['name']}."),
      (f"{c['name']} was founded by {c['founder']['name']}.",
       f"{c['founder']['name']} founded {c['name']}."),
      (f"People in {t['name']} fish in the river {t['river']} every {t['day']}.",
       f"{t['name']} fishes on {t['day']}."),
  ]
  # The highlights restate 2-3 of the person's key facts (the first four: job, home, pet,
  # colour), wherever the article puts them: a model can learn what matters, Lead-3 cannot.
  shuffled = corpus._shuffled  # pylint: disable=protected-access
  key = shuffled(rng, facts[:4])
  told = key[:2 + rng.below(2)]
  article = shuffled(rng, told + shuffled(rng, key[len(told):] + facts[4:])[:4 + rng.below(5)])
  return {"article": " ".join(s for s, _ in article),
          "highlights": "\n".join(h for s, h in article if (s, h) in told)}


def summaries_jsonl(seed: int, num_examples: int) -> str:
  """Extractive-summary JSONL: {"article" (6-10 sentences), "highlights" (2-3 of them
  restated, one a line)} per line."""
  world = corpus._entities(corpus._Rng(0))  # pylint: disable=protected-access
  rng = corpus._Rng(seed)  # pylint: disable=protected-access
  rows = [_summary_example(rng, world, rng.pick(world["people"])) for _ in range(num_examples)]
  return "".join(json.dumps(r) + "\n" for r in rows)


def write(directory: str, num_train: int = 600, num_eval: int = 150,
          version_2: bool = True) -> dict[str, dict[str, str]]:
  """Writes ner/{train,validation,test}.conll, squad/{...}.json, mc/{...}.jsonl and
  summary/{...}.jsonl; returns their paths."""
  sizes = {"train": num_train, "validation": num_eval, "test": num_eval}
  paths: dict[str, dict[str, str]] = {"ner": {}, "squad": {}, "mc": {}}
  for k, split in enumerate(_SPLITS):
    ner = os.path.join(directory, "ner", f"{split}.conll")
    os.makedirs(os.path.dirname(ner), exist_ok=True)
    text = conll_text(100 + k, sizes[split]).encode("utf-8")
    files.write_file_atomically(ner, lambda f, text=text: f.write(text))
    qa = os.path.join(directory, "squad", f"{split}.json")
    os.makedirs(os.path.dirname(qa), exist_ok=True)
    doc = squad_json(200 + k, max(1, sizes[split] // 4), version_2)
    body = json.dumps(doc, indent=1).encode("utf-8")
    files.write_file_atomically(qa, lambda f, body=body: f.write(body))
    mc = os.path.join(directory, "mc", f"{split}.jsonl")
    os.makedirs(os.path.dirname(mc), exist_ok=True)
    rows = choices_jsonl(300 + k, sizes[split]).encode("utf-8")
    files.write_file_atomically(mc, lambda f, rows=rows: f.write(rows))
    paths["ner"][split], paths["squad"][split], paths["mc"][split] = ner, qa, mc
    summary = os.path.join(directory, "summary", f"{split}.jsonl")
    os.makedirs(os.path.dirname(summary), exist_ok=True)
    rows = summaries_jsonl(400 + k, sizes[split]).encode("utf-8")
    files.write_file_atomically(summary, lambda f, rows=rows: f.write(rows))
    paths.setdefault("summary", {})[split] = summary
  return paths


if __name__ == "__main__":
  out = write(sys.argv[1] if len(sys.argv) > 1 else "sample_tasks")
  print(json.dumps(out, indent=1))
