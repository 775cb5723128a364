"""Checkpoints: bit-identical resume after SIGTERM, half-written saves, mesh changes."""

import json
import os
import shutil
import signal
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from bert_jax import checkpoint as ckpt_lib
from bert_jax.formats import model_dir
from bert_jax.data import synthetic
from bert_jax import train
from bert_jax.errors import UserError
from conftest import read_rows, run_child, tiny_config


def _params(workdir, step):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "params"))


def _leaves_equal(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_then_resume_is_bit_identical(tmp_path):
  # Dropout on: the resumed run must also continue the rng stream exactly.
  c = tiny_config(num_train_steps=6, checkpoint_every_steps=4)
  c.model.hidden_dropout_rate = 0.1
  whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
  train.train_and_evaluate(c, whole, data=synthetic.synthetic_data(c))

  def sigterm_at_3(step):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  first = train.train_and_evaluate(c, cut, data=synthetic.synthetic_data(c), step_hook=sigterm_at_3)
  assert first["preempted"] and first["step"] == 3
  assert sorted(os.listdir(os.path.join(cut, "checkpoints"))) == ["3"]
  state = json.loads((tmp_path / "cut" / "checkpoints" / "3" / "data_iterator" /
                      "process_0-of-1.json").read_text())
  assert state == {"index": 3}
  # Rows logged after the checkpoint by a run killed harder (and a torn last line) are dropped
  # on resume, so metrics.jsonl tells one history.
  with open(os.path.join(cut, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "loss": 123.0}\n{"step": 6, "lo')
  second = train.train_and_evaluate(c, cut, data=synthetic.synthetic_data(c))
  assert not second["preempted"] and second["step"] == 6
  _leaves_equal(_params(whole, 6), _params(cut, 6))
  rows_whole = {r["step"]: r["loss"] for r in read_rows(whole)}
  rows_cut = {r["step"]: r["loss"] for r in read_rows(cut)}
  assert rows_cut == rows_whole  # every step's loss, bit for bit
  # The workdir is a model dir too.
  meta = json.loads((tmp_path / "cut" / model_dir.CONFIG_FILE).read_text())
  assert meta["heads"] == ["mlm", "nsp"]


def test_half_written_checkpoint_is_never_restored(tmp_path):
  c = tiny_config(num_train_steps=2, checkpoint_every_steps=2)
  wd = str(tmp_path)
  train.train_and_evaluate(c, wd, data=synthetic.synthetic_data(c))
  # A save of step 4 killed halfway: Orbax's temporary directory, never renamed.
  tmp = os.path.join(wd, "checkpoints", "4.orbax-checkpoint-tmp-1234567")
  os.makedirs(os.path.join(tmp, "params"))
  with open(os.path.join(tmp, "params", "garbage"), "w") as f:
    f.write("half")
  assert ckpt_lib.Checkpointer(wd).latest_step() == 2
  result = train.train_and_evaluate(c, wd, data=synthetic.synthetic_data(c))
  assert result["step"] == 2 and not result["preempted"]  # restored 2, nothing left to do
  assert "4" not in os.listdir(os.path.join(wd, "checkpoints"))


def test_resume_with_a_changed_model_size_names_the_setting(tmp_path):
  c = tiny_config(num_train_steps=2, checkpoint_every_steps=2)
  wd = str(tmp_path)
  train.train_and_evaluate(c, wd, data=synthetic.synthetic_data(c))
  bigger = tiny_config(num_train_steps=4, checkpoint_every_steps=2, **{"model.hidden_size": 64})
  with pytest.raises(UserError, match=r"workdir .* hidden_size=32, the config asks for 64"):
    train.train_and_evaluate(bigger, wd, data=synthetic.synthetic_data(bigger))
  # Without the config file, the checkpoint's own shapes name the first differing tensor.
  os.remove(os.path.join(wd, model_dir.CONFIG_FILE))
  with pytest.raises(UserError, match=(r"params bert/\S+ of shape \([^)]*32[^)]*\), "
                                      r"the config's model has \([^)]*64")):
    train.train_and_evaluate(bigger, wd, data=synthetic.synthetic_data(bigger))
  assert os.listdir(os.path.join(wd, "checkpoints")) == ["2"]  # nothing was overwritten


@pytest.mark.slow
def test_restore_onto_a_different_mesh(tmp_path):
  out = run_child(__file__, [str(tmp_path)])
  np.testing.assert_allclose(out["resumed"], out["whole"], rtol=5e-5)


def _child(workdir):
  """Steps 1-2 on mesh (8,1,1); step 3 resumed on (2,2,2) and on (1,8,1) vs. uninterrupted.

  Same configs as test_sharding's child, so their compiled steps come from the cache.
  """
  whole = os.path.join(workdir, "whole")
  c = tiny_config(num_train_steps=3, checkpoint_every_steps=2, mesh_shape=(8, 1, 1),
                  learning_rate=1e-4)
  train.train_and_evaluate(c, whole, data=synthetic.synthetic_data(c))
  losses_whole = [r["loss"] for r in read_rows(whole) if "loss" in r]
  resumed = []
  for mesh_shape in [(2, 2, 2), (1, 8, 1)]:
    wd = os.path.join(workdir, str(mesh_shape))
    os.makedirs(os.path.join(wd, "checkpoints"))
    shutil.copytree(os.path.join(whole, "checkpoints", "2"), os.path.join(wd, "checkpoints", "2"))
    c.mesh_shape = mesh_shape
    c.grad_accum_steps = 2 if mesh_shape == (2, 2, 2) else 1
    train.train_and_evaluate(c, wd, data=synthetic.synthetic_data(c))
    resumed.append([r["loss"] for r in read_rows(wd) if "loss" in r][-1])
  print(json.dumps({"whole": [losses_whole[-1]] * 2, "resumed": resumed}))


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
  _child(sys.argv[2])
