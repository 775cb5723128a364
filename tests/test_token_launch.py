"""launch/finetune.py and launch/predict.py end to end for tagging and QA: what predict prints
equals transformers on the exported Hugging Face dir; bad input is one error line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import transformers

from bert_jax.data.readers import conll
from bert_jax.data import sample_tasks
from conftest import ROOT, child_env, read_rows
import hf_fixtures
import test_span_inference

pytestmark = pytest.mark.slow


def _run(script, *args, timeout=900, devices=1):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        env=child_env(devices), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Sample data and random-weight HF models (large weights: varied predictions at once)."""
  root = tmp_path_factory.mktemp("token_launch")
  paths = sample_tasks.write(str(root / "data"), num_train=48, num_eval=16)
  labels = conll.label_list(conll.read_conll(paths["ner"]["train"]))
  for arch, kwargs in (("BertForTokenClassification", {"id2label": dict(enumerate(labels))}),
                       ("BertForQuestionAnswering", {})):
    hf_fixtures.save_hf_dir(hf_fixtures.make_model(arch, seed=2, max_position_embeddings=128,
                                                   **kwargs), str(root / arch))
  return root, paths


def _finetune(root, arch, name, *extra):
  workdir = str(root / name)
  proc = _run("finetune.py", f"--config={ROOT}/configs/finetune.py", f"--workdir={workdir}",
              f"--config.init_checkpoint={root / arch}", "--config.num_train_steps=4",
              "--config.batch_size=8", "--config.learning_rate=1e-5",
              "--config.eval_every_steps=4", "--config.checkpoint_every_steps=4",
              "--config.export_hf=True", *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_tagging_finetune_and_predict_equal_the_pipeline(setup):
  root, paths = setup
  workdir, _ = _finetune(root, "BertForTokenClassification", "ner", "--config.task=conll",
                         "--config.max_seq_length=64",
                         f"--config.train_file={paths['ner']['train']}",
                         f"--config.validation_file={paths['ner']['validation']}",
                         f"--config.test_file={paths['ner']['test']}")
  last = read_rows(workdir)[-1]
  for key in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "eval_test_f1"):
    assert key in last, key
  with open(os.path.join(workdir, "test_predictions.tsv")) as f:
    lines = f.read().splitlines()
  assert lines[0] == "index\tprediction" and len(lines) == 17
  text = "Hais Deadrend works for Coostor Works in Revuxmere, and keeps a wethowl."
  # Predicted over 2 CPU devices (what the inference launchers make on a 2-core machine).
  proc = _run("predict.py", f"--model={workdir}/best", f"--text={text}", "--json", devices=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ours = json.loads(proc.stdout.strip().splitlines()[-1])["entities"]
  pipe = transformers.pipeline("token-classification", model=f"{workdir}/best_hf",
                               aggregation_strategy="first", device="cpu")
  want = pipe(text)
  assert want and [(e["label"], e["start"], e["end"]) for e in ours] == [
      (w["entity_group"], w["start"], w["end"]) for w in want]
  np.testing.assert_allclose([e["score"] for e in ours], [float(w["score"]) for w in want],
                             atol=1e-5)


def test_qa_finetune_and_predict_equal_the_classic_postprocessing(setup):
  root, paths = setup
  workdir, proc = _finetune(root, "BertForQuestionAnswering", "qa", "--config.task=squad_json",
                            "--config.max_seq_length=64", "--config.qa.doc_stride=16",
                            "--config.qa.max_query_length=8",
                            f"--config.train_file={paths['squad']['train']}",
                            f"--config.validation_file={paths['squad']['validation']}")
  assert "question(s) longer than max_query_length=8 pieces were truncated" in proc.stderr
  last = read_rows(workdir)[-1]
  assert 0.0 <= last["eval_exact_match"] <= 1.0 and 0.0 <= last["eval_f1"] <= 1.0
  # Within the fine-tuning lengths (8 question pieces, one 64-piece window), as transformers sees.
  question, context = "is it the city?", "The woman read the text in Paris, the capital city."
  proc = _run("predict.py", f"--model={workdir}/best", f"--question={question}",
              f"--context={context}", "--top_k=2", "--json", devices=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ours = json.loads(proc.stdout.strip().splitlines()[-1])
  model = transformers.BertForQuestionAnswering.from_pretrained(f"{workdir}/best_hf").eval()
  tok = transformers.BertTokenizerFast.from_pretrained(f"{workdir}/best_hf")
  want = test_span_inference.classic_answers(model, tok, question, context, top_k=2)
  assert [(a["answer"], a["start"], a["end"]) for a in ours["top_k"]] == [
      (w["answer"], w["start"], w["end"]) for w in want]
  assert ours["answer"] == want[0]["answer"]
  np.testing.assert_allclose(ours["score"], want[0]["score"], rtol=1e-4)


def test_bad_inputs_are_one_error_line(setup, tmp_path):
  root, _ = setup
  bad = tmp_path / "bad.conll"
  bad.write_text("Hais B-PER\nlives\n")
  proc = _run("finetune.py", f"--config={ROOT}/configs/finetune.py", f"--workdir={tmp_path}/w",
              "--config.task=conll", f"--config.init_checkpoint={root}/BertForQuestionAnswering",
              f"--config.train_file={bad}")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert lines[-1] == f"error: {bad}:2: no label column in 'lives' (expected a token and its " \
                      "label, separated by whitespace)"
  proc = _run("predict.py", f"--model={root}/BertForQuestionAnswering", "--text=hello")
  assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
      "error: a QA model needs --question and --context")
