"""Fine-tuning evaluation is one exact pass, the same on 1 or 8 devices and 1 or 2 processes.

The learning rate is 0, so every run evaluates the same (seeded) model; 21 validation rows in
eval batches of 16 leave a padded last batch whose padding rows must weigh nothing. The
training stream's batches are checked to be the same global batches too (equal train losses),
also when 4 devices accumulate 2 packed micro-batches per update.
"""

import json
import os
import sys

import pytest

import hf_fixtures
from bert_jax.data import sample_pairs
from conftest import process_results, read_rows, run_child, start_processes


@pytest.mark.slow
def test_eval_is_identical_on_devices_and_processes(tmp_path):
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=0), str(tmp_path / "hf"))
  for split, seed, count in (("train", 7, 40), ("validation", 8, 21)):
    (tmp_path / f"{split}.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in sample_pairs.examples(seed, count)))
  args = [str(tmp_path / "hf"), str(tmp_path / "train.jsonl"), str(tmp_path / "validation.jsonl")]
  one = run_child(__file__, [str(tmp_path / "one"), *args], devices=1)
  eight = run_child(__file__, [str(tmp_path / "eight"), *args], devices=8)
  two = process_results(start_processes(__file__, [str(tmp_path / "two"), *args, "1"]))[0]
  accumulated = run_child(__file__, [str(tmp_path / "accum"), *args, "2"], devices=4)
  assert one["eval"]["eval_accuracy"] * 21 == round(one["eval"]["eval_accuracy"] * 21)
  for other in (eight, two, accumulated):
    assert other["devices"] in (8, 4)
    assert other["eval"]["eval_accuracy"] == one["eval"]["eval_accuracy"]
    assert other["eval"]["eval_mcc"] == pytest.approx(one["eval"]["eval_mcc"], abs=1e-12)
    assert other["eval"]["eval_loss"] == pytest.approx(one["eval"]["eval_loss"], rel=1e-6)
    assert other["losses"] == pytest.approx(one["losses"], rel=1e-6)


def _child(workdir, hf_dir, train_file, validation_file, grad_accum_steps="1", port=None,
           process_id=None):
  import jax  # pylint: disable=g-import-not-at-top
  if port is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id))
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from test_finetune import finetune_config  # pylint: disable=g-import-not-at-top

  c = finetune_config(init_checkpoint=hf_dir, train_file=train_file,
                      validation_file=validation_file, learning_rate=0.0, num_train_steps=3,
                      eval_every_steps=3, checkpoint_every_steps=3, mesh_shape=(-1, 1, 1),
                      grad_accum_steps=int(grad_accum_steps))
  c.model.hidden_dropout_rate = 0.0
  c.model.attention_dropout_rate = 0.0
  train.train_and_evaluate(c, workdir)
  rows = read_rows(workdir) if jax.process_index() == 0 else []
  if port is not None:  # both processes print the same, process 0's rows
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("rows")
    rows = read_rows(workdir)
  print(json.dumps({"devices": jax.device_count(),
                    "eval": [r for r in rows if "eval_accuracy" in r][-1],
                    "losses": [r["loss"] for r in rows if "loss" in r]}))


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  _child(*sys.argv[2:])
