"""Model dirs whose tokenizer is only `tokenizer.json`, through every tool that reads one.

A Hugging Face BERT saved today by transformers 5 (`model.save_pretrained` +
`BertTokenizer.save_pretrained`) has no vocab.txt. These tests build such dirs
(tiny random BertForMaskedLM / BertModel) and check fill-mask, embeddings,
conversion both ways, fine-tuning, prediction and data preparation against
transformers on the same dir. A BERT with a byte-level BPE tokenizer (the
ModernBERT kind) goes through fill-mask too.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert_jax import inference
from bert_jax import train
from bert_jax.data import sample_pairs
from bert_jax.data.readers import sequences
from bert_jax.formats import convert
from bert_jax.heads import classifier as classification

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
import test_tokenizer_json  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import ROOT, child_env, load_config, override  # pylint: disable=g-import-not-at-top,wrong-import-position

TEXTS = ["the capital of france is paris .", "ibm love me bert", "one",
         "they read and write text in the language of the world " * 3,
         "Café déjà vu, naïve Über", "we learn", "Paris is the capital city of France"]


def save_json_only_hf_dir(model, directory: str, tokenizer_dir: str) -> str:
  """model.save_pretrained + BertTokenizer.save_pretrained: what transformers 5 writes."""
  model.save_pretrained(directory)
  hf_fixtures.write_vocab(tokenizer_dir)
  transformers.BertTokenizer(os.path.join(tokenizer_dir, "vocab.txt")).save_pretrained(directory)
  assert "vocab.txt" not in os.listdir(directory) and "tokenizer.json" in os.listdir(directory)
  return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("json_models")
  mlm = hf_fixtures.make_model("BertForMaskedLM", seed=3)
  paths = {"mlm": save_json_only_hf_dir(mlm, str(root / "mlm"), str(root / "vocab")),
           "root": root}
  # A BERT whose tokenizer is a ModernBERT-style byte-level BPE.
  bpe = test_tokenizer_json.save_bpe_tokenizer(_corpus(root), str(root / "bpe"), vocab_size=400)
  size = len(transformers.AutoTokenizer.from_pretrained(bpe))
  hf_fixtures.make_model("BertForMaskedLM", seed=5, vocab_size=size).save_pretrained(bpe)
  paths["bpe"] = bpe
  return mlm, paths


def _corpus(root) -> str:
  path = root / "corpus.txt"
  path.write_text("\n".join(TEXTS * 5 + test_tokenizer_json.LINES) + "\n", encoding="utf-8")
  return str(path)


def _assert_fill_mask_equals_pipeline(directory, text, compare_tokens=True):
  pre = convert.from_pretrained(directory)
  assert pre.tokenizer.kind == "tokenizer_json"
  got = inference.fill_mask(pre, text, top_k=5)
  want = transformers.pipeline("fill-mask", model=directory, top_k=5, device="cpu")(text)
  want = want if isinstance(want[0], list) else [want]
  assert len(got) == len(want) == text.count("[MASK]")
  for ours, theirs in zip(got, want):
    assert [p["token_id"] for p in ours] == [p["token"] for p in theirs]
    if compare_tokens:
      assert [p["token"] for p in ours] == [p["token_str"] for p in theirs]
    np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in theirs], atol=1e-6)
  return got


def test_fill_mask_matches_the_pipeline(dirs):
  _, paths = dirs
  _assert_fill_mask_equals_pipeline(paths["mlm"], "ibm [MASK] me [MASK] .")
  _assert_fill_mask_equals_pipeline(paths["mlm"], "Paris is the [MASK] of France.")


def test_fill_mask_with_a_byte_level_bpe_tokenizer(dirs):
  _, paths = dirs
  # token_str is decode([id]) (' capital'); ours is the vocabulary's token ('Ġcapital').
  got = _assert_fill_mask_equals_pipeline(paths["bpe"], "Paris is the [MASK] of France.",
                                          compare_tokens=False)
  pre = convert.from_pretrained(paths["bpe"])
  assert [p["token"] for p in got[0]] == pre.tokenizer.convert_ids_to_tokens(
      [p["token_id"] for p in got[0]])


def test_embeddings_match_transformers(dirs):
  model, paths = dirs
  pre = convert.from_pretrained(paths["mlm"])
  got = inference.Embedder(pre, "mean").embed(TEXTS)
  hf = transformers.AutoTokenizer.from_pretrained(paths["mlm"])
  enc = hf(TEXTS, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model.bert(**enc).last_hidden_state
  mask = enc["attention_mask"][..., None].float()
  want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_convert_round_trips_the_tokenizer(dirs):
  _, paths = dirs
  root = paths["root"]
  for name in ("mlm", "bpe"):
    ours = str(root / f"{name}_bert_jax")
    back = str(root / f"{name}_hf")
    convert.convert(paths[name], ours, "bert_jax")
    assert sorted(os.listdir(os.path.join(ours, "tokenizer"))) == ["tokenizer.json",
                                                                   "tokenizer_config.json"]
    convert.convert(ours, back, "hf")
    original = transformers.AutoTokenizer.from_pretrained(paths[name])
    written = transformers.AutoTokenizer.from_pretrained(back)
    reread = convert.from_pretrained(ours).tokenizer
    for a, b in zip(TEXTS, TEXTS[1:] + TEXTS[:1]):
      want = original(a, b, truncation=True, max_length=16)["input_ids"]
      assert written(a, b, truncation=True, max_length=16)["input_ids"] == want
      assert reread.encode(a, b, max_length=16)["input_ids"] == want
    _assert_fill_mask_equals_pipeline(back, "Paris is the [MASK] of France.", name == "mlm")


# --------------------------------------------------------------------------- end to end


def _run(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        env=child_env(), capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_fill_mask_launcher_and_a_corrupt_tokenizer_json(dirs, tmp_path):
  _, paths = dirs
  text = "Paris is the [MASK] of France."
  done = _run("fill_mask.py", f"--model={paths['mlm']}", f"--text={text}", "--top_k=3", "--json")
  assert done.returncode == 0, done.stderr
  pre = convert.from_pretrained(paths["mlm"])
  assert json.loads(done.stdout.strip()) == inference.fill_mask(pre, text, 3)[0]
  broken = tmp_path / "broken"
  subprocess.run(["cp", "-r", paths["mlm"], str(broken)], check=True)
  (broken / "tokenizer.json").write_text('{"version": "1.0", "model": {', encoding="utf-8")
  done = _run("fill_mask.py", f"--model={broken}", f"--text={text}")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert f"{broken / 'tokenizer.json'} is not valid JSON" in done.stderr
  assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_finetune_from_a_tokenizer_json_dir_exports_and_predicts(dirs, tmp_path):
  """Fine-tune from the transformers 5 dir; best/ and best_hf/ carry the tokenizer.json."""
  _, paths = dirs
  base = save_json_only_hf_dir(hf_fixtures.make_model("BertModel", seed=0), str(tmp_path / "hf"),
                               str(tmp_path / "vocab"))
  files = {}
  for split, count in (("train", 40), ("validation", 21)):
    path = tmp_path / f"{split}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in sample_pairs.examples(
        7 if split == "train" else 8, count)))
    files[split] = str(path)
  config = load_config("finetune.py")
  config.update(task="local", batch_size=8, eval_batch_size=16, max_seq_length=32,
                num_train_steps=4, warmup_steps=1, learning_rate=1e-3, log_every_steps=1,
                eval_every_steps=4, checkpoint_every_steps=4, schedule="constant")
  config = override(config, init_checkpoint=base, train_file=files["train"],
                    validation_file=files["validation"], export_hf=True)
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  assert "tokenizer.json" in os.listdir(workdir / "best" / "tokenizer")
  assert "tokenizer.json" in os.listdir(workdir / "best_hf")
  examples = sequences.read_local(files["validation"])
  best = convert.from_pretrained(str(workdir / "best"))
  assert best.tokenizer.kind == "tokenizer_json"
  ours = classification.SequencePredictor(best, max_seq_length=32).predict(examples.texts,
                                                                           examples.pairs)
  pipe = transformers.pipeline("text-classification", model=str(workdir / "best_hf"), top_k=None,
                               device="cpu")
  theirs = pipe([{"text": t, "text_pair": p} for t, p in zip(examples.texts, examples.pairs)],
                truncation=True, max_length=32)
  for o, t in zip(ours, theirs):
    assert o["label"] == t[0]["label"]
    for entry in t:
      assert o["probabilities"][entry["label"]] == pytest.approx(entry["score"], abs=1e-5)


@pytest.mark.slow
def test_prepare_data_with_a_tokenizer_json_dir(dirs, tmp_path):
  _, paths = dirs
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("".join(f"{t}\n{t[::-1]}\n\n" for t in TEXTS * 4), encoding="utf-8")
  out = tmp_path / "prepared"
  done = _run("prepare_data.py", f"--input={corpus}", f"--vocab={paths['bpe']}", f"--output={out}",
              "--max_seq_length=32")
  assert done.returncode == 0, done.stderr
  meta = json.loads((out / "meta.json").read_text())
  hf = transformers.AutoTokenizer.from_pretrained(paths["bpe"])
  assert meta["tokenizer_kind"] == "tokenizer_json" and meta["vocab_size"] == len(hf)
  assert meta["special_ids"]["mask"] == hf.mask_token_id
  assert meta["special_ids"]["cls"] == hf.cls_token_id
  assert sorted(os.listdir(out / "tokenizer")) == ["tokenizer.json", "tokenizer_config.json"]
