"""A small synthetic English corpus with facts a masked LM can learn.

Why: the project ships without downloads, yet a pretraining run on a laptop
should show a model learning something real. This generator invents towns,
people, companies and animals with fixed attributes (a town's river and
region, a person's job, home town and pet, a company's product and founder, an
animal's colour and food) and writes many documents that restate those facts
with varied sentence templates, plus arithmetic, weekdays and months. On
masked tokens (15%, uncased 4k WordPiece), always predicting the most frequent
token is right 12% of the time and a left-neighbour bigram table 41%; the
rest needs the facts. Every word is generated here; no text is copied.

It uses only `random.Random.random()`, whose sequence Python keeps stable, so
`generate(seed)` gives the same bytes on every platform; the shipped
`bert_jax/data/sample_corpus.txt` is `generate(0)` (a test checks it):

  python -m bert_jax.data.sample_corpus bert_jax/data/sample_corpus.txt
"""

from __future__ import annotations

import os
import random
import sys

NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
           "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = ("January February March April May June July August September October November "
          "December").split()
COLOURS = "red blue green yellow white black grey brown orange purple silver golden".split()
JOBS = ("baker farmer teacher doctor painter fisher builder miller weaver singer carpenter "
        "sailor gardener potter tailor nurse writer judge cook smith").split()
PRODUCTS = ("bread cheese ships shoes clocks paper glass rope bricks lamps wool boats tea "
            "honey soap bells maps kites").split()
FOODS = "fish seeds berries grass insects roots fruit mice leaves nuts".split()
HOMES = "forests hills marshes rivers caves meadows mountains lakes deserts islands".split()
REGIONS = "north south east west".split()
SIZES = ("small", "large", "quiet", "busy", "old", "new")
_ONSETS = "b br c d dr f g gl h k l m n p pr r s st t th tr v w z".split()
_VOWELS = "a e i o u ai ea oo".split()
_CODAS = "n r l m s th nd rk ll st x".split()
_TOWN_ENDS = "ford ton dale wick mere bury holm stead brook field".split()


class _Rng:
  """Choices built only on `random()`, stable across Python versions."""

  def __init__(self, seed: int):
    self._r = random.Random(seed)

  def below(self, n: int) -> int:
    return min(n - 1, int(self._r.random() * n))

  def pick(self, items):
    return items[self.below(len(items))]

  def chance(self, p: float) -> bool:
    return self._r.random() < p


def _syllables(rng: _Rng, count: int) -> str:
  parts = [rng.pick(_ONSETS) + rng.pick(_VOWELS) for _ in range(count)]
  return ("".join(parts) + rng.pick(_CODAS)).capitalize()


def _unique(rng: _Rng, make, count: int) -> list[str]:
  seen, out = set(), []
  while len(out) < count:
    name = make()
    if name not in seen:
      seen.add(name)
      out.append(name)
  return out


def _entities(rng: _Rng) -> dict:
  towns = _unique(rng, lambda: _syllables(rng, 1 + rng.below(2)).rstrip("aeiou")
                  + rng.pick(_TOWN_ENDS), 240)
  rivers = _unique(rng, lambda: _syllables(rng, 2), 60)
  firsts = _unique(rng, lambda: _syllables(rng, 1 + rng.below(2)), 300)
  lasts = _unique(rng, lambda: _syllables(rng, 2), 400)
  animals = _unique(rng, lambda: _syllables(rng, 1).lower() + rng.pick(
      ["fox", "bird", "cat", "fish", "deer", "owl", "frog", "hare"]), 80)
  world = dict(towns=[], people=[], companies=[], animals=[])
  for name in towns:
    world["towns"].append(dict(name=name, river=rng.pick(rivers), region=rng.pick(REGIONS),
                               product=rng.pick(PRODUCTS), size=rng.pick(SIZES),
                               day=rng.pick(DAYS), month=rng.pick(MONTHS)))
  for name in animals:
    world["animals"].append(dict(name=name, colour=rng.pick(COLOURS), food=rng.pick(FOODS),
                                 home=rng.pick(HOMES), legs=rng.pick((2, 4, 6))))
  people_names = _unique(rng, lambda: f"{rng.pick(firsts)} {rng.pick(lasts)}", 1200)
  for name in people_names:
    world["people"].append(dict(name=name, first=name.split()[0], job=rng.pick(JOBS),
                                town=rng.pick(world["towns"]), colour=rng.pick(COLOURS),
                                pet=rng.pick(world["animals"]), age=20 + rng.below(60),
                                day=rng.pick(DAYS)))
  world["residents"] = {t["name"]: [] for t in world["towns"]}
  for p in world["people"]:
    world["residents"][p["town"]["name"]].append(p)
  companies = _unique(rng, lambda: _syllables(rng, 2) + rng.pick(
      [" Works", " and Sons", " Company", " Guild", " Trading"]), 200)
  for name in companies:
    world["companies"].append(dict(name=name, town=rng.pick(world["towns"]),
                                   product=rng.pick(PRODUCTS), founder=rng.pick(world["people"]),
                                   colour=rng.pick(COLOURS)))
  return world


