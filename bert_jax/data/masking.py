"""Dynamic MLM masking of whole batches, at read time.

Why it looks like this:
- Masks are drawn when a batch is read, not when the data is prepared, so every
  epoch sees fresh masks (RoBERTa's dynamic masking) and one prepared dataset
  serves any mask rate.
- The input pipeline must reach tens of thousands of sequences per second on a
  laptop, so everything is vectorised numpy over the whole [B, L] batch: no
  Python loop per example or per token.
- Randomness is a counter-based hash of (seed, epoch, example index, position)
  instead of a stateful generator. The mask of an example depends only on those
  numbers, never on which other examples share its batch, how many hosts read
  the data, or where a run was resumed.
- Selection follows the original BERT recipe: exactly
  `min(max_predictions, max(1, round(rate * num_candidates)))` tokens per row,
  of which 80% become [MASK], 10% a random non-special token and 10% stay.
  With whole-word masking the units are words (WordPiece `##` continuations or
  SentencePiece tokens without a `▁` join the word before them) and, as in the
  original, a word that would overshoot the budget is skipped for a later one.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from bert_jax.errors import UserError

_U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(z: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser: a well-mixed 64-bit hash of each element."""
  z = (z ^ (z >> np.uint64(30))) * _M1
  z = (z ^ (z >> np.uint64(27))) * _M2
  return z ^ (z >> np.uint64(31))


def token_hashes(seed: int, epoch, example_ids_B: np.ndarray, positions_BxN: np.ndarray,
                 stream: int) -> np.ndarray:
  """uint64 [B, N] hashes, a pure function of (seed, epoch, example, position, stream).

  `epoch` is an int or one per example (int [B]: a batch that straddles epochs).
  """
  with np.errstate(over="ignore"):
    base = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(stream))
    base = mix64(base ^ (np.asarray(epoch, np.uint64) * _GOLDEN))
    base_B = mix64(base ^ (np.asarray(example_ids_B, np.uint64) * _M2))
    return mix64(base_B[:, None] + np.asarray(positions_BxN, np.uint64) * _GOLDEN)


