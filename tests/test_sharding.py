"""Mesh and logical-axis rules; the same losses on every mesh shape of 8 simulated devices.

The 8-device checks run in a child process (`python tests/test_sharding.py --child DIR`):
XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts, and the
rest of the suite runs on one device.
"""

import json
import os
import sys

import numpy as np
import pytest

from conftest import run_child

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 8, 1)]

def test_resolve_mesh_shape():
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  assert sharding.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert sharding.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  with pytest.raises(sharding.UserError, match="needs 4 devices, found 8"):
    sharding.resolve_mesh_shape((2, 2, 1), 8)
  with pytest.raises(sharding.UserError, match="does not divide"):
    sharding.resolve_mesh_shape((3, -1, 1), 8)
  with pytest.raises(sharding.UserError, match="3 entries"):
    sharding.resolve_mesh_shape((8, 1), 8)


def test_rules_name_unknown_mesh_axes():
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  rules = sharding.normalize_rules([["embed", "fsdp"], ["activation_batch", ["data", "fsdp"]]])
  assert rules == (("embed", "fsdp"), ("activation_batch", ("data", "fsdp")))
  with pytest.raises(sharding.UserError, match="'model'"):
    sharding.normalize_rules([("mlp", "model")])


@pytest.mark.slow
def test_same_losses_on_every_mesh_shape(tmp_path):
  out = run_child(__file__, [str(tmp_path)])
  base = out["(8, 1, 1)"]
  assert len(base) == 4 and all(np.isfinite(base))
  # The check can fail: real updates (warmup starts at lr 0) move the loss >100x the tolerance.
  frozen = out["frozen"]
  assert np.abs(np.asarray(base[2:]) / np.asarray(frozen[2:]) - 1).min() > 100 * 5e-5
  # Different meshes sum in different orders; Adam turns that noise into tiny updates.
  for mesh in MESHES[1:]:
    np.testing.assert_allclose(out[str(mesh)], base, rtol=5e-5, err_msg=str(mesh))
  # Parameters are born sharded as the rules say.
  assert out["specs"]["(1, 8, 1)"]["word_embeddings"] == ["tensor", "fsdp"]
  assert out["shards"]["(1, 8, 1)"] == [4, 2, 16]  # query kernel [E/8, H, D] per device
  assert out["specs"]["(2, 2, 2)"]["query"] == ["fsdp", "tensor", None]
  assert out["shards"]["(2, 2, 2)"] == [16, 1, 16]  # [E/fsdp, H/tensor, D] per device


def _child(workdir):
  import jax  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  from bert_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from conftest import read_rows, tiny_config  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == 8
  out = {"specs": {}, "shards": {}}
  for mesh_shape in MESHES:
    # (2, 2, 2) also accumulates 2 micro-batches: same update as one batch.
    c = tiny_config(num_train_steps=4, checkpoint_every_steps=100, mesh_shape=mesh_shape,
                    grad_accum_steps=2 if mesh_shape == (2, 2, 2) else 1, learning_rate=1e-3,
                    warmup_steps=1)
    wd = os.path.join(workdir, str(mesh_shape))
    train.train_and_evaluate(c, wd, data=synthetic.synthetic_data(c))
    out[str(mesh_shape)] = [r["loss"] for r in read_rows(wd) if "loss" in r]
  c = tiny_config(num_train_steps=4, checkpoint_every_steps=100, mesh_shape=MESHES[0],
                  learning_rate=0.0, warmup_steps=1)
  train.train_and_evaluate(c, os.path.join(workdir, "frozen"), data=synthetic.synthetic_data(c))
  out["frozen"] = [r["loss"] for r in read_rows(os.path.join(workdir, "frozen")) if "loss" in r]
  for mesh_shape in [(1, 8, 1), (2, 2, 2)]:
    # The trainer's own state setup (shardings from the model's logical names and the rules).
    c = tiny_config(mesh_shape=mesh_shape)
    spec = pretraining.spec_of(c, {"vocab_size": 128})
    setup = train._setup(c, heads.for_spec(spec), spec)  # pylint: disable=protected-access
    params = train.fresh_params(setup, jax.random.PRNGKey(0))
    emb = setup.state_sharding.params["bert"]["embeddings"]["word_embeddings"]["embedding"].spec
    q = params["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]
    out["specs"][str(mesh_shape)] = {"word_embeddings": list(emb), "query": list(q.sharding.spec)}
    out["shards"][str(mesh_shape)] = list(q.addressable_shards[0].data.shape)
  print(json.dumps(out))


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
  _child(sys.argv[2])
