"""The attention viewer against transformers' output_attentions on the same checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert_jax import model as model_lib
from bert_jax.errors import UserError
from bert_jax.formats import convert
from bert_jax.inference import attention
from bert_jax.inference import attention_render

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import ROOT, child_env  # pylint: disable=g-import-not-at-top,wrong-import-position

TEXT = "The bank of the river was flooded."
PAIR = "the city is paris"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  root = tmp_path_factory.mktemp("viewer")
  model = hf_fixtures.make_model("BertForPreTraining", seed=7)
  directory = hf_fixtures.save_hf_dir(model, str(root / "hf"))
  exported = str(root / "bert_jax")
  convert.convert(directory, exported, "bert_jax")
  eager = transformers.BertModel.from_pretrained(directory, attn_implementation="eager").eval()
  return eager, directory, exported, transformers.BertTokenizer(os.path.join(directory,
                                                                            "vocab.txt"))


def _torch_attentions(hf, text, pair=None):
  eager, _, _, tok = hf
  enc = tok(text, pair, return_tensors="pt")
  with torch.no_grad():
    out = eager(**enc, output_attentions=True)
  tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
  return tokens, np.stack([a[0].numpy() for a in out.attentions])  # [N, H, L, L]


@pytest.mark.parametrize("which,pair", [("hf", None), ("hf", PAIR), ("bert_jax", None)])
def test_attention_equals_transformers(hf, which, pair):
  path = hf[1] if which == "hf" else hf[2]
  want_tokens, want = _torch_attentions(hf, TEXT, pair)
  att = attention.attention(convert.from_pretrained(path), TEXT, pair)
  document = attention.to_json(att)
  assert document["tokens"] == want_tokens
  np.testing.assert_allclose(np.asarray(document["attention"]), want, atol=1e-5, rtol=0)
  assert document["layers"] == [0, 1] and document["heads"] == [0, 1, 2, 3]
  assert not att.truncated


def test_capturing_changes_nothing_else(hf):
  """The sown probabilities come only when asked for; the outputs are the same either way."""
  pre = convert.from_pretrained(hf[1])
  module = model_lib.BertModel(pre.config.replace(attention_impl="xla"), add_pooling_layer=False)
  params = {"params": {k: v for k, v in pre.params["bert"].items() if k != "pooler"}}
  ids = np.asarray([pre.tokenizer.encode(TEXT)["input_ids"]], np.int32)
  plain = module.apply(params, ids)
  captured, state = module.apply(params, ids, mutable=["intermediates"])
  np.testing.assert_array_equal(plain.sequence_output, captured.sequence_output)
  probs = state["intermediates"]["encoder"]["layer_1"]["attention"]["attention_probs"][0]
  assert probs.shape == (1, 4, ids.shape[1], ids.shape[1]) and probs.dtype == np.float32


def _numpy_rollout(want_NxHxLxL):
  """Abnar & Zuidema's recursion written out: A = 0.5 W + 0.5 I (rows of W sum to 1)."""
  length = want_NxHxLxL.shape[-1]
  joint = None
  for layer in want_NxHxLxL.astype(np.float64):
    a = 0.5 * layer.mean(0) + 0.5 * np.eye(length)
    joint = a if joint is None else a @ joint
  return joint


def test_rollout_matches_numpy_from_transformers(hf):
  _, want = _torch_attentions(hf, TEXT, PAIR)
  att = attention.attention(convert.from_pretrained(hf[1]), TEXT, PAIR)
  got = attention.rollout(att.probs_NxHxLxL)
  np.testing.assert_allclose(got, _numpy_rollout(want), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-9)
  assert attention.to_json(att, with_rollout=True)["rollout"] == got.tolist()


def test_layer_and_head_views(hf):
  _, want = _torch_attentions(hf, TEXT)
  att = attention.attention(convert.from_pretrained(hf[1]), TEXT)
  one = attention.to_json(att, attention.parse_layer("-1", 2), attention.parse_head("2", 4))
  assert one["layers"] == [1] and one["heads"] == [2]
  np.testing.assert_allclose(np.asarray(one["attention"]), want[1:, 2:3], atol=1e-5)
  mean = attention.to_json(att, 0, attention.parse_head("mean", 4))
  assert mean["heads"] == "mean"
  np.testing.assert_allclose(np.asarray(mean["attention"])[0, 0], want[0].mean(0), atol=1e-5)
  for spec, count, message in [("2", 2, r"--layer=2 is out of range: the model has 2 layers"),
                               ("-3", 2, r"--layer=-3 is out of range"),
                               ("first", 2, r"--layer='first': expected an integer")]:
    with pytest.raises(UserError, match=message):
      attention.parse_layer(spec, count)
  with pytest.raises(UserError, match=r"--head=4 is out of range: the model has 4 heads"):
    attention.parse_head("4", 4)


