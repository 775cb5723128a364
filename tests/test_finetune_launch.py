"""launch/finetune.py and launch/predict.py as a user runs them: outputs and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

import hf_fixtures
from bert_jax.data import sample_pairs
from conftest import ROOT, child_env


def _run(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        capture_output=True, text=True, timeout=900, env=child_env(1))


def _one_line_error(result, culprit):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], result.stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("ftl")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=0), str(root / "hf"))
  for split, seed, count in (("train", 7, 40), ("validation", 8, 12)):
    (root / f"{split}.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in sample_pairs.examples(seed, count)))
  return root


@pytest.mark.slow
def test_finetune_then_predict(setup, tmp_path):
  root = setup
  workdir = tmp_path / "run"
  result = _run("finetune.py", f"--config={ROOT}/configs/finetune.py", f"--workdir={workdir}",
                "--config.task=local", f"--config.init_checkpoint={root}/hf",
                f"--config.train_file={root}/train.jsonl",
                f"--config.validation_file={root}/validation.jsonl",
                f"--config.test_file={root}/validation.jsonl", "--config.num_train_steps=4",
                "--config.batch_size=8", "--config.max_seq_length=32")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("eval_accuracy" in r for r in rows)
  tsv = (workdir / "test_predictions.tsv").read_text().splitlines()
  assert tsv[0] == "index\tprediction" and len(tsv) == 13
  # --json: one object per input, in input order, the same predictions as the TSV.
  out = _run("predict.py", f"--model={workdir}/best", f"--input={root}/validation.jsonl",
             "--json")
  assert out.returncode == 0, out.stderr[-2000:]
  got = [json.loads(line) for line in out.stdout.strip().splitlines()]
  assert [g["label"] for g in got] == [line.split("\t")[1] for line in tsv[1:]]
  assert all(abs(sum(g["probabilities"].values()) - 1) < 1e-5 for g in got)
  one = _run("predict.py", f"--model={workdir}/best", "--text=Brom is a baker.",
             "--text_pair=Brom works as a baker.", "--top_k=2")
  assert one.returncode == 0 and len(one.stdout.strip().split("\t")) == 2
  # Bad input: one line each, nothing written.
  _one_line_error(_run("predict.py", f"--model={workdir}/best"), "exactly one of --text")
  latin = tmp_path / "latin.txt"
  latin.write_bytes(b"caf\xe9\n")
  _one_line_error(_run("predict.py", f"--model={workdir}/best", f"--input={latin}",
                       f"--output={tmp_path}/p.tsv"), "latin.txt:1: not UTF-8")
  assert not os.path.exists(tmp_path / "p.tsv")
  _one_line_error(_run("predict.py", f"--model={root}/hf", "--text=x"),
                  "no sequence-classification head")


@pytest.mark.slow
@pytest.mark.parametrize("override,culprit", [
    (["--config.train_file=/no/such.jsonl"], "/no/such.jsonl"),
    (["--config.task=glue/nope"], "glue/nope"),
    (["--config.init_checkpoint="], "config.init_checkpoint is empty"),
    (["--config.no_such_key=1"], "no_such_key"),
])
def test_finetune_errors_are_one_line(setup, tmp_path, override, culprit):
  root = setup
  args = [f"--config={ROOT}/configs/finetune.py", f"--workdir={tmp_path}/w",
          "--config.task=local", f"--config.init_checkpoint={root}/hf",
          f"--config.train_file={root}/train.jsonl"]
  _one_line_error(_run("finetune.py", *args, *override), culprit)
