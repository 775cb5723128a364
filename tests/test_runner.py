"""The inference runner against transformers' BERT run one text at a time, and its contract."""

import os
import sys

import jax
import numpy as np
import pytest
import torch

from bert_jax import model as model_lib
from bert_jax.data import buckets
from bert_jax.data import finetune_pipeline
from bert_jax.formats import convert
from bert_jax.inference import runner

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position

TEXTS = ["the capital of france is paris .", "ibm love me bert", "", "one",
         "they read and write text in the language of the world " * 3, "we learn",
         "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 2, "paris", "the city"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  model = hf_fixtures.make_model("BertModel", seed=11)
  directory = hf_fixtures.save_hf_dir(model, str(tmp_path_factory.mktemp("runner") / "hf"))
  return model, convert.from_pretrained(directory)


def _encoder(pre):
  module = model_lib.BertModel(pre.config, add_pooling_layer=False)
  params = {k: v for k, v in pre.params["bert"].items() if k != "pooler"}
  return module, params


def _forward(module):
  @jax.jit
  def forward(params, batch):
    out = module.apply({"params": params}, batch["input_ids"], batch["token_type_ids"], None,
                       batch["position_ids"], batch["packing_ids"])
    hidden = out.sequence_output
    return {"tokens": hidden,
            "segments": jax.numpy.take_along_axis(hidden, batch["starts"][:, :, None], axis=1)}
  return forward


def test_packing_ids_path_equals_attention_mask_path(hf):
  """A padded batch: packing_ids (one segment a row) and attention_mask give the same states."""
  _, pre = hf
  module, params = _encoder(pre)
  enc = pre.tokenizer.encode_batch(TEXTS, max_length=40, padding="max_length")
  ids, types, mask = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
  with_mask = module.apply({"params": params}, ids, types, mask).sequence_output
  with_packing = module.apply({"params": params}, ids, types, None,
                              np.broadcast_to(np.arange(40), ids.shape), mask).sequence_output
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(with_packing)[real], np.asarray(with_mask)[real],
                             atol=1e-6, rtol=0)


def _torch_alone(model, pre, texts, max_length):
  out = []
  for text in texts:
    ids = pre.tokenizer.encode(text, max_length=max_length)["input_ids"]
    with torch.no_grad():
      out.append(model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy())
  return out


@pytest.mark.parametrize("pack", [True, False])
def test_run_matches_each_text_alone_in_input_order(hf, pack, monkeypatch):
  model, pre = hf
  module, params = _encoder(pre)
  enc = pre.tokenizer.encode_batch(TEXTS, max_length=48, padding="none")
  calls, packs = [], []
  pack_rows = runner.pack_rows
  monkeypatch.setattr(runner, "pack_rows", lambda *a: packs.append(pack_rows(*a)) or packs[-1])
  # A small token budget: several batches in several buckets; short texts share packed rows.
  got = runner.run(_forward(module), params, enc["input_ids"], enc["token_type_ids"],
                   max_length=48, pad_id=pre.tokenizer.pad_id, pack=pack, tokens_per_batch=24,
                   pack_length=32, compile_cost_tokens=0,
                   progress=lambda done, total: calls.append((done, total)))
  assert bool(packs) == pack and (not pack or any(len(row) > 1 for row in packs[0]))
  want = _torch_alone(model, pre, TEXTS, 48)
  assert len(got) == len(TEXTS)
  for ours, theirs in zip(got, want):
    assert ours["tokens"].shape == theirs.shape
    np.testing.assert_allclose(ours["tokens"], theirs, atol=2e-5, rtol=0)
    np.testing.assert_allclose(ours["segments"], theirs[0], atol=2e-5, rtol=0)
  assert calls[-1] == (len(TEXTS), len(TEXTS)) and len(calls) > 2
  assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_batch_is_fetched_after_the_next_is_dispatched(hf):
  _, pre = hf
  events = []

  class Result:
    def __init__(self, number):
      self.number = number

    def __array__(self, dtype=None, copy=None):
      events.append(("fetch", self.number))
      return np.zeros((4, 1, 1), np.float32)

  def forward(params, batch):
    del params
    events.append(("dispatch", len([e for e in events if e[0] == "dispatch"])))
    assert set(batch) == {"input_ids", "token_type_ids", "position_ids", "packing_ids", "starts"}
    return {"segments": Result(events[-1][1])}

  rows = [[2, 5, 3]] * 10
  runner.run(forward, {}, rows, [[0, 0, 0]] * 10, max_length=16, pad_id=0, batch_size=4)
  assert events == [("dispatch", 0), ("dispatch", 1), ("fetch", 0), ("dispatch", 2),
                    ("fetch", 1), ("fetch", 2)]


def test_one_shape_per_bucket_and_packed_rows_layout():
  lengths = np.asarray([3] * 40 + [20] * 7 + [40] * 3)
  batches = runner.plan(lengths, max_length=64, tokens_per_batch=64, pack=True, pack_length=16,
                        compile_cost_tokens=0, row_multiple=2)
  packed = [b for b in batches if b.segments > 1]
  padded = [b for b in batches if b.segments == 1]
  assert {b.length for b in packed} == {16} and all(b.rows % 2 == 0 for b in batches)
  assert sorted(np.concatenate([m for b in batches for m in b.members]).tolist()) == list(range(50))
  for length in {b.length for b in padded}:
    assert length in buckets.buckets_up_to(64)
    assert len({b.rows for b in padded if b.length == length}) == 1
  arrays = runner._assemble(packed[0], [[7] * 3] * 40, [[0] * 3] * 40, lengths, pad_id=0)  # pylint: disable=protected-access
  row = arrays["packing_ids"][0]
  assert row.tolist()[:6] == [1, 1, 1, 2, 2, 2] and arrays["starts"][0, :2].tolist() == [0, 3]
  assert arrays["position_ids"][0, :6].tolist() == [0, 1, 2, 0, 1, 2]


def test_fine_tuning_and_inference_share_one_bucket_table():
  # The table fine-tuning had before it moved to data/buckets.py (git: finetune_pipeline.py).
  before = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
  assert finetune_pipeline.BUCKETS is buckets.BUCKETS == before
  old = lambda n, limit: next((b for b in before if n <= b < limit), limit)
  for limit in (40, 128, 512):
    assert [finetune_pipeline.bucket_length(n, limit) for n in range(1, limit + 1)] == [
        old(n, limit) for n in range(1, limit + 1)]
  lengths = np.random.default_rng(0).integers(2, 500, size=300)
  used = {length for _, length in runner.plan_batches(lengths, 512, 2048)}
  assert used <= set(before)
