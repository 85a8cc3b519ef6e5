"""Leave-one-out split, left padding (and trimming it) and length-bucketed training batches."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from typing import TYPE_CHECKING

import numpy as np
import torch

from recshrink.errors import DataError
from recshrink.interest import informative_attrs, interest_shift_mask

if TYPE_CHECKING:  # annotations only: a Dataset makes its split (Dataset.split)
    from recshrink.data.dataset import InteractionData


def pad_left(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """Left-pad (and left-truncate) sequences to ``length``: returns ``[len(seqs), length]``."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = s
    return out


def trim_padding(hist: np.ndarray, min_len: int = 1) -> np.ndarray:
    """Drop leading all-padding columns, keeping at least ``min_len`` (models are
    padding-invariant); pads on the left when the batch is narrower than ``min_len``."""
    nonzero = np.flatnonzero((hist != 0).any(axis=0))
    start = nonzero[0] if len(nonzero) else hist.shape[1]
    hist = hist[:, min(start, max(0, hist.shape[1] - min_len)) :]
    if hist.shape[1] < min_len:
        hist = np.pad(hist, ((0, 0), (min_len - hist.shape[1], 0)))
    return hist


@dataclass
class EvalSet:
    """One evaluation split: a history and a held-out target per user.

    Attributes:
        histories: ``[U, max_len]`` int64, left-padded.
        targets: ``[U]`` int64 target item per user.
        users: ``[U]`` index of each row's user in ``InteractionData.sequences``.
        shift: ``[U]`` bool, True where the target shifts the user's interest.
        known: ``[U]`` bool, True where ``shift`` is determined (attributes or ground truth).
        seen: Every item each user interacted with before the target (the whole history, not
            only the last ``max_len``), oldest first; masked from the ranking by default.
    """

    histories: np.ndarray
    targets: np.ndarray
    users: np.ndarray
    shift: np.ndarray
    known: np.ndarray
    seen: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, n: int | None, seed: int = 0) -> EvalSet:
        """A fixed random sample of ``n`` rows in their original order (all rows when ``n`` is
        None or at least ``len(self)``)."""
        if n is None or n >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return replace(self, histories=self.histories[rows], targets=self.targets[rows],
                       users=self.users[rows], shift=self.shift[rows], known=self.known[rows],
                       seen=None if self.seen is None else [self.seen[i] for i in rows])


@dataclass
class Split:
    """Leave-one-out split of a data set.

    Attributes:
        train: Per-user training sequences (all but the last two items; whole sequence for users
            with fewer than 3 items).
        valid: Second-to-last item as target, the items before it as history.
        test: Last item as target, all items before it as history.
        max_len: History length of the model.
        dropped_attrs: Attribute ids left out of the interest-shift decision because more than
            half the items carry them (:func:`recshrink.interest.informative_attrs`).
    """

    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    max_len: int
    dropped_attrs: list[int] = field(default_factory=list)


def _eval_set(
    data: InteractionData,
    users: np.ndarray,
    cut: int,
    max_len: int,
    ground_truth: np.ndarray | None,
    window: int,
    attrs: list[frozenset[int]] | None,
) -> EvalSet:
    hist = [data.sequences[u][: len(data.sequences[u]) - cut] for u in users]
    targets = np.array([data.sequences[u][len(data.sequences[u]) - cut] for u in users], np.int64)
    histories = pad_left(hist, max_len)
    if ground_truth is not None:
        shift = ground_truth[users].astype(bool)
        known = np.ones(len(users), dtype=bool)
    elif attrs is not None:
        shift, known = interest_shift_mask(histories, targets, attrs, window=window)
    else:
        shift = np.zeros(len(users), dtype=bool)
        known = np.zeros(len(users), dtype=bool)
    return EvalSet(histories, targets, np.asarray(users, np.int64), shift, known, seen=hist)


def leave_one_out(data: InteractionData, max_len: int = 50, shift_window: int = 5) -> Split:
    """Split each user's sequence: last item = test, second last = validation, rest = training.

    Users with fewer than 3 items are used for training only. Interest shift on the test split is
    the generator's ground truth where the data has it (synthetic data), otherwise derived from
    item attributes (the target shares no attribute with the last ``shift_window`` items),
    leaving out attributes that more than half the items carry.

    Raises:
        DataError: No user has 3 or more items.
    """
    lengths = np.array([len(s) for s in data.sequences])
    eval_users = np.flatnonzero(lengths >= 3)
    if len(eval_users) == 0:
        raise DataError(data.source or data.name, "no user has 3 or more items: nothing to evaluate")
    train = [s[:-2] if len(s) >= 3 else s for s in data.sequences]
    attrs, dropped = informative_attrs(data.item_attrs) if data.item_attrs else (None, [])
    valid = _eval_set(data, eval_users, 2, max_len, None, shift_window, attrs)
    test = _eval_set(data, eval_users, 1, max_len, data.shift, shift_window, attrs)
    return Split(train=train, valid=valid, test=test, max_len=max_len, dropped_attrs=dropped)


def training_pairs(train: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Per-user training windows of at most ``max_len + 1`` items (at least 2).

    Each returned sequence ``s`` gives inputs ``s[:-1]`` and next-item targets ``s[1:]``. A
    sequence longer than ``max_len + 1`` is cut from its end into windows that overlap by one
    item, so every next-item transition is a target exactly once.
    """
    out = []
    for s in train:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            out.append(s[start:end])
            end = start + 1
    return out


def bucket_batches(
    seqs: list[np.ndarray],
    batch_size: int,
    rng: np.random.Generator,
    rank: int = 0,
    world_size: int = 1,
) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed batches ``{"inputs": [B, L'], "targets": [B, L'], "index": [B]}``.

    ``inputs`` and ``targets`` are left-padded; ``index`` gives each row's position in ``seqs``.

    Sequences are sorted by length (ties broken at random), cut into batches and the batches
    shuffled, so each batch is padded only to its own longest sequence. With ``world_size > 1``
    every rank draws the same order and takes every ``world_size``-th batch; all ranks get the
    same number of batches.
    """
    lengths = np.array([len(s) - 1 for s in seqs])
    order = np.lexsort((rng.random(len(seqs)), lengths))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(chunks))
    if world_size > 1:
        usable = len(perm) - len(perm) % world_size
        perm = perm[:usable][rank::world_size]
    out = []
    for c in perm:
        idx = chunks[c]
        width = int(lengths[idx].max())
        inp = pad_left([seqs[i][:-1] for i in idx], width)
        tgt = pad_left([seqs[i][1:] for i in idx], width)
        out.append(
            {
                "inputs": torch.from_numpy(inp),
                "targets": torch.from_numpy(tgt),
                "index": torch.from_numpy(np.asarray(idx, dtype=np.int64)),
            }
        )
    return out
