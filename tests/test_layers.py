"""The import graph has no arrow from a lower layer to a higher one (read from the source,
function-level imports included), and no file outside bert_jax/heads/ tests a head's name."""

import ast
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bert_jax")

# module prefix -> the packages/modules it must never import.
FORBIDDEN = {
    "bert_jax.data": ("bert_jax.tasks", "bert_jax.heads", "bert_jax.formats", "bert_jax.inference",
                      "bert_jax.train", "bert_jax.loop", "bert_jax.predict", "bert_jax.finalize",
                      "bert_jax.retrieval", "bert_jax.similarity", "bert_jax.checkpoint"),
    "bert_jax.model": ("bert_jax.heads", "bert_jax.tasks", "bert_jax.formats", "bert_jax.train"),
    "bert_jax.attention": ("bert_jax.heads", "bert_jax.tasks", "bert_jax.formats",
                           "bert_jax.train", "bert_jax.model"),
    "bert_jax.tokenization": ("bert_jax.heads", "bert_jax.tasks", "bert_jax.formats",
                              "bert_jax.train"),
    "bert_jax.checkpoint": ("bert_jax.formats", "bert_jax.tokenization", "bert_jax.heads",
                            "bert_jax.tasks", "bert_jax.train"),
    "bert_jax.heads": ("bert_jax.tasks", "bert_jax.train", "bert_jax.loop", "bert_jax.finalize",
                       "bert_jax.predict", "bert_jax.retrieval", "bert_jax.similarity"),
    "bert_jax.tasks": ("bert_jax.train", "bert_jax.loop", "bert_jax.finalize", "bert_jax.predict",
                       "bert_jax.heads"),
    "bert_jax.formats": ("bert_jax.train", "bert_jax.loop", "bert_jax.tasks", "bert_jax.predict",
                         "bert_jax.finalize"),
    "bert_jax.loop": ("bert_jax.train", "bert_jax.tasks", "bert_jax.predict"),
}


def _modules():
  for dirpath, _, names in os.walk(ROOT):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
        yield rel.removesuffix(".__init__"), path


def _imports(path):
  tree = ast.parse(open(path, encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_import_from_a_lower_layer_to_a_higher_one():
  bad = []
  for module, path in _modules():
    for prefix, forbidden in FORBIDDEN.items():
      if module == prefix or module.startswith(prefix + "."):
        for imported in set(_imports(path)):
          if any(imported == f or imported.startswith(f + ".") for f in forbidden):
            bad.append(f"{module} imports {imported}")
  assert not bad, bad


def test_no_file_outside_heads_tests_a_head_name():
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  names = "|".join(re.escape(n) for n in list(heads.HEADS) + list(heads.TRAINABLE))
  # A head name tested against a model's heads: `"qa" in pre.heads`, `head == "classifier"`.
  test = re.compile(rf"""["']({names})["']\s+(not\s+)?in\s+[\w.]*heads\b"""
                    rf"""|\bhead\w*\s*(==|!=)\s*["']({names})["']""")
  found = []
  for module, path in _modules():
    if module.startswith("bert_jax.heads"):
      continue
    for number, line in enumerate(open(path, encoding="utf-8"), start=1):
      if test.search(line):
        found.append(f"{path}:{number}: {line.strip()}")
  assert not found, found
