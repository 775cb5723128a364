"""Statistics and invariants of dynamic MLM masking (bert_jax/data/masking.py)."""

import numpy as np
import pytest

from bert_jax.data import masking

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 1000


def _batch(rng, batch=512, length=128):
  """Rows `[CLS] text [SEP] text [SEP] pad...` of random lengths."""
  ids = rng.integers(5, VOCAB, size=(batch, length)).astype(np.int32)
  lengths = rng.integers(12, length + 1, size=batch)
  for b, n in enumerate(lengths):
    ids[b, 0], ids[b, n // 2], ids[b, n - 1] = CLS, SEP, SEP
    ids[b, n:] = PAD
  return ids


def _masker(**kwargs):
  defaults = dict(vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIALS, max_predictions=20)
  defaults.update(kwargs)
  return masking.Masker(**defaults)


def _unmask(out):
  ids = out["input_ids"].copy()
  rows, slots = np.nonzero(out["masked_weights"])
  ids[rows, out["masked_positions"][rows, slots]] = out["masked_ids"][rows, slots]
  return ids


def test_rate_and_80_10_10_split():
  rng = np.random.default_rng(0)
  ids = _batch(rng, batch=2048)
  out = _masker()(ids, np.arange(len(ids)), epoch=0)
  weights = out["masked_weights"].astype(bool)
  num_candidates = (~np.isin(ids, SPECIALS)).sum(1)
  expected = np.minimum(20, np.maximum(1, np.rint(0.15 * num_candidates)))
  np.testing.assert_array_equal(weights.sum(1), expected)
  # Overall selection rate of candidate tokens (rows here never hit the cap of 20).
  assert abs(weights.sum() / num_candidates.sum() - 0.15) < 0.005

  rows, slots = np.nonzero(weights)
  positions = out["masked_positions"][rows, slots]
  new = out["input_ids"][rows, positions]
  original = out["masked_ids"][rows, slots]
  np.testing.assert_array_equal(original, ids[rows, positions])
  n = len(new)
  frac_mask = np.mean(new == MASK)
  frac_same = np.mean(new == original)
  frac_random = 1 - frac_mask - frac_same
  assert abs(frac_mask - 0.8) < 0.01, frac_mask
  assert abs(frac_same - 0.1 - 1 / VOCAB * 0.1) < 0.01, frac_same
  assert abs(frac_random - 0.1) < 0.01, frac_random
  assert n > 20000
  # Random replacements are never special tokens; nothing outside the slots changed.
  replaced = (new != MASK) & (new != original)
  assert not np.isin(new[replaced], SPECIALS).any()
  np.testing.assert_array_equal(_unmask(out), ids)


def test_specials_and_padding_never_selected_and_layout():
  rng = np.random.default_rng(1)
  ids = _batch(rng, batch=1024)
  ids[::7, 5] = UNK
  out = _masker(rate=0.4, max_predictions=60)(ids, np.arange(len(ids)), epoch=3)
  weights = out["masked_weights"].astype(bool)
  rows, slots = np.nonzero(weights)
  assert not np.isin(ids[rows, out["masked_positions"][rows, slots]], SPECIALS).any()
  # Padding slots are zeros; real positions are strictly ascending.
  assert (out["masked_positions"][~weights] == 0).all() and (out["masked_ids"][~weights] == 0).all()
  for b in range(0, 1024, 97):
    pos = out["masked_positions"][b][weights[b]]
    assert (np.diff(pos) > 0).all()
  assert out["input_ids"].dtype == np.int32 and out["masked_positions"].dtype == np.int32
  assert out["masked_ids"].dtype == np.int32 and out["masked_weights"].dtype == np.float32
  num_candidates = (~np.isin(ids, SPECIALS)).sum(1)
  assert abs(weights.sum() / np.minimum(60, np.rint(0.4 * num_candidates)).sum() - 1) < 1e-9


def test_cap_at_max_predictions_and_short_rows():
  ids = np.full((3, 16), PAD, np.int32)
  ids[0, :16] = [CLS] + list(range(10, 24)) + [SEP]
  ids[1, :3] = [CLS, 50, SEP]           # one candidate: exactly one prediction
  ids[2, :2] = [CLS, SEP]               # no candidate: no prediction
  out = _masker(max_predictions=2, rate=0.4)(ids, np.arange(3), epoch=0)
  np.testing.assert_array_equal(out["masked_weights"].sum(1), [2, 1, 0])
  assert out["masked_positions"][1, 0] == 1
  # P larger than the row length works too.
  out = _masker(max_predictions=40, rate=1.0)(ids, np.arange(3), epoch=0)
  np.testing.assert_array_equal(out["masked_weights"].sum(1), [14, 1, 0])


def test_deterministic_per_example_and_fresh_per_epoch():
  rng = np.random.default_rng(2)
  ids = _batch(rng, batch=64)
  example_ids = np.arange(1000, 1064)
  masker = _masker()
  a = masker(ids, example_ids, epoch=0)
  b = masker(ids, example_ids, epoch=0)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  # An example's mask does not depend on its batch neighbours.
  part = masker(ids[10:20], example_ids[10:20], epoch=0)
  for key in a:
    np.testing.assert_array_equal(part[key], a[key][10:20])
  c = masker(ids, example_ids, epoch=1)
  assert (c["masked_positions"] != a["masked_positions"]).any(axis=1).mean() > 0.9
  d = _masker(seed=7)(ids, example_ids, epoch=0)
  assert (d["masked_positions"] != a["masked_positions"]).any(axis=1).mean() > 0.9


def test_whole_word_units_complete():
  rng = np.random.default_rng(3)
  word_start = rng.random(VOCAB) < 0.6  # 40% of the vocabulary are '##' continuations
  word_start[list(SPECIALS)] = True
  ids = _batch(rng, batch=1024)
  masker = _masker(whole_word=True, word_start_table=word_start)
  out = masker(ids, np.arange(len(ids)), epoch=0)
  weights = out["masked_weights"].astype(bool)
  selected = np.zeros(ids.shape, bool)
  rows, slots = np.nonzero(weights)
  selected[rows, out["masked_positions"][rows, slots]] = True
  candidate = ~np.isin(ids, SPECIALS)
  # A word = a candidate start plus following candidate continuations: all or nothing.
  cont = candidate & ~word_start[ids]
  cont[:, 0] = False
  prev_cand = np.zeros_like(candidate)
  prev_cand[:, 1:] = candidate[:, :-1]
  joined = cont & prev_cand   # token belongs to the same word as the token before it
  assert (selected[:, 1:][joined[:, 1:]] == selected[:, :-1][joined[:, 1:]]).all()
  assert not selected[~candidate].any()
  budget = np.minimum(20, np.maximum(1, np.rint(0.15 * candidate.sum(1))))
  assert (weights.sum(1) <= budget).all()
  # Skipping words that overshoot keeps the count close to the budget.
  assert weights.sum() / budget.sum() > 0.97
  # Multi-token words really get masked together.
  assert selected[:, 1:][joined[:, 1:]].sum() > 1000
  np.testing.assert_array_equal(_unmask(out), ids)


def test_bad_arguments():
  with pytest.raises(ValueError, match="rate"):
    _masker(rate=0.0)
  with pytest.raises(ValueError, match="word_start_table"):
    _masker(whole_word=True)
  with pytest.raises(ValueError, match="shape"):
    _masker(whole_word=True, word_start_table=np.ones(5, bool))


def test_per_example_epochs_equal_one_call_per_epoch():
  """A batch that straddles two epochs masks each row as its own epoch would."""
  ids = _batch(np.random.default_rng(1), batch=64)
  examples = np.arange(100, 164)
  epochs = np.where(np.arange(64) < 40, 2, 3)
  mixed = _masker()(ids, examples, epochs)
  for epoch in (2, 3):
    rows = epochs == epoch
    alone = _masker()(ids[rows], examples[rows], epoch)
    for key, value in alone.items():
      np.testing.assert_array_equal(mixed[key][rows], value)
  assert not np.array_equal(mixed["masked_positions"],
                            _masker()(ids, examples, 2)["masked_positions"])
