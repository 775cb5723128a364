"""A labelled sentence-pair sample task (3 classes) about the sample corpus's world.

Why: fine-tuning must run offline in the README and the tests, on text a model
pretrained on `sample_corpus.txt` knows. Each example is a premise stating two
true facts about one of the corpus's invented people and a claim about them:
- `entailment`: one of the two facts, said with another template
  ("Pufax Mubeark works as a cook." -> "Pufax earns a living as a cook.");
- `contradiction`: one of the two facts negated ("Pufax has never worked as a
  cook.");
- `neutral`: an attribute the premise does not mention, stated or (half of
  them) negated, with any value ("Pufax does not keep a wethowl as a pet.").
Negation alone does not give the label (half the neutral claims are negated
too), so a model must see which attribute the claim is about, whether the
premise mentions it, and the claim's polarity. Classes are balanced (labels in
rotation), no pair is in two splits and the same seed gives the same bytes.

What the quick start's model reaches (configs/finetune_tiny.py, 1,500 steps
in 2 min 12 s on a shared 2-core CPU at load 6.6): 0.968 on the 600 test pairs;
entailment 0.99, neutral 0.93, contradiction 0.98 (chance 0.33).

Claims that swap a fact's value ("Pufax is a baker.") are real contradictions
too, but the quick start's 2-layer model does not learn them: measured, 0.00 to
0.16 of such contradictions found after 469 to 1,500 steps on 3,000 to 30,000
pairs (0.11 with finetune_tiny.py's recipe, mixed with negations), even with
one-fact premises and the claim being the premise's sentence with its value
swapped; the eval loss stays at (2/3) ln 2, a coin flip between entailment and
contradiction. Its pretraining gives it no way to copy a value from the premise
(fill-mask on "Brom Tefaix works as a teacher. As a [MASK], Brom gets up
early." ranks jobs evenly). So the task leaves them out rather than teach a
coin flip.

  python -m bert_jax.data.sample_pairs OUTPUT_DIR   # train/validation/test.jsonl
"""

from __future__ import annotations

import json
import os
import sys

from bert_jax import files
from bert_jax.data import sample_corpus

LABELS = ("entailment", "neutral", "contradiction")
SPLITS = {"train": 3000, "validation": 600, "test": 600}

# Affirmative templates per attribute: any two of one attribute say the same thing.
TEMPLATES = {
    "job": ["{n} is a {v}.", "{n} works as a {v}.", "{f} earns a living as a {v}."],
    "town": ["{n} lives in {v}.", "The home of {f} is in {v}.", "{f} has a house in {v}."],
    "colour": ["The favourite colour of {f} is {v}.", "{f} likes the colour {v} best."],
    "pet": ["{f} keeps a {v} as a pet.", "{f} has a pet {v}."],
}
# Negated templates: each denies what every template of its attribute states.
NEGATED = {
    "job": ["{n} is not a {v}.", "{f} does not work as a {v}.", "{f} has never worked as a {v}."],
    "town": ["{n} does not live in {v}.", "The home of {f} is not in {v}.",
             "{f} has no house in {v}."],
    "colour": ["The favourite colour of {f} is not {v}.", "{f} does not like the colour {v} best."],
    "pet": ["{f} does not keep a {v} as a pet.", "{f} has no pet {v}."],
}


def _value(person: dict, attribute: str) -> str:
  v = person[attribute]
  return v["name"] if isinstance(v, dict) else str(v)


def _choices(world: dict, attribute: str) -> list[str]:
  return {"job": list(sample_corpus.JOBS), "colour": list(sample_corpus.COLOURS),
          "town": [t["name"] for t in world["towns"]],
          "pet": [a["name"] for a in world["animals"]]}[attribute]


def _say(rng, templates: list[str], person: dict, value: str, avoid: int = -1) -> tuple[str, int]:
  k = rng.below(len(templates))
  if k == avoid and len(templates) > 1:
    k = (k + 1) % len(templates)
  return templates[k].format(n=person["name"], f=person["first"], v=value), k


def world() -> dict:
  """The sample corpus's entities (towns, people, animals), as the corpus states them."""
  return sample_corpus._entities(sample_corpus._Rng(0))  # pylint: disable=protected-access


def examples(seed: int, count: int, exclude: frozenset = frozenset()) -> list[dict]:
  """`count` distinct examples {sentence1, sentence2, label}, labels in rotation (balanced).

  Args:
    seed: the same seed gives the same examples.
    count: how many.
    exclude: (sentence1, sentence2) pairs not to give (another split's), drawn again.
  """
  rng = sample_corpus._Rng(1000 + seed)  # pylint: disable=protected-access
  people = world()
  attributes = list(TEMPLATES)
  out, seen = [], set(exclude)
  while len(out) < count:
    i = len(out)
    person = rng.pick(people["people"])
    first = rng.pick(attributes)
    second = rng.pick([a for a in attributes if a != first])
    said = []
    for attribute in (first, second):
      text, k = _say(rng, TEMPLATES[attribute], person, _value(person, attribute))
      said.append((attribute, text, k))
    label = LABELS[i % 3]
    if label == "neutral":
      attribute = rng.pick([a for a in attributes if a not in (first, second)])
      negated = (i // 3) % 2 == 1  # Every other neutral claim: exactly half.
      templates = (NEGATED if negated else TEMPLATES)[attribute]
      claim, _ = _say(rng, templates, person, rng.pick(_choices(people, attribute)))
    else:
      attribute, _, k = said[rng.below(2)]
      value = _value(person, attribute)
      if label == "contradiction":
        claim, _ = _say(rng, NEGATED[attribute], person, value)
      else:
        claim, _ = _say(rng, TEMPLATES[attribute], person, value, avoid=k)
    premise = " ".join(text for _, text, _ in said)
    if (premise, claim) not in seen:
      seen.add((premise, claim))
      out.append({"sentence1": premise, "sentence2": claim, "label": label})
  return out


def write(directory: str, seed: int = 0) -> dict[str, str]:
  """train/validation/test.jsonl under `directory` (no pair in two splits); returns their paths."""
  os.makedirs(directory, exist_ok=True)
  paths, earlier = {}, set()
  for offset, (split, count) in enumerate(SPLITS.items()):
    path = os.path.join(directory, f"{split}.jsonl")
    rows = examples(seed * 10 + offset, count, frozenset(earlier))
    earlier.update((e["sentence1"], e["sentence2"]) for e in rows)
    text = "".join(json.dumps(e) + "\n" for e in rows)
    files.write_file_atomically(path, lambda f, text=text: f.write(text.encode("utf-8")))
    paths[split] = path
  return paths


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python -m bert_jax.data.sample_pairs OUTPUT_DIR")
  for name, written in write(sys.argv[1]).items():
    print(f"{name}: {written}")