def _town_doc(rng: _Rng, t: dict, world: dict) -> list[str]:
  n, r = t["name"], t["river"]
  lines = [
      rng.pick([f"{n} is a {t['size']} town in the {t['region']}.",
                f"The town of {n} lies in the {t['region']} of the country.",
                f"{n} is a {t['size']} town on the river {r}."]),
      rng.pick([f"The river {r} runs through {n}.", f"{n} was built beside the river {r}.",
                f"People in {n} fish in the river {r}."]),
      rng.pick([f"The people of {n} make {t['product']}.", f"{n} is known for its {t['product']}.",
                f"Most of the {t['product']} in the {t['region']} comes from {n}."]),
      rng.pick([f"The market in {n} is held every {t['day']}.",
                f"On {t['day']} the farmers come to the market of {n}.",
                f"Every {t['day']} there is a market in {n}."]),
      rng.pick([f"The great fair of {n} takes place in {t['month']}.",
                f"In {t['month']} the town of {n} holds its fair."]),
  ]
  for p in world["residents"][n][:2 + rng.below(3)]:
    lines.append(rng.pick([f"{p['name']} is a {p['job']} in {n}.",
                           f"The {p['job']} {p['name']} lives in {n}."]))
  return [lines[0]] + _shuffled(rng, lines[1:])


def _person_doc(rng: _Rng, p: dict) -> list[str]:
  n, f, t, pet = p["name"], p["first"], p["town"], p["pet"]
  lines = [
      rng.pick([f"{n} is a {p['job']} from {t['name']}.", f"{n} works as a {p['job']}.",
                f"{n} lives in {t['name']} and works as a {p['job']}."]),
      rng.pick([f"{f} lives in {t['name']}, a town on the river {t['river']}.",
                f"The home of {f} is in {t['name']}.", f"{f} was born in {t['name']}."]),
      rng.pick([f"The favourite colour of {f} is {p['colour']}.",
                f"{f} likes the colour {p['colour']} best.",
                f"The door of {f}'s house is painted {p['colour']}."]),
      rng.pick([f"{f} keeps a {pet['name']} as a pet.", f"{f} has a pet {pet['name']}.",
                f"The pet of {f} is a {pet['name']}, which eats {pet['food']}."]),
      rng.pick([f"{f} is {p['age']} years old.", f"This year {f} turned {p['age']}."]),
      rng.pick([f"On {p['day']} {f} goes to the market.", f"{f} rests every {p['day']}."]),
      rng.pick([f"As a {p['job']}, {f} gets up early.",
                f"Many people in {t['name']} know {f} the {p['job']}."]),
  ]
  return [lines[0]] + _shuffled(rng, lines[1:])[:3 + rng.below(4)]


def _company_doc(rng: _Rng, c: dict) -> list[str]:
  n, t, founder = c["name"], c["town"], c["founder"]
  lines = [
      rng.pick([f"{n} is a company in {t['name']}.", f"{n} has its workshop in {t['name']}."]),
      rng.pick([f"{n} makes {c['product']}.", f"The {c['product']} of {n} are sold everywhere.",
                f"{n} sells {c['product']} in the {t['region']}."]),
      rng.pick([f"{n} was founded by {founder['name']}.",
                f"{founder['name']}, a {founder['job']}, started {n}."]),
      rng.pick([f"The sign of {n} is {c['colour']}.",
                f"The carts of {n} are painted {c['colour']}."]),
      f"{t['name']} lies on the river {t['river']}.",
  ]
  return [lines[0]] + _shuffled(rng, lines[1:])


