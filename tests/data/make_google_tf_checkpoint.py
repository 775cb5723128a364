r"""Writes tests/data/google_bert_tf/: a tiny BERT in the original Google release layout,
its checkpoint written by TensorFlow itself (tf.compat.v1.train.Saver, as run_pretraining.py).

Why a committed fixture: the reader in bert_jax/formats/tf_checkpoint.py parses TF's checkpoint
format without TensorFlow, and CI has no TensorFlow; this file is the proof that it reads
what TensorFlow really writes. The weights are those of `hf_fixtures.make_model(
'BertForPreTraining', seed=SEED)` under Google's variable names, plus the optimizer slots
and global_step a pretraining checkpoint carries, so the test can rebuild the expected
tensors with torch and compare bit for bit.

Two steps, because TensorFlow and torch live in different environments here:

  python tests/data/make_google_tf_checkpoint.py export /tmp/google_vars.npz
  python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
  /tmp/tfenv/bin/python tests/data/make_google_tf_checkpoint.py write /tmp/google_vars.npz
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "google_bert_tf")
SEED = 7
# Adam slots written next to these variables, as in run_pretraining.py checkpoints.
SLOTTED = ("bert/embeddings/word_embeddings", "cls/predictions/output_bias")


def export(npz_path: str) -> None:
  """Torch side: the expected tensors under Google's names, bert_config.json, vocab.txt."""
  sys.path.insert(0, os.path.dirname(HERE))
  import hf_fixtures  # pylint: disable=g-import-not-at-top
  model = hf_fixtures.make_model("BertForPreTraining", seed=SEED)
  tensors = hf_fixtures.hf_to_google_vars(model)
  for name in SLOTTED:
    tensors[name + "/adam_m"] = np.full_like(tensors[name], 0.5)
    tensors[name + "/adam_v"] = np.full_like(tensors[name], 0.25)
  np.savez(npz_path, **tensors)
  directory = hf_fixtures.save_google_dir(model, OUT + ".tmp")  # config + vocab (+ our writer)
  os.makedirs(OUT, exist_ok=True)
  for name in ("bert_config.json", "vocab.txt"):
    os.replace(os.path.join(directory, name), os.path.join(OUT, name))
  for name in os.listdir(directory):
    os.remove(os.path.join(directory, name))
  os.rmdir(directory)


def write(npz_path: str) -> None:
  """TensorFlow side: one tf.compat.v1 variable per tensor, saved by Saver (V2 format)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.compat.v1.disable_eager_execution()
  tensors = dict(np.load(npz_path))
  graph = tf.Graph()
  with graph.as_default():
    variables = [tf.compat.v1.get_variable(name, initializer=tf.constant(value))
                 for name, value in sorted(tensors.items())]
    saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V2)
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, os.path.join(OUT, "bert_model.ckpt"), write_meta_graph=False,
                 write_state=False)
  with open(os.path.join(OUT, "written_by.json"), "w") as f:
    json.dump({"tensorflow": tf.__version__, "seed": SEED, "tensors": len(tensors)}, f)
    f.write("\n")


if __name__ == "__main__":
  {"export": export, "write": write}[sys.argv[1]](sys.argv[2])
