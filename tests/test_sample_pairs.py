"""The sample pair task keeps its promises: balanced, same bytes per seed, labels that hold.

Each sentence is parsed back into (attribute, value, negated) and checked against the sample
corpus's world (premise facts are true of the person) and the label's relation: an entailment
restates a premise fact in other words, a contradiction negates one, a neutral claim is about
an attribute the premise does not mention.
"""

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from bert_jax.data import sample_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEGATION = re.compile(r"\b(not|never|no)\b")


def _patterns():
  out = []
  for negated, table in ((False, sample_pairs.TEMPLATES), (True, sample_pairs.NEGATED)):
    for attribute, templates in table.items():
      for template in templates:
        regex = re.escape(template).replace(r"\{n\}", r"(?P<n>[A-Z][a-z]+ [A-Z][a-z]+)")
        regex = regex.replace(r"\{f\}", r"(?P<f>[A-Z][a-z]+)").replace(r"\{v\}", r"(?P<v>\w+)")
        out.append((re.compile(regex + "$"), attribute, negated, template))
  return out


PATTERNS = _patterns()


def _parse(sentence):
  """(first name, attribute, value, negated, template) of the one template it matches."""
  found = [(m, a, neg, t) for p, a, neg, t in PATTERNS for m in [p.match(sentence)] if m]
  assert len(found) == 1, (sentence, [t for *_, t in found])
  m, attribute, negated, template = found[0]
  first = (m.groupdict().get("n") or m.group("f")).split()[0]
  return first, attribute, m.group("v"), negated, template


def _value(person, attribute):
  v = person[attribute]
  return v["name"] if isinstance(v, dict) else v


def test_labels_are_balanced_and_splits_sized():
  assert sample_pairs.SPLITS == {"train": 3000, "validation": 600, "test": 600}
  for seed, count in ((0, 3000), (2, 600), (5, 61)):
    counts = collections.Counter(e["label"] for e in sample_pairs.examples(seed, count))
    assert sorted(counts) == sorted(sample_pairs.LABELS)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == count


def test_same_seed_same_bytes_other_seed_other_pairs(tmp_path):
  a = sample_pairs.write(str(tmp_path / "a"))
  b = sample_pairs.write(str(tmp_path / "b"))
  c = sample_pairs.write(str(tmp_path / "c"), seed=1)
  for split in sample_pairs.SPLITS:
    data = open(a[split], "rb").read()
    assert data == open(b[split], "rb").read()
    assert data != open(c[split], "rb").read()
    assert len(data.decode("utf-8").splitlines()) == sample_pairs.SPLITS[split]
  # Distinct pairs, and no pair in two splits (the generator draws a seen one again).
  pairs = [(e["sentence1"], e["sentence2"]) for split in sample_pairs.SPLITS
           for e in map(json.loads, open(a[split]).read().splitlines())]
  assert len(set(pairs)) == len(pairs) == sum(sample_pairs.SPLITS.values())
  plain = sample_pairs.examples(2, 600)
  assert sum((e["sentence1"], e["sentence2"]) in set(pairs[:3000]) for e in plain) >= 1


@pytest.mark.slow
def test_bytes_do_not_depend_on_the_process(tmp_path):
  """Another interpreter with another hash seed writes the same files."""
  here = sample_pairs.write(str(tmp_path / "here"))
  subprocess.run([sys.executable, "-m", "bert_jax.data.sample_pairs", str(tmp_path / "there")],
                 check=True, cwd=ROOT, capture_output=True,
                 env=dict(os.environ, PYTHONHASHSEED="123", PYTHONPATH=ROOT))
  for split, path in here.items():
    assert open(path, "rb").read() == (tmp_path / "there" / f"{split}.jsonl").read_bytes()


def test_each_claim_relates_to_its_premise_as_labelled():
  world = sample_pairs.world()
  by_first = collections.defaultdict(list)
  for person in world["people"]:
    by_first[person["first"]].append(person)
  rows = sample_pairs.examples(0, 3000) + sample_pairs.examples(2, 600)
  kinds = collections.Counter()
  for row in rows:
    facts = [_parse(s + ".") for s in row["sentence1"][:-1].split(". ")]
    first, attribute, value, negated, template = _parse(row["sentence2"])
    assert len(facts) == 2 and {f[0] for f in facts} == {first}
    assert facts[0][1] != facts[1][1] and not any(f[3] for f in facts)
    # The premise states true facts of one of the corpus's people of that name.
    assert any(all(_value(p, a) == v for _, a, v, _, _ in facts) for p in by_first[first]), row
    assert bool(NEGATION.search(row["sentence2"])) == negated
    assert not NEGATION.search(row["sentence1"])
    premise = {a: (v, t) for _, a, v, _, t in facts}
    if row["label"] == "neutral":
      assert attribute not in premise
    else:
      assert attribute in premise and premise[attribute][0] == value
      if row["label"] == "entailment":
        assert not negated and template != premise[attribute][1]
      else:
        assert row["label"] == "contradiction" and negated
    kinds[row["label"], negated] += 1
  # Negation alone does not give the label: half the neutral claims are negated.
  assert kinds["neutral", True] == kinds["neutral", False] == 600
  assert kinds["contradiction", True] == kinds["entailment", False] == 1200
  # Every attribute and template is used.
  used = collections.Counter(_parse(r["sentence2"])[4] for r in rows)
  assert len(used) == len(PATTERNS)
