"""fill-mask and embeddings against transformers on the same Hugging Face dir, and the launchers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert_jax.formats import convert
from bert_jax import inference
from bert_jax.errors import UserError
from bert_jax.inference import runner

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import child_env  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["the capital of france is paris .", "ibm love me bert", "", "one",
         "they read and write text in the language of the world " * 3,
         "Café déjà vu, naïve Über", "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 4,
         "we learn", "paris is the capital city of france and the people love it"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  root = tmp_path_factory.mktemp("inference")
  model = hf_fixtures.make_model("BertForPreTraining", seed=3)
  directory = hf_fixtures.save_hf_dir(model, str(root / "pretraining"))
  encoder_only = hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel"), str(root / "encoder"))
  return model, directory, encoder_only, convert.from_pretrained(directory)


def _torch_hidden(model, pre, texts, max_length):
  enc = pre.tokenizer.encode_batch(texts, max_length=max_length)
  ids, mask = torch.tensor(enc["input_ids"]).long(), torch.tensor(enc["attention_mask"]).long()
  with torch.no_grad():
    out = model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True)
  return out.hidden_states, mask[..., None].float()


def _reference(model, pre, texts, pooling, layer=-1, max_length=64, normalize=False):
  hidden_states, mask = _torch_hidden(model, pre, texts, max_length)
  h = hidden_states[layer]
  if pooling == "cls":
    out = h[:, 0]
  elif pooling == "mean":  # sentence-transformers' Pooling(mean)
    out = (h * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
  else:
    out = h.masked_fill(mask == 0, -1e9).max(1).values
  if normalize:
    out = torch.nn.functional.normalize(out, p=2, dim=1)
  return out.numpy()


@pytest.mark.parametrize("pooling,layer,normalize,pack_length", [
    ("mean", -1, False, 128), ("cls", -1, True, 16), ("max", 1, False, 128), ("mean", 0, True, 0),
    ("mean", 2, False, 16)])
def test_embeddings_match_transformers(hf, pooling, layer, normalize, pack_length, monkeypatch):
  model, _, _, pre = hf
  packs = []
  pack_rows = runner.pack_rows
  monkeypatch.setattr(runner, "pack_rows", lambda *a: packs.append(pack_rows(*a)) or packs[-1])
  # A tiny token budget: many batches in several buckets, last ones padded; order restored.
  # pack_length 16: short texts share packed rows, longer ones take the buckets (both paths).
  got = inference.Embedder(pre, pooling, layer=layer, normalize=normalize, tokens_per_batch=32,
                           compile_cost_tokens=0, pack_length=pack_length).embed(TEXTS)
  want_packed = pooling in ("mean", "cls") and pack_length > 0
  assert bool(packs) == want_packed and all(len(p) < len(TEXTS) for p in packs)
  assert not want_packed or any(len(row) > 1 for row in packs[0])  # rows really shared
  want = _reference(model, pre, TEXTS, pooling, layer, normalize=normalize)
  assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_token_embeddings_and_truncation(hf):
  model, _, _, pre = hf
  got = inference.Embedder(pre, "token", max_seq_length=16).embed(TEXTS)
  hidden_states, mask = _torch_hidden(model, pre, TEXTS, 16)
  enc = pre.tokenizer.encode_batch(TEXTS, max_length=16, return_offsets=True)
  lengths = mask[..., 0].sum(1).int().numpy()
  np.testing.assert_array_equal(got.lengths, lengths)
  assert got.lengths.max() == 16  # long lines truncated
  starts = np.concatenate([[0], np.cumsum(lengths)])
  for i, text in enumerate(TEXTS):
    rows = slice(starts[i], starts[i + 1])
    np.testing.assert_allclose(got.vectors[rows], hidden_states[-1][i, :lengths[i]].numpy(), atol=2e-5)
    np.testing.assert_array_equal(got.offsets[rows], enc["offsets"][i, :lengths[i]])
    np.testing.assert_array_equal(got.token_ids[rows], enc["input_ids"][i, :lengths[i]])
  paris = list(pre.tokenizer.convert_ids_to_tokens(got.token_ids[:lengths[0]])).index("paris")
  start, end = got.offsets[paris]
  assert TEXTS[0][start:end] == "paris"


def test_packed_token_embeddings_match_transformers(hf, monkeypatch):
  model, _, _, pre = hf
  packs = []
  pack_rows = runner.pack_rows
  monkeypatch.setattr(runner, "pack_rows", lambda *a: packs.append(pack_rows(*a)) or packs[-1])
  got = inference.Embedder(pre, "token", tokens_per_batch=32, pack_length=16,
                           normalize=True).embed(TEXTS)
  assert packs and any(len(row) > 1 for row in packs[0])  # short texts shared rows
  hidden_states, mask = _torch_hidden(model, pre, TEXTS, 64)
  lengths = mask[..., 0].sum(1).int().numpy()
  np.testing.assert_array_equal(got.lengths, lengths)
  starts = np.concatenate([[0], np.cumsum(lengths)])
  for i in range(len(TEXTS)):
    want = torch.nn.functional.normalize(hidden_states[-1][i, :lengths[i]], dim=-1).numpy()
    np.testing.assert_allclose(got.vectors[starts[i]:starts[i + 1]], want, atol=2e-5, rtol=0)


def test_plan_batches_cover_each_row_once_with_few_shapes():
  rng = np.random.default_rng(0)
  lengths = list(rng.integers(2, 200, size=1000)) + [3] * 5
  batches = inference.plan_batches(lengths, 256, tokens_per_batch=2048, compile_cost_tokens=4096)
  rows = np.concatenate([r for r, _ in batches])
  assert sorted(rows.tolist()) == list(range(len(lengths)))
  assert all(lengths[r] <= length for rs, length in batches for r in rs)
  by_length = {}
  for r, length in batches:
    by_length.setdefault(length, []).append(len(r))
  assert len(by_length) <= 9, by_length
  for length, sizes in by_length.items():
    assert max(sizes) * length <= 2048 and max(sizes) - min(sizes) <= len(sizes), (length, sizes)
  assert 16 not in by_length  # 5 rows of 3 tokens are not worth a compile of their own
  padded = sum(max(sizes) * len(sizes) * length for length, sizes in by_length.items())
  assert padded < 1.3 * sum(lengths)


def test_a_few_short_texts_are_not_packed(hf, monkeypatch):
  model, _, _, pre = hf
  packs = []
  pack_rows = runner.pack_rows
  monkeypatch.setattr(runner, "pack_rows", lambda *a: packs.append(pack_rows(*a)) or packs[-1])
  got = inference.Embedder(pre, "mean").embed(TEXTS[:2])  # a query: fewer tokens than a batch
  assert not packs
  np.testing.assert_allclose(got, _reference(model, pre, TEXTS[:2], "mean"), atol=2e-5, rtol=0)


def test_pack_rows_fill_rows_without_overflow():
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 65, size=500)
  rows = inference.pack_rows(lengths, 128)
  assert sorted(np.concatenate(rows).tolist()) == list(range(len(lengths)))
  assert all(lengths[r].sum() <= 128 for r in rows)
  # Best-fit decreasing on lengths <= capacity / 2 leaves at most a few rows' worth of holes.
  assert len(rows) <= -(-lengths.sum() // 128) + 2, (len(rows), lengths.sum())


def test_fill_mask_matches_transformers_pipeline(hf):
  _, directory, _, pre = hf
  text = "ibm [MASK] me [MASK] ."
  got = inference.fill_mask(pre, text, top_k=5)
  pipe = transformers.pipeline("fill-mask", model=directory, top_k=5)
  want = pipe(text)
  assert len(got) == len(want) == 2
  for ours, theirs in zip(got, want):
    assert [p["token_id"] for p in ours] == [p["token"] for p in theirs]
    assert [p["token"] for p in ours] == [p["token_str"] for p in theirs]
    np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in theirs], atol=1e-6)


def test_fill_mask_near_the_position_limit(tmp_path):
  """A 35-token text on a model with 40 positions: the length bucket (48) must not pass it."""
  model = hf_fixtures.make_model("BertForMaskedLM", seed=4, max_position_embeddings=40)
  directory = hf_fixtures.save_hf_dir(model, str(tmp_path / "short"))
  text = "the man and the woman read the text of the world in paris . " * 2 + "we love it [MASK] ."
  pre = convert.from_pretrained(directory)
  assert len(pre.tokenizer.encode(text)["input_ids"]) == 35
  got = inference.fill_mask(pre, text, top_k=3)
  want = transformers.pipeline("fill-mask", model=directory, top_k=3)(text)
  assert [p["token_id"] for p in got[0]] == [p["token"] for p in want]
  np.testing.assert_allclose([p["score"] for p in got[0]], [p["score"] for p in want], atol=1e-6)


def _run(script, *args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *args],
                        env=child_env(), capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_embed_launcher_mean_normalized(hf, tmp_path):
  model, directory, _, pre = hf
  source = tmp_path / "in.txt"
  source.write_bytes("\r\n".join(TEXTS).encode("utf-8"))  # CRLF, no final newline
  out = tmp_path / "out.npy"
  done = _run("embed.py", f"--model={directory}", f"--input={source}", f"--output={out}",
              "--pooling=mean", "--normalize", "--max_seq_length=32")
  assert done.returncode == 0, done.stderr
  got = np.load(out)
  want = _reference(model, pre, TEXTS, "mean", max_length=32, normalize=True)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
  assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


@pytest.mark.slow
def test_fill_mask_launcher_json(hf):
  _, directory, _, pre = hf
  done = _run("fill_mask.py", f"--model={directory}", "--text=paris is the [MASK] of france.",
              "--top_k=3", "--json")
  assert done.returncode == 0, done.stderr
  lines = done.stdout.strip().splitlines()
  assert len(lines) == 1
  assert json.loads(lines[0]) == inference.fill_mask(pre, "paris is the [MASK] of france.", 3)[0]
  table = _run("fill_mask.py", f"--model={directory}", "--text=paris is the [MASK] of france.")
  assert table.returncode == 0 and "rank" in table.stdout and len(table.stdout.splitlines()) == 8
  assert table.stdout.splitlines()[0] == "text: paris is the [MASK] of france."
  assert "cut" not in table.stderr
  long_text = "the man read the text . " * 12 + "[MASK] ."  # 76 tokens, 64 positions
  done = _run("fill_mask.py", f"--model={directory}", f"--text={long_text}", "--json")
  assert done.returncode == 1 and "no [MASK] token (after truncation)" in done.stderr
  assert "note: the text has 76 tokens; it was cut at the model's limit of 64" in done.stderr


@pytest.mark.slow
def test_launcher_errors(hf, tmp_path):
  _, directory, encoder_only, _ = hf
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"fine line\nsecond \xff\xfe line\n")
  good = tmp_path / "good.txt"
  good.write_text("hello\n")
  cases = [
      ("embed.py", [f"--model={directory}", f"--input={bad}", f"--output={tmp_path / 'o.npy'}"],
       f"{bad}:2: not UTF-8"),
      ("embed.py", [f"--model={directory}", f"--input={good}", f"--output={tmp_path / 'o.npy'}",
                    "--max_seq_length=65"], "exceeds the model's position table"),
      ("embed.py", [f"--model={tmp_path / 'nope'}", f"--input={good}",
                    f"--output={tmp_path / 'o.npy'}"], "nope"),
      ("embed.py", [f"--model={directory}", f"--input={good}", f"--output={tmp_path / 'o.npy'}",
                    "--pooling=token"], "*.npz"),
      # The output is checked before the model (here: missing) is even looked at.
      ("embed.py", [f"--model={tmp_path / 'nope'}", f"--input={good}", "--output=/sys/o.npy"],
       "--output=/sys/o.npy: cannot write in /sys"),
      ("embed.py", [f"--model={tmp_path / 'nope'}", f"--input={good}",
                    f"--output={tmp_path / 'no_dir' / 'o.npy'}"], "no_dir does not exist"),
      ("fill_mask.py", [f"--model={directory}", "--text=no mask here"], "no [MASK] token"),
      ("fill_mask.py", [f"--model={encoder_only}", "--text=a [MASK]"], "no masked-LM head"),
  ]
  for script, args, message in cases:
    done = _run(script, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (script, args, done.stderr)
    assert lines and lines[-1].startswith("error:") and message in lines[-1], (message, done.stderr)
    assert "Traceback" not in done.stderr
  assert not (tmp_path / "o.npy").exists()


def test_layer_out_of_range(hf):
  with pytest.raises(UserError, match="--layer=3"):
    inference.Embedder(hf[3], "mean", layer=3)
