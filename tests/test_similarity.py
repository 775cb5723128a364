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


@pytest.mark.parametrize("n,label", [(3, "bank (He sat by the bank of the…)"),
                                     (12, "sentence {i} of a long enough file"),
                                     (15, "s{i}"), (40, "a rather long sentence number {i}")])
def test_heatmap_matrix_fills_the_figure_and_no_text_is_cut_or_overlaps(n, label):
  labels = [label.format(i=i) for i in range(n)]
  matrix = similarity.cosine_matrix(np.random.default_rng(n).normal(size=(n, 8)))
  title = "cosine similarity, mean-pooled sentence vectors of a file with a long name"
  fig = similarity.draw_heatmap(labels, matrix, title)
  renderer = fig.canvas.get_renderer()
  page = fig.bbox
  ax = fig.axes[0]
  box = ax.get_window_extent(renderer)
  assert box.width * box.height >= 0.3 * page.width * page.height  # the matrix is the figure
  texts = [fig._suptitle] + ax.get_xticklabels() + ax.get_yticklabels() + fig.axes[1].texts  # pylint: disable=protected-access
  for text in texts + [fig.axes[1].yaxis.label]:
    extent = text.get_window_extent(renderer)
    assert (extent.x0 >= -1 and extent.y0 >= -1 and extent.x1 <= page.width + 1
            and extent.y1 <= page.height + 1), (text.get_text(), extent, page)
  cells = ax.texts
  assert len(cells) == (n * n if n <= 15 else 0)
  cell_width = box.width / n
  for text in cells:
    assert text.get_window_extent(renderer).width < cell_width, text.get_text()


def _hf_hidden_states(model, directory, sentence, word, layer):
  tok = transformers.BertTokenizerFast(os.path.join(directory, "vocab.txt"))
  enc = tok(sentence, return_offsets_mapping=True, return_tensors="pt")
  begin = sentence.lower().index(word.lower())
  end = begin + len(word)
  pieces = [t for t, (a, b) in enumerate(enc["offset_mapping"][0].tolist())
            if b > a and a < end and b > begin]
  with torch.no_grad():
    states = model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states[layer]
  return states[0, pieces].mean(0).numpy()


@pytest.mark.parametrize("layer", [-1, 1])
def test_in_context_vectors_match_transformers_hidden_states(hf, layer):
  model, directory, _ = hf
  occurrences = [("He sat by the bank of the river.", "bank"),
                 ("She went to the Bank to deposit money.", "bank"),
                 ("the capital of france is paris .", "capital"),
                 ("They were reading in the city.", "reading")]  # 'reading' = read ##ing
  got = similarity.occurrence_vectors(convert.from_pretrained(directory), occurrences, layer=layer)
  want = np.stack([_hf_hidden_states(model, directory, s, w, layer) for s, w in occurrences])
  np.testing.assert_allclose(got.vectors, want, atol=1e-5, rtol=0)
  assert got.labels[0] == "bank (He sat by the bank of the…)"
  assert any("reading = read ##ing" in n for n in got.notes)
  with pytest.raises(UserError, match="the word 'bank' does not occur in 'A river.'"):
    similarity.occurrence_vectors(convert.from_pretrained(directory), [("A river.", "bank")])
  with pytest.raises(UserError, match="expected SENTENCE::WORD"):
    similarity.parse_in_context("no separator here")
  assert similarity.parse_in_context("a::b::c") == ("a::b", "c")


def test_words_the_vocabulary_cannot_spell_are_left_out(hf):
  _, directory, _ = hf
  pre = convert.from_pretrained(directory)
  got = similarity.word_vectors(pre, ["king", "☃", "queen", "✈"])
  assert got.labels == ["king", "queen"] and got.left_out == ["☃", "✈"]
  assert got.vectors.shape[0] == 2
  with pytest.raises(UserError, match="none of ☃, ✈ is in the model's vocabulary"):
    similarity.word_vectors(pre, ["☃", "✈"])


@pytest.mark.slow
def test_similarity_launcher(hf, tmp_path):
  _, directory, _ = hf
  png = tmp_path / "w.png"
  run = lambda *a, model=directory: subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "similarity.py"), f"--model={model}", *a],
      env=child_env(), capture_output=True, text=True, timeout=120, check=False)
  done = run("--words=king,queen,apple,☃,✈", "--json", f"--output={png}")
  assert done.returncode == 0, done.stderr
  out = json.loads(done.stdout)
  want = similarity.word_vectors(convert.from_pretrained(directory), ["king", "queen", "apple"])
  assert out["labels"] == ["king", "queen", "apple"]
  np.testing.assert_allclose(out["matrix"], similarity.cosine_matrix(want.vectors), atol=1e-6)
  assert all(x == round(x, 6) for row in out["matrix"] for x in row)
  assert "note: left out ☃, ✈: not in the model's vocabulary" in done.stderr
  assert "apple = a ##p ##p ##l ##e" in done.stderr
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = run("--words=king,apple")
  assert table.returncode == 0 and "##p" not in table.stdout and "##p" in table.stderr
  done = run("--in_context=He sat by the bank of the river.::bank",
             "--in_context=She went to the bank to deposit money.::bank", "--json")
  assert done.returncode == 0, done.stderr
  out = json.loads(done.stdout)
  assert out["labels"][1] == "bank (She went to the bank to…)" and len(out["matrix"]) == 2
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"fine\n\xff bad\n")
  cases = [
      ([f"--sentences={bad}", f"--output={tmp_path / 'x.png'}"], f"error: {bad}:2: not UTF-8"),
      # The output is checked before the model (here missing) is loaded.
      (["--words=a,b", f"--output={tmp_path / 'no_dir' / 'x.png'}"],
       f"error: --output={tmp_path / 'no_dir' / 'x.png'}: directory"),
      (["--words=a,b", "--output=/sys/x.png"], "error: --output=/sys/x.png: cannot write in /sys"),
      (["--in_context=A river.::bank"], "error: --in_context: the word 'bank' does not occur"),
      (["--words=☃,✈"], "error: --words: none of ☃, ✈ is in the model's vocabulary"),
  ]
  for args, message in cases:
    done = run(*args, model=directory if "bank" in args[0] or "☃" in args[0] or "bad" in args[0]
               else tmp_path / "no_model")
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(message), (
        args, done.stderr)
    assert "Traceback" not in done.stderr
  assert not (tmp_path / "x.png").exists()
