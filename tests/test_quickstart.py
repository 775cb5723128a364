"""The README's main job runs end to end: vocab -> data -> pretrain -> fill-mask.

Shortened to a few steps (the full run's accuracy is stated in configs/tiny.py and
measured by running the script); what this pins is that the chain of user-facing
commands fits together on the shipped corpus and the trained workdir is a model path.
"""

import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_script_runs_the_whole_chain(tmp_path):
  workdir = tmp_path / "qs"
  r = subprocess.run(
      ["bash", os.path.join(ROOT, "launch", "quickstart.sh"), str(workdir),
       "--config.num_train_steps=12", "--config.eval_every_steps=12",
       "--config.checkpoint_every_steps=12", "--config.log_every_steps=6",
       "--config.batch_size=16"],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, FINETUNE_ARGS="--config.num_train_steps=6 --config.batch_size=16 "
               "--config.eval_every_steps=6 --config.checkpoint_every_steps=6"))
  assert r.returncode == 0, r.stderr[-3000:]
  meta = json.loads((workdir / "data" / "meta.json").read_text())
  assert meta["max_seq_length"] == 64 and meta["mode"] == "nsp"
  rows = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows if "loss" in row] == [6, 12]
  evals = [row for row in rows if "eval_mlm_accuracy" in row]
  assert evals and 0.0 <= evals[-1]["eval_mlm_accuracy"] <= 1.0
  assert "held-out at step 12: MLM accuracy" in r.stdout
  # Three fill-mask tables, each with three ranked rows of real vocabulary tokens.
  assert r.stdout.count("[MASK] 1 of 1") == 3
  vocab = set((workdir / "vocab" / "vocab.txt").read_text().split("\n"))
  ranked = [line.split() for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
  assert len(ranked) == 9 and all(row[1] in vocab for row in ranked)
  # Fine-tuning on the sample pairs: evaluated, best model exported, test file predicted, and
  # the predict line ranks the three labels.
  best = json.loads((workdir / "ft" / "best" / "best.json").read_text())
  assert best["step"] == 6 and best["metric"] == "eval_accuracy"
  predictions = (workdir / "ft" / "test_predictions.tsv").read_text().splitlines()
  assert predictions[0] == "index\tprediction" and len(predictions) == 601
  last = r.stdout.strip().splitlines()[-1].split("\t")
  assert sorted(cell.split()[0] for cell in last) == ["contradiction", "entailment", "neutral"]
