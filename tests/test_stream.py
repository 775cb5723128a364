"""The global stream order (bert_jax/data/stream.py): bijective, uniform, host-independent."""

import numpy as np
import pytest

from bert_jax.data import stream


@pytest.mark.parametrize("max_stored", [0, 1 << 22])  # computed (Feistel) and stored
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 99, 1000, 4099])
def test_every_epoch_is_a_permutation(n, max_stored):
  order = stream.GlobalOrder(n, 4, seed=5, max_stored=max_stored)
  epochs = [order.permutation(e) for e in range(3)]
  for perm in epochs:
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
  if n >= 99:
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(n))
  # positions() of any range agrees with the epochs laid end to end.
  records, epoch_of = order.positions(n - 1, 2 * n + 1)
  np.testing.assert_array_equal(records, np.concatenate(epochs)[n - 1:2 * n + 1])
  np.testing.assert_array_equal(epoch_of, np.arange(n - 1, 2 * n + 1) // n)


def test_computed_order_is_uniform():
  """The record at a position, over many epochs, is uniform; neighbours are not kept."""
  n, num_epochs = 1000, 3000
  order = stream.GlobalOrder(n, 8, seed=1, max_stored=0)
  first = order.records(np.arange(num_epochs) * n + 17)[0]
  counts = np.bincount(first // 10, minlength=100)          # 100 buckets, 30 expected each
  chi2 = ((counts - 30.0) ** 2 / 30.0).sum()
  assert chi2 < 99 + 5 * np.sqrt(2 * 99)                     # dof 99: mean 99, sd 14
  perm = order.permutation(0)
  assert np.mean(np.diff(perm) == 1) < 0.01                  # runs of the file are broken up
  assert abs(np.corrcoef(np.arange(n), perm)[0, 1]) < 0.1


def test_host_rows_concatenate_to_the_global_batch():
  order = stream.GlobalOrder(50, 12, seed=0)
  for batch in (0, 3, 4, 9):                                  # batch 4 straddles epochs 0 and 1
    whole = order.host_rows(batch)
    for hosts in (2, 3, 4):
      parts = [order.host_rows(batch, h, hosts) for h in range(hosts)]
      np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
      np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])
  assert set(order.host_rows(4)[1]) == {0, 1}


def test_unshuffled_order_is_the_file_order():
  order = stream.GlobalOrder(10, 4, seed=0, shuffle=False)
  records, epochs = order.positions(8, 13)
  np.testing.assert_array_equal(records, [8, 9, 0, 1, 2])
  np.testing.assert_array_equal(epochs, [0, 0, 1, 1, 1])
