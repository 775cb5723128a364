"""Word and sentence cosine matrices against transformers/torch on the same HF checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert_jax import similarity
from bert_jax.errors import UserError
from bert_jax.formats import convert

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import ROOT, child_env  # pylint: disable=g-import-not-at-top,wrong-import-position

WORDS = ["king", "queen", "man", "woman", "dog", "cat", "apple", "pear", "paris"]
SENTENCES = ["the capital of france is paris .", "ibm love me bert", "one",
             "they read and write text in the language of the world", "we learn"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  model = hf_fixtures.make_model("BertModel", seed=5)
  directory = hf_fixtures.save_hf_dir(model, str(tmp_path_factory.mktemp("sim") / "hf"))
  return model, directory, transformers.BertTokenizer(os.path.join(directory, "vocab.txt"))


def _torch_cosines(vectors):
  v = torch.nn.functional.normalize(torch.as_tensor(np.stack(vectors), dtype=torch.float64), dim=1)
  return (v @ v.T).numpy()


def test_word_embedding_cosines_match_torch(hf):
  model, directory, tok = hf
  table = model.get_input_embeddings().weight.detach()
  want = _torch_cosines([table[tok.convert_tokens_to_ids(tok.tokenize(w))].mean(0).numpy()
                         for w in WORDS])
  got = similarity.word_vectors(convert.from_pretrained(directory), WORDS)
  np.testing.assert_allclose(similarity.cosine_matrix(got.vectors), want, atol=1e-5, rtol=0)
  assert got.labels == WORDS
  # Words split by WordPiece are named with their pieces; whole-vocabulary words are not.
  assert any(n.startswith("apple = a ##p ##p ##l ##e") for n in got.notes)
  assert not any(n.startswith(("man ", "paris ")) for n in got.notes)


def test_contextual_word_cosines_match_torch(hf):
  model, directory, tok = hf
  vectors = []
  with torch.no_grad():
    for w in WORDS:
      enc = tok(w, return_tensors="pt")
      vectors.append(model(**enc).last_hidden_state[0, 1:-1].mean(0).numpy())
  got = similarity.word_vectors(convert.from_pretrained(directory), WORDS, contextual=True)
  np.testing.assert_allclose(similarity.cosine_matrix(got.vectors), _torch_cosines(vectors),
                             atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling,layer", [("mean", -1), ("cls", 1), ("max", -1)])
def test_sentence_cosines_match_torch(hf, pooling, layer):
  model, directory, tok = hf
  enc = tok(SENTENCES, padding=True, return_tensors="pt")
  with torch.no_grad():
    h = model(**enc, output_hidden_states=True).hidden_states[layer]
  mask = enc["attention_mask"][..., None].float()
  if pooling == "mean":
    pooled = (h * mask).sum(1) / mask.sum(1)
  elif pooling == "cls":
    pooled = h[:, 0]
  else:
    pooled = h.masked_fill(mask == 0, -1e9).max(1).values
  got = similarity.sentence_vectors(convert.from_pretrained(directory), SENTENCES, pooling,
                                    layer=layer, normalize=True)
  np.testing.assert_allclose(similarity.cosine_matrix(got.vectors),
                             _torch_cosines(list(pooled.numpy())), atol=1e-5, rtol=0)


def test_heatmap_and_table(hf, tmp_path):
  labels = [f"sentence number {i} with a long tail of words" for i in range(30)]
  rng = np.random.default_rng(0)
  matrix = similarity.cosine_matrix(rng.normal(size=(30, 8)))
  path = tmp_path / "h.png"
  similarity.save_heatmap(str(path), labels, matrix, "title")
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  height, width, _ = matplotlib.image.imread(str(path)).shape
  assert height >= 800 and width >= 800
  table = similarity.format_table(WORDS[:3], matrix[:3, :3]).splitlines()
  assert len(table) == 4 and table[1].split()[0] == "king"
  assert float(table[1].split()[1]) == pytest.approx(1.0)
  with pytest.raises(UserError, match="has no tokens"):
    similarity.word_vectors(convert.from_pretrained(hf[1]), ["king", " "])


@pytest.mark.slow
def test_similarity_launcher(hf, tmp_path):
  _, directory, _ = hf
  png = tmp_path / "w.png"
  run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "launch", "similarity.py"),
                                   f"--model={directory}", *a], env=child_env(),
                                  capture_output=True, text=True, timeout=120, check=False)
  done = run("--words=king,queen,apple", "--json", f"--output={png}")
  assert done.returncode == 0, done.stderr
  out = json.loads(done.stdout)
  want = similarity.word_vectors(convert.from_pretrained(directory), ["king", "queen", "apple"])
  assert out["labels"] == ["king", "queen", "apple"]
  np.testing.assert_allclose(out["matrix"], similarity.cosine_matrix(want.vectors), atol=1e-6)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"fine\n\xff bad\n")
  done = run(f"--sentences={bad}", f"--output={tmp_path / 'x.png'}")
  assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
      f"error: {bad}:2: not UTF-8"), done.stderr
  assert not (tmp_path / "x.png").exists()
