"""A labelled sentence-pair sample task (3 classes) about the sample corpus's world.

Why: fine-tuning must run offline in the README and the tests, on text a model
pretrained on `sample_corpus.txt` knows. Each example is a premise stating two
facts about one of the corpus's invented people and a claim about that person:
- `entailment`: one of the two facts, said with another template;
- `contradiction`: one of the facts' attributes with another value;
- `neutral`: an attribute the premise does not mention.
So a model must compare the claim's value with the premise's (contradiction vs
entailment) and notice which attribute is talked about (neutral). The classes
are balanced; the same seed gives the same bytes.

  python -m bert_jax.data.sample_pairs OUTPUT_DIR   # train/validation/test.jsonl
"""

from __future__ import annotations

import json
import os
import sys

from bert_jax.data import sample_corpus

LABELS = ("entailment", "neutral", "contradiction")
SPLITS = {"train": 3000, "validation": 600, "test": 600}

_TEMPLATES = {
    "job": ["{n} is a {v}.", "{n} works as a {v}.", "{f} earns a living as a {v}."],
    "town": ["{n} lives in {v}.", "The home of {f} is in {v}.", "{f} was born in {v}."],
    "colour": ["The favourite colour of {f} is {v}.", "{f} likes the colour {v} best."],
    "pet": ["{f} keeps a {v} as a pet.", "{f} has a pet {v}."],
}


def _value(person: dict, attribute: str) -> str:
  v = person[attribute]
  return v["name"] if isinstance(v, dict) else str(v)


def _choices(world: dict, attribute: str) -> list[str]:
  return {"job": list(sample_corpus.JOBS), "colour": list(sample_corpus.COLOURS),
          "town": [t["name"] for t in world["towns"]],
          "pet": [a["name"] for a in world["animals"]]}[attribute]


def _say(rng, person: dict, attribute: str, value: str, avoid: int = -1) -> tuple[str, int]:
  templates = _TEMPLATES[attribute]
  k = rng.below(len(templates))
  if k == avoid and len(templates) > 1:
    k = (k + 1) % len(templates)
  return templates[k].format(n=person["name"], f=person["first"], v=value), k


def examples(seed: int, count: int) -> list[dict]:
  """`count` examples {sentence1, sentence2, label}, labels in rotation (balanced)."""
  rng = sample_corpus._Rng(1000 + seed)  # pylint: disable=protected-access
  world = sample_corpus._entities(sample_corpus._Rng(0))  # pylint: disable=protected-access
  attributes = list(_TEMPLATES)
  out = []
  for i in range(count):
    person = rng.pick(world["people"])
    first = rng.pick(attributes)
    second = rng.pick([a for a in attributes if a != first])
    said = []
    for attribute in (first, second):
      text, k = _say(rng, person, attribute, _value(person, attribute))
      said.append((attribute, text, k))
    label = LABELS[i % 3]
    if label == "neutral":
      attribute = rng.pick([a for a in attributes if a not in (first, second)])
      claim, _ = _say(rng, person, attribute, rng.pick(_choices(world, attribute)))
    else:
      attribute, _, k = said[rng.below(2)]
      value = _value(person, attribute)
      if label == "contradiction":
        value = rng.pick([v for v in _choices(world, attribute) if v != value])
      claim, _ = _say(rng, person, attribute, value, avoid=k)
    out.append({"sentence1": " ".join(text for _, text, _ in said), "sentence2": claim,
                "label": label})
  return out


def write(directory: str, seed: int = 0) -> dict[str, str]:
  """train/validation/test.jsonl under `directory`; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for offset, (split, count) in enumerate(SPLITS.items()):
    path = os.path.join(directory, f"{split}.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      for example in examples(seed * 10 + offset, count):
        f.write(json.dumps(example) + "\n")
    os.replace(path + ".tmp", path)
    paths[split] = path
  return paths


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python -m bert_jax.data.sample_pairs OUTPUT_DIR")
  for name, written in write(sys.argv[1]).items():
    print(f"{name}: {written}")
