"""Multiple choice: the new head against transformers' BertForMultipleChoice, the JSONL reader,
the task end to end on the project's sample set, and predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from bert_jax import heads
from bert_jax import predict
from bert_jax import train
from bert_jax.data import sample_tasks
from bert_jax.data.readers import multiple_choice as reader
from bert_jax.errors import UserError
from bert_jax.formats import convert

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures
from test_finetune import tiny_finetune_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import read_rows  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUTS = [("the cat sat on a mat.", ["he is a man.", "it was a day.", "she read a text."]),
          ("paris is the capital of france.", ["it is a city.", "bert can learn.",
                                                "the year was new."])]


def _hf_mc_dir(path, seed=7):
  model = hf_fixtures.make_model("BertForMultipleChoice", seed=seed, max_position_embeddings=128)
  hf_fixtures.save_hf_dir(model, str(path))
  return model


def _transformers_probabilities(model, tokenizer_dir, inputs):
  tok = transformers.BertTokenizer.from_pretrained(tokenizer_dir)
  out = []
  for context, choices in inputs:
    enc = tok([context] * len(choices), choices, padding=True, return_tensors="pt")
    with torch.no_grad():
      logits = model(**{k: v[None] for k, v in enc.items()}).logits[0]
    out.append(torch.softmax(logits.double(), -1).numpy())
  return out


def test_hf_multiple_choice_loads_with_its_head_and_matches_transformers(tmp_path):
  model = _hf_mc_dir(tmp_path / "hf")
  pre = convert.from_pretrained(str(tmp_path / "hf"))
  assert pre.heads == ("multiple_choice",)
  got = predict.predict(pre, INPUTS)
  want = _transformers_probabilities(model, str(tmp_path / "hf"), INPUTS)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g["probabilities"], w, atol=1e-5)
    assert g["label"] == int(np.argmax(w))


def test_export_back_to_hf_is_bit_exact(tmp_path):
  _hf_mc_dir(tmp_path / "hf")
  convert.convert(str(tmp_path / "hf"), str(tmp_path / "jax"), "bert_jax")
  convert.convert(str(tmp_path / "jax"), str(tmp_path / "back"), "hf")
  config = json.loads((tmp_path / "back" / "config.json").read_text())
  assert config["architectures"] == ["BertForMultipleChoice"]
  a = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
  b = safetensors.numpy.load_file(str(tmp_path / "back" / "model.safetensors"))
  a = {k: v for k, v in a.items() if not k.endswith("position_ids")}
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  transformers.BertForMultipleChoice.from_pretrained(str(tmp_path / "back"))


def test_reader_errors(tmp_path):
  path = tmp_path / "mc.jsonl"
  path.write_text(json.dumps({"context": "a", "choices": ["x", "y"], "label": 0}) + "\n"
                  + json.dumps({"context": "b", "choices": ["x", "y", "z"], "label": 1}) + "\n")
  with pytest.raises(UserError, match=r"mc.jsonl:2: 3 choices where the file's first example has 2"):
    reader.read_jsonl(str(path))
  path.write_text(json.dumps({"question": "a", "choices": ["x", "y"], "label": 2}) + "\n")
  with pytest.raises(UserError, match=r"mc.jsonl:1: label 2 is not an index into its 2 choices"):
    reader.read_jsonl(str(path))
  path.write_text(json.dumps({"question": "a", "choices": ["x"], "label": 0}) + "\n")
  with pytest.raises(UserError, match="at least two non-empty strings"):
    reader.read_jsonl(str(path))
  path.write_text(json.dumps({"question": "q?", "choices": ["x", "y"]}) + "\n")
  assert reader.read_jsonl(str(path), require_labels=False)[0].context == "q?"


def _config(paths, init, **overrides):
  c = tiny_finetune_config()
  c.update(task="multiple_choice", init_checkpoint=init, train_file=paths["train"],
           validation_file=paths["validation"], test_file="", max_seq_length=128,
           eval_every_steps=4, num_eval_batches=0, num_train_steps=4, learning_rate=1e-4)
  c.update(**overrides)
  return c


def test_finetune_eval_accuracy_and_predict_equal_transformers(tmp_path):
  paths = sample_tasks.write(str(tmp_path / "data"), num_train=24, num_eval=16)["mc"]
  init = str(tmp_path / "hf")
  _hf_mc_dir(init)
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(_config(paths, init), workdir)
  assert result["step"] == 4
  last = [r for r in read_rows(workdir) if "eval_accuracy" in r][-1]

  # The trained weights in transformers: the same accuracy and the same probabilities.
  convert.convert(os.path.join(workdir, "best"), str(tmp_path / "back"), "hf")
  model = transformers.BertForMultipleChoice.from_pretrained(str(tmp_path / "back")).eval()
  examples = reader.read_jsonl(paths["validation"])
  inputs = [(ex.context, list(ex.choices)) for ex in examples]
  want = _transformers_probabilities(model, str(tmp_path / "back"), inputs)
  accuracy = np.mean([np.argmax(w) == ex.label for w, ex in zip(want, examples)])
  assert last["eval_accuracy"] == pytest.approx(accuracy, abs=1e-6)
  pre = convert.from_pretrained(os.path.join(workdir, "best"))
  assert heads.predicting_head(pre.heads) is heads.HEADS["multiple_choice"]
  got = predict.predict(pre, inputs)
  np.testing.assert_allclose([g["probabilities"] for g in got], want, atol=1e-5)
  assert [g["choice"] for g in got] == [c[int(np.argmax(w))] for (_, c), w in zip(inputs, want)]


@pytest.mark.slow
def test_predict_launcher(tmp_path):
  model = _hf_mc_dir(tmp_path / "hf")
  run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "launch", "predict.py"),  # pylint: disable=g-long-lambda
                                   f"--model={tmp_path / 'hf'}", *a], capture_output=True,
                                  text=True, timeout=900)
  context, choices = INPUTS[0]
  one = run(f"--text={context}", f"--choices={','.join(choices)}", "--json")
  assert one.returncode == 0, one.stderr[-2000:]
  got = json.loads(one.stdout.strip().splitlines()[-1])
  want = _transformers_probabilities(model, str(tmp_path / "hf"), [INPUTS[0]])[0]
  assert got["label"] == int(np.argmax(want)) and got["choice"] == choices[got["label"]]
  np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
  path = tmp_path / "in.jsonl"
  path.write_text("".join(json.dumps({"context": c, "choices": ch}) + "\n" for c, ch in INPUTS))
  many = run(f"--input={path}", "--json")
  assert many.returncode == 0, many.stderr[-2000:]
  assert len(many.stdout.strip().splitlines()) == 2
  bad = run(f"--text={context}", "--choices=only")
  assert bad.returncode == 1 and "at least two non-empty choices" in bad.stderr
  assert "Traceback" not in bad.stderr
