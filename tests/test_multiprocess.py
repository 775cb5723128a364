"""Two processes x 2 CPU devices (jax.distributed on loopback, gloo collectives) train on
real prepared data, through the real input pipeline, exactly like one process with 4
devices: the same global batches, the same loss at every step; a SIGTERM that reaches one
process only stops both at the same step, and the run resumes on 1 process x 4 devices
and ends with the loss of the uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import child_env, prepare_sample_data, process_results, start_processes

STEPS, PREEMPT_AT = 6, 4


@pytest.mark.slow
def test_two_processes_match_one_and_resume_on_one(tmp_path):
  data = prepare_sample_data(tmp_path / "data")
  multi = str(tmp_path / "multi")
  procs = start_processes(__file__, ["preempt", multi, data])
  # One process with 4 devices: an uninterrupted run, then (once the two processes have
  # stopped) it resumes their run from their checkpoint.
  done = tmp_path / "two_processes_done"
  single_proc = subprocess.Popen([sys.executable, __file__, "--child", "whole",
                                  str(tmp_path / "single"), data, multi, str(done)],
                                 env=child_env(4), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
  outs = process_results(procs)
  done.write_text("")
  single, resumed = process_results([single_proc])[0]
  assert outs[0]["process_count"] == 2 and outs[0]["device_count"] == 4
  assert single["process_count"] == 1 and single["device_count"] == 4
  # Each process's devices hold its block of the global batch, and the global batch the two
  # processes assemble from the real pipeline is the one a single process reads.
  assert [o["rows"] for o in outs] == [[0, 4], [4, 8]]
  assert all(o["same_global_batch"] for o in outs)
  # SIGTERM reached process 1 only; both agreed to stop and save at the same step.
  assert [(o["step"], o["preempted"]) for o in outs] == [(PREEMPT_AT, True)] * 2
  assert len(single["losses"]) == STEPS
  np.testing.assert_allclose(outs[0]["losses"], single["losses"][:PREEMPT_AT], rtol=1e-5)
  # Resumed on 1 process x 4 devices from the 2-process checkpoint: the same stream.
  assert (resumed["step"], resumed["preempted"]) == (STEPS, False)
  np.testing.assert_allclose(resumed["losses"], single["losses"], rtol=1e-5)
  # The losses move far more than the tolerance: equal losses mean equal batches.
  assert np.ptp(single["losses"]) > 100 * 1e-5 * np.max(single["losses"])
  files = sorted(f for f in os.listdir(os.path.join(multi, "checkpoints", str(PREEMPT_AT),
                                                    "data_iterator")) if f.startswith("process_"))
  assert files == ["process_0-of-2.json", "process_1-of-2.json"]


def _same_global_batch(c):
  """Whether the global batch assembled from this process's rows equals a 1-process read."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  from bert_jax.data import pretrain_pipeline  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top

  data, _ = pretraining.make_data(c)
  mesh = sharding.make_mesh(c.mesh_shape)
  local = next(data.train)
  data.train.close()
  assembled = multihost_utils.process_allgather(sharding.make_global_batch(local, mesh),
                                                tiled=True)
  whole = next(pretrain_pipeline.make_pretraining_iterator(
      c.train_data, c.train_split, global_batch_size=c.batch_size, seed=c.seed, prefetch=0,
      max_predictions_per_seq=c.max_predictions_per_seq, process_index=0, process_count=1))
  rows = sharding.process_rows(mesh, c.batch_size)
  return (all(np.array_equal(assembled[k], whole[k]) for k in whole),
          [rows[0], rows[-1] + 1])


def _child(kind, workdir, data_dir, *rest):
  import jax  # pylint: disable=g-import-not-at-top
  if kind == "preempt":
    port, process_id = rest
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id))
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from conftest import read_rows, tiny_config  # pylint: disable=g-import-not-at-top

  c = tiny_config(train_data=data_dir, num_train_steps=STEPS, checkpoint_every_steps=100,
                  learning_rate=1e-3, warmup_steps=1, preemption_check_every_steps=1)

  def run(workdir, step_hook=None):
    result = train.train_and_evaluate(c, workdir, step_hook=step_hook)
    return {"process_count": jax.process_count(), "device_count": jax.device_count(),
            "step": result["step"], "preempted": result["preempted"],
            "losses": ([r["loss"] for r in read_rows(workdir) if "loss" in r]
                       if jax.process_index() == 0 else [])}

  if kind == "preempt":
    same, rows = _same_global_batch(c)

    # Only process 1 is told to stop: both must save the same step and stop there.
    def sigterm_on_process_1(step):
      if step == PREEMPT_AT and jax.process_index() == 1:
        os.kill(os.getpid(), signal.SIGTERM)

    out = dict(run(workdir, sigterm_on_process_1), same_global_batch=same, rows=rows)
    print(json.dumps(out))
    jax.distributed.shutdown()
  else:
    whole = run(workdir)
    preempted_dir, done = rest
    deadline = time.time() + 200
    while not os.path.exists(done) and time.time() < deadline:
      time.sleep(0.2)
    print(json.dumps([whole, run(preempted_dir)]))


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
  _child(*sys.argv[2:])