def test_word_attention_is_the_mean_of_its_pieces(hf):
  tokens, want = _torch_attentions(hf, TEXT)
  pre = convert.from_pretrained(hf[1])
  att = attention.attention(pre, TEXT)
  word = attention.word_attention(att, "BANK", TEXT)
  pieces = [i for i, t in enumerate(tokens) if t in ("b", "##a", "##n", "##k")][:4]
  assert word.pieces == pieces == [2, 3, 4, 5]
  np.testing.assert_allclose(word.per_layer_NxL, want[:, :, pieces].mean(axis=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(word.overall_L, want[:, :, pieces].mean(axis=(0, 1, 2)), atol=1e-5)
  assert set(word.ranked) == set(range(len(tokens))) - set(pieces) - {0, len(tokens) - 1}
  table = attention_render.word_table(att, word, top_k=3).splitlines()
  assert len(table) == 2 + 3 and table[-1].startswith("overall")
  best = word.ranked[np.argmax(word.overall_L[word.ranked])]
  assert table[-1].split()[1] in (tokens[best], f"{tokens[best]}@{best}")
  # A word in the pair segment is found there; a word in neither is an error naming both.
  pair_att = attention.attention(pre, TEXT, PAIR)
  assert [pair_att.tokens[i] for i in attention.word_attention(pair_att, "paris", TEXT,
                                                               PAIR).pieces] == ["paris"]
  with pytest.raises(UserError, match=r"--word='lake' does not occur in the text 'The bank"):
    attention.word_attention(att, "lake", TEXT)
  with pytest.raises(UserError, match="does not occur"):
    attention.word_attention(att, "ban", TEXT)  # whole words only


def test_html_embeds_the_json_and_survives_markup(tmp_path):
  document = {"tokens": ["[CLS]", "</script>", "a&b", "[SEP]"],
              "attention": np.full((1, 1, 4, 4), 0.25).tolist(), "layers": [0], "heads": [0]}
  path = tmp_path / "v.html"
  attention_render.save_html(str(path), document, "a <title>")
  html = path.read_text(encoding="utf-8")
  assert html.count("</script>") == 2  # the data block's and the code's, nothing from the data
  assert attention_render.read_embedded_json(html) == document
  assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
      '"http://www.w3.org/2000/svg"', "") and "https://" not in html


def _run(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "attention.py"), *args],
                        env=child_env(), capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_launcher_outputs_and_errors(hf, tmp_path):
  _, directory, exported, _ = hf
  done = _run(f"--model={exported}", f"--text={TEXT}", "--json", "--rollout")
  assert done.returncode == 0, done.stderr
  printed = json.loads(done.stdout)
  tokens, want = _torch_attentions(hf, TEXT)
  assert printed["tokens"] == tokens
  np.testing.assert_allclose(np.asarray(printed["attention"]), want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(printed["rollout"]), _numpy_rollout(want), atol=1e-5)
  html = tmp_path / "view.html"
  done = _run(f"--model={exported}", f"--text={TEXT}", f"--output={html}", "--rollout")
  assert done.returncode == 0, done.stderr
  assert attention_render.read_embedded_json(html.read_text(encoding="utf-8")) == printed
  png = tmp_path / "grid.png"
  done = _run(f"--model={directory}", f"--text={TEXT}", f"--output={png}", "--word=river")
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines()[0].startswith("'river' = r ##i ##v ##e ##r")
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  height, width, _ = matplotlib.image.imread(str(png)).shape
  assert width > 1500 and height > 700  # 2 x 4 panels of 22 tokens
  for args, message in [
      (["--layer=2"], "--layer=2 is out of range: the model has 2 layers"),
      (["--head=mean", "--layer=x"], "--layer='x': expected an integer"),
      (["--head=9"], "--head=9 is out of range"),
      (["--word=lake"], "--word='lake' does not occur in the text 'The bank of the river"),
      ([f"--output={tmp_path / 'missing' / 'a.png'}"], "does not exist"),
      ([f"--output={tmp_path / 'a.svg'}"], "*.png"),
  ]:
    done = _run(f"--model={directory}", f"--text={TEXT}", *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith("error:") and message in lines[-1], (
        args, done.stderr)
    assert "Traceback" not in done.stderr
  assert sorted(os.listdir(tmp_path)) == ["grid.png", "view.html"]
