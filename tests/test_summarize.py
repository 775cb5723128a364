"""Extractive summarization: splitting, the three selection rules on vectors whose answer is
known by construction, k-means against scikit-learn, and the launcher end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sklearn.cluster
import torch
import transformers

from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.inference import summarize

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import ROOT, child_env  # pylint: disable=g-import-not-at-top,wrong-import-position

DOCUMENT = ("The man read the text. The woman read the text of the world. They learn the "
            "language in paris. Paris is the capital city of france. The company has a problem "
            "this year. The government had a number of problems. We love bert.")


def test_split_sentences():
  text = ('Mr. Smith met Dr. J. R. Doe at 5 p.m. today! "Is it true?" she asked. It cost 3.5 '
          'dollars, e.g. Many did. The U.S. Army came. (It left.) 1999 was over\n\n'
          'A new paragraph\nwithout a stop\n \nLast one.')
  assert summarize.split_sentences(text) == [
      "Mr. Smith met Dr. J. R. Doe at 5 p.m. today!", '"Is it true?" she asked.',
      "It cost 3.5 dollars, e.g. Many did.", "The U.S. Army came.", "(It left.)",
      "1999 was over", "A new paragraph without a stop", "Last one."]
  assert summarize.split_sentences("no capital after. this stays one") == [
      "no capital after. this stays one"]
  assert summarize.split_sentences(" \n\n \t") == []


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_centroid_picks_the_sentences_nearest_the_mean():
  # Four sentences along e0 (the mean's direction), two off to the side.
  vectors = _unit(np.array([[1.0, 0.9, 0], [1.0, 0.05, 0], [1.0, 0, 0.1], [1.0, -0.8, 0],
                            [0.2, 1.0, 0], [0.2, -1.0, 0]]))
  chosen, scores = summarize.choose(vectors, 2, "centroid")
  mean = _unit(vectors.mean(0))
  assert chosen.tolist() == [1, 2]  # document order
  np.testing.assert_allclose(scores, vectors[[1, 2]] @ mean, atol=1e-12)


def test_cluster_takes_the_sentence_at_each_centre():
  # Three far-apart directions e0, e1, e2; each cluster is its direction plus symmetric
  # offsets orthogonal to all three (so, once unit-normalised, the cluster's mean points
  # exactly along its direction) and the direction itself: that member is the answer.
  rng = np.random.default_rng(0)
  points, want = [], []
  for c, pairs in enumerate((2, 1, 3)):
    offsets = np.zeros((pairs, 8))
    offsets[:, 3:] = rng.normal(scale=0.3, size=(pairs, 5))
    direction = np.eye(8)[c]
    members = [direction + o for o in offsets] + [direction] + [direction - o for o in offsets]
    want.append(len(points) + pairs)
    points.extend(members)
  order = rng.permutation(len(points))  # shuffle, so that document order is not cluster order
  points = np.asarray(points)[order]
  want = sorted(int(np.flatnonzero(order == w)[0]) for w in want)
  for seed in range(4):
    chosen, scores = summarize.choose(points, 3, "cluster", seed=seed)
    assert chosen.tolist() == want
    np.testing.assert_allclose(scores, 1.0, atol=1e-12)


def test_mmr_skips_a_duplicate_that_centroid_takes():
  vectors = _unit(np.array([[1.0, 0.1, 0.0], [1.0, 0.1, 0.0], [1.0, -0.3, 0.3],
                            [0.3, 1.0, 0.0], [0.0, 0.2, 1.0]]))
  assert summarize.choose(vectors, 2, "centroid")[0].tolist() == [0, 1]
  chosen, scores = summarize.select_mmr(vectors, 2, 0.5)
  relevance = vectors @ _unit(vectors.mean(0))
  # Worked by hand: first the most relevant; then the best of 0.5 rel - 0.5 max-sim, which
  # the exact duplicate (similarity 1) cannot be.
  assert chosen[0] == 0 and scores[0] == pytest.approx(0.5 * relevance[0])
  second = 0.5 * relevance - 0.5 * (vectors @ vectors[0])
  second[0] = -np.inf
  assert chosen[1] == int(np.argmax(second)) != 1
  assert scores[1] == pytest.approx(second.max())
  assert summarize.select_mmr(vectors, 2, 1.0)[0].tolist() == [0, 1]  # lambda 1 = centroid


def test_kmeans_equals_scikit_learn_from_the_same_init():
  rng = np.random.default_rng(1)
  x = np.concatenate([rng.normal(loc, 1.0, size=(40, 5)) for loc in (-3.0, 0.0, 2.0, 5.0)])
  for k, seed in ((4, 0), (3, 7), (6, 2)):
    init = summarize.kmeans_plus_plus(x, k, seed)
    np.testing.assert_array_equal(init, summarize.kmeans_plus_plus(x, k, seed))  # seeded
    centres, labels = summarize.kmeans(x, k, init=init)
    ref = sklearn.cluster.KMeans(n_clusters=k, init=init, n_init=1, algorithm="lloyd",
                                 max_iter=300, tol=1e-4).fit(x)
    np.testing.assert_allclose(centres, ref.cluster_centers_, atol=1e-8)
    np.testing.assert_array_equal(labels, ref.labels_)


def test_summary_length_rules():
  assert summarize.summary_length(None, None, 10) == 3
  assert summarize.summary_length(None, 0.2, 12) == 2
  assert summarize.summary_length(None, 0.01, 12) == 1
  with pytest.raises(UserError, match="--num_sentences or --ratio, not both"):
    summarize.summary_length(2, 0.2, 10)
  with pytest.raises(UserError, match="--ratio=1.5"):
    summarize.summary_length(None, 1.5, 10)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  model = hf_fixtures.make_model("BertModel", seed=11)
  directory = hf_fixtures.save_hf_dir(model, str(tmp_path_factory.mktemp("sum") / "hf"))
  return model, directory, transformers.BertTokenizer(os.path.join(directory, "vocab.txt"))


def _torch_sentence_vectors(hf, sentences):
  model, _, tok = hf
  enc = tok(sentences, padding=True, return_tensors="pt")
  with torch.no_grad():
    h = model(**enc).last_hidden_state
  mask = enc["attention_mask"][..., None].float()
  return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=1).numpy()


@pytest.mark.parametrize("method", summarize.METHODS)
def test_summarizer_matches_a_transformers_computation(hf, method):
  sentences = summarize.split_sentences(DOCUMENT)
  assert len(sentences) == 7
  want_idx, want_scores = summarize.choose(_torch_sentence_vectors(hf, sentences), 3, method)
  got = summarize.Summarizer(convert.from_pretrained(hf[1]), method).summarize([DOCUMENT])[0]
  assert [s["index"] for s in got.sentences] == want_idx.tolist()
  assert [s["text"] for s in got.sentences] == [sentences[i] for i in want_idx]
  np.testing.assert_allclose([s["score"] for s in got.sentences], want_scores, atol=1e-5)
  assert got.note is None
  assert got.to_json()["summary"] == " ".join(sentences[i] for i in want_idx)


def test_short_and_empty_documents(hf):
  summarizer = summarize.Summarizer(convert.from_pretrained(hf[1]), "cluster", num_sentences=3)
  short, = summarizer.summarize(["The man read the text. We love bert."], ["short.txt"])
  assert [s["index"] for s in short.sentences] == [0, 1]
  assert short.note == ("short.txt has 2 sentences, fewer than the 3 asked for: returning all "
                        "of them")
  with pytest.raises(UserError, match="document 2 is empty"):
    summarizer.summarize(["One. Two.", "  \n "])


def test_read_documents(tmp_path):
  plain = tmp_path / "docs.txt"
  plain.write_text("First doc. Still first.\n\n\nSecond doc.\n", encoding="utf-8")
  assert summarize.read_documents(str(plain), per_document=True)[0] == [
      "First doc. Still first.", "Second doc."]
  assert len(summarize.read_documents(str(plain), per_document=False)[0]) == 1
  rows = tmp_path / "docs.jsonl"
  rows.write_text('{"text": "A b. C d."}\n\n{"text": "E f."}\n', encoding="utf-8")
  assert summarize.read_documents(str(rows), False) == (["A b. C d.", "E f."],
                                                        [f"{rows}:1", f"{rows}:3"])
  rows.write_text('{"body": "x"}\n', encoding="utf-8")
  with pytest.raises(UserError, match=r"docs.jsonl:1: expected a string field 'text'"):
    summarize.read_documents(str(rows), False)
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"fine.\nnot \xff fine.\n")
  with pytest.raises(UserError, match=r"bad.txt:2: not UTF-8"):
    summarize.read_documents(str(bad), False)


def _run(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "summarize.py"), *args],
                        env=child_env(), capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_launcher_end_to_end(hf, tmp_path):
  _, directory, _ = hf
  second = "Paris is the capital city of france. They learn the language in paris. We love bert."
  source = tmp_path / "docs.txt"
  source.write_text(DOCUMENT + "\n\n" + second + "\n", encoding="utf-8")
  done = _run(f"--model={directory}", f"--input={source}", "--per_document", "--json",
              "--method=cluster", "--num_sentences=2")
  assert done.returncode == 0, done.stderr
  lines = [json.loads(l) for l in done.stdout.strip().splitlines()]
  want = summarize.Summarizer(convert.from_pretrained(directory), "cluster",
                              num_sentences=2).summarize([DOCUMENT, second])
  assert lines == [w.to_json() for w in want]
  done = _run(f"--model={directory}", "--text=We love bert.", "--num_sentences=3")
  assert done.returncode == 0 and done.stdout.strip() == "We love bert."
  assert "has 1 sentence, fewer than the 3 asked for" in done.stderr
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"fine.\n\xff\n")
  for args, message in [(["--text= "], "--text is empty"),
                        (["--text=a b.", "--ratio=0.2", "--num_sentences=2"], "not both"),
                        ([f"--input={bad}"], f"{bad}:2: not UTF-8"),
                        (["--text=x", f"--input={source}"], "exactly one of")]:
    done = _run(f"--model={directory}", *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith("error:") and message in lines[-1], (
        args, done.stderr)
    assert "Traceback" not in done.stderr