def _uniform(h: np.ndarray) -> np.ndarray:
  """Floats in [0, 1) from the top 53 bits of uint64 hashes."""
  return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class Masker:
  """Applies MLM masking to batches of token ids.

  Attributes:
    vocab_size: size of the vocabulary; ids are in [0, vocab_size).
    mask_id: id of [MASK].
    rate: fraction of candidate tokens selected for prediction.
    max_predictions: P, the fixed number of prediction slots per row.
    whole_word: select whole words instead of single tokens.
  """

  def __init__(self, *, vocab_size: int, mask_id: int, special_ids: Iterable[int],
               max_predictions: int, rate: float = 0.15,
               word_start_table: Optional[np.ndarray] = None, whole_word: bool = False,
               seed: int = 0):
    """Builds the per-vocabulary tables.

    Args:
      vocab_size: vocabulary size.
      mask_id: the [MASK] id.
      special_ids: ids that are never selected nor used as random replacements
        ([CLS], [SEP], [PAD], [MASK], [UNK], ...).
      max_predictions: number of prediction slots per row (P).
      rate: selection rate, 0 < rate <= 1 (BERT: 0.15; 0.4 has been used too).
      word_start_table: bool [vocab_size], True where a token starts a word;
        required when `whole_word`.
      whole_word: mask whole words.
      seed: base seed of the hash.
    """
    if not 0.0 < rate <= 1.0:
      raise UserError(f"mask rate must be in (0, 1], got {rate}")
    if max_predictions < 1:
      raise UserError(f"max_predictions_per_seq must be >= 1, got {max_predictions}")
    self.vocab_size = int(vocab_size)
    self.mask_id = int(mask_id)
    self.rate = float(rate)
    self.max_predictions = int(max_predictions)
    self.whole_word = bool(whole_word)
    self.seed = int(seed)
    special = np.zeros(self.vocab_size, bool)
    special[[i for i in special_ids if 0 <= i < self.vocab_size]] = True
    self.candidate_table = ~special
    self.replacement_ids = np.flatnonzero(self.candidate_table).astype(np.int32)
    if not len(self.replacement_ids):
      raise UserError("the vocabulary has no non-special token to mask")
    if whole_word:
      if word_start_table is None:
        raise ValueError("whole-word masking needs a word_start_table")
      word_start_table = np.asarray(word_start_table, bool)
      if word_start_table.shape != (self.vocab_size,):
        raise ValueError(f"word_start_table has shape {word_start_table.shape}, "
                         f"expected ({self.vocab_size},)")
    self.word_start_table = word_start_table

  def __call__(self, input_ids_BxL: np.ndarray, example_ids_B: np.ndarray,
               epoch) -> dict[str, np.ndarray]:
    """Masks a batch.

    Args:
      input_ids_BxL: int token ids, padding included (padding is a special id).
      example_ids_B: a stable index of each example (the record index).
      epoch: the epoch (an int, or int [B] per example); a new epoch draws
        new masks.

    Returns:
      dict with `input_ids` int32 [B, L] (masked copy), `masked_positions`
      int32 [B, P] (ascending, 0 in unused slots), `masked_ids` int32 [B, P]
      (original ids), `masked_weights` float32 [B, P] (1 real, 0 unused).
    """
    ids_BxL = np.asarray(input_ids_BxL, np.int32)
    batch, length = ids_BxL.shape
    cand_BxL = self.candidate_table[ids_BxL]
    num_cand_B = cand_BxL.sum(1)
    budget_B = np.minimum(self.max_predictions,
                          np.maximum(1, np.rint(num_cand_B * self.rate).astype(np.int64)))
    budget_B = np.where(num_cand_B > 0, budget_B, 0)

    p = self.max_predictions
    pos_1xL = np.arange(length)[None, :]
    key_BxL = token_hashes(self.seed, epoch, example_ids_B, pos_1xL, stream=0)
    if self.whole_word:
      selected_BxL = self._select_words(ids_BxL, cand_BxL, key_BxL, budget_B)
      # Scatter the selected positions, ascending, into the first slots.
      rows, cols = np.nonzero(selected_BxL)
      count_B = selected_BxL.sum(1)
      slots = np.arange(len(rows)) - (np.cumsum(count_B) - count_B)[rows]
      positions_BxP = np.zeros((batch, p), np.int32)
      positions_BxP[rows, slots] = cols
      weights_BxP = np.arange(p)[None, :] < count_B[:, None]
    else:
      # The `budget` candidates with the smallest keys, then in ascending order.
      key_BxL = np.where(cand_BxL, key_BxL, _U64_MAX)
      order_BxL = np.argsort(key_BxL, axis=1)
      if length < p:
        order_BxL = np.pad(order_BxL, ((0, 0), (0, p - length)))
      weights_BxP = np.arange(p)[None, :] < budget_B[:, None]
      positions_BxP = np.sort(np.where(weights_BxP, order_BxL[:, :p], length), axis=1)
      positions_BxP = np.where(weights_BxP, positions_BxP, 0).astype(np.int32)
    rows_B1 = np.arange(batch)[:, None]
    masked_ids_BxP = np.where(weights_BxP, ids_BxL[rows_B1, positions_BxP], 0).astype(np.int32)

    # 80% [MASK], 10% random token, 10% unchanged.
    action_BxP = token_hashes(self.seed, epoch, example_ids_B, positions_BxP, stream=1)
    u_BxP = _uniform(action_BxP)
    random_BxP = self.replacement_ids[
        (action_BxP & np.uint64(0xFFFFFFFF)) % np.uint64(len(self.replacement_ids))]
    new_BxP = np.where(u_BxP < 0.8, self.mask_id, np.where(u_BxP < 0.9, random_BxP, masked_ids_BxP))
    out_BxL = ids_BxL.copy()
    rows, slots = np.nonzero(weights_BxP)
    out_BxL[rows, positions_BxP[rows, slots]] = new_BxP[rows, slots]
    return dict(input_ids=out_BxL, masked_positions=positions_BxP, masked_ids=masked_ids_BxP,
                masked_weights=weights_BxP.astype(np.float32))

  def _select_words(self, ids_BxL, cand_BxL, key_BxL, budget_B) -> np.ndarray:
    """Whole-word selection: words in random order, skip those that overshoot."""
    batch, length = ids_BxL.shape
    prev_cand_BxL = np.zeros_like(cand_BxL)
    prev_cand_BxL[:, 1:] = cand_BxL[:, :-1]
    # A unit starts at a candidate that starts a word or follows a non-candidate.
    start_BxL = cand_BxL & (self.word_start_table[ids_BxL] | ~prev_cand_BxL)
    pos_L = np.arange(length)
    start_pos_BxL = np.maximum.accumulate(np.where(start_BxL, pos_L[None, :], 0), axis=1)
    unit_BxL = np.arange(batch)[:, None] * length + start_pos_BxL
    unit_len_BxL = np.bincount(unit_BxL[cand_BxL], minlength=batch * length).reshape(batch, length)
    unit_key_BxL = np.where(start_BxL, key_BxL, _U64_MAX)
    order_BxL = np.argsort(unit_key_BxL, axis=1)
    sorted_len_BxL = np.take_along_axis(unit_len_BxL, order_BxL, axis=1)
    num_units_B = start_BxL.sum(1)
    # Units sort first (others have the largest key), so unit k is real iff k < num_units.
    sorted_len_BxL = np.where(pos_L[None, :] < num_units_B[:, None], sorted_len_BxL, 0)
    # Greedy in key order: the prefix up to the first unit that overshoots, in one step...
    cum_BxL = np.cumsum(sorted_len_BxL, axis=1)
    accept_BxL = (cum_BxL <= budget_B[:, None]) & (sorted_len_BxL > 0)
    used_B = (sorted_len_BxL * accept_BxL).sum(1)
    first_over_B = np.argmax(~accept_BxL, axis=1)
    # ...then, as the original, later units that still fit (few rows, few steps).
    for k in range(int(first_over_B.min(initial=length)) + 1, int(num_units_B.max(initial=0))):
      open_B = (used_B < budget_B) & (k < num_units_B)
      if not open_B.any():
        break
      fits_B = open_B & (k > first_over_B) & (used_B + sorted_len_BxL[:, k] <= budget_B)
      accept_BxL[:, k] |= fits_B
      used_B += np.where(fits_B, sorted_len_BxL[:, k], 0)
    accepted_start_BxL = np.zeros((batch, length), bool)
    np.put_along_axis(accepted_start_BxL, order_BxL, accept_BxL, axis=1)
    return cand_BxL & np.take_along_axis(accepted_start_BxL, start_pos_BxL, axis=1)