def _animal_doc(rng: _Rng, a: dict) -> list[str]:
  n = a["name"]
  lines = [
      rng.pick([f"The {n} is an animal of the {a['home']}.", f"The {n} lives in {a['home']}."]),
      rng.pick([f"The {n} is {a['colour']}.", f"A {n} has {a['colour']} fur.",
                f"You can tell a {n} by its {a['colour']} colour."]),
      rng.pick([f"The {n} eats {a['food']}.", f"A {n} likes to eat {a['food']}."]),
      rng.pick([f"A {n} has {NUMBERS[a['legs']]} legs.",
                f"The {n} walks on {NUMBERS[a['legs']]} legs."]),
  ]
  return [lines[0]] + _shuffled(rng, lines[1:])


def _facts_doc(rng: _Rng) -> list[str]:
  lines = []
  for _ in range(3 + rng.below(5)):
    kind = rng.below(5)
    a, b = rng.below(11), rng.below(11)
    if kind == 0:
      lines.append(f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}.")
    elif kind == 1:
      hi, lo = max(a, b), min(a, b)
      lines.append(f"{NUMBERS[hi].capitalize()} minus {NUMBERS[lo]} is {NUMBERS[hi - lo]}.")
    elif kind == 2:
      d = rng.below(7)
      lines.append(rng.pick([f"After {DAYS[d]} comes {DAYS[(d + 1) % 7]}.",
                             f"The day before {DAYS[(d + 1) % 7]} is {DAYS[d]}."]))
    elif kind == 3:
      m = rng.below(12)
      lines.append(f"The month after {MONTHS[m]} is {MONTHS[(m + 1) % 12]}.")
    else:
      start = rng.below(15)
      lines.append("Counting on: " + ", ".join(NUMBERS[start:start + 5]) + ".")
  return lines


def _shuffled(rng: _Rng, items: list) -> list:
  items = list(items)
  for i in range(len(items) - 1, 0, -1):
    j = rng.below(i + 1)
    items[i], items[j] = items[j], items[i]
  return items


def _document(rng: _Rng, world: dict) -> list[str]:
  """One document: a main entity, often followed by related ones (coherent for NSP)."""
  kind = rng.below(20)
  if kind < 8:
    p = rng.pick(world["people"])
    doc = _person_doc(rng, p)
    if rng.chance(0.6):
      doc += _town_doc(rng, p["town"], world)
    if rng.chance(0.5):
      doc += _animal_doc(rng, p["pet"])
  elif kind < 12:
    t = rng.pick(world["towns"])
    doc = _town_doc(rng, t, world)
    for p in world["residents"][t["name"]][:rng.below(3)]:
      doc += _person_doc(rng, p)
  elif kind < 15:
    c = rng.pick(world["companies"])
    doc = _company_doc(rng, c)
    if rng.chance(0.6):
      doc += _person_doc(rng, c["founder"])
    if rng.chance(0.4):
      doc += _town_doc(rng, c["town"], world)
  elif kind < 18:
    doc = _animal_doc(rng, rng.pick(world["animals"]))
    if rng.chance(0.5):
      doc += _animal_doc(rng, rng.pick(world["animals"]))
  else:
    doc = _facts_doc(rng) + _facts_doc(rng)
  return doc


def generate(seed: int = 0, num_documents: int = 7500) -> str:
  """The corpus text: one sentence per line, a blank line between documents."""
  rng = _Rng(seed)
  world = _entities(rng)
  docs = [_document(rng, world) for _ in range(num_documents)]
  return "\n\n".join("\n".join(doc) for doc in docs) + "\n"


def shipped_path() -> str:
  """Path of the shipped corpus, `generate(0)`."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_corpus.txt")


if __name__ == "__main__":
  target = sys.argv[1] if len(sys.argv) > 1 else shipped_path()
  os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
  with open(target + ".tmp", "w", encoding="utf-8", newline="\n") as f:
    f.write(generate(0))
  os.replace(target + ".tmp", target)
  print(f"wrote {target}")
