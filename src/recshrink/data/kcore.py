"""The k-core filter: keep the users and items with at least ``k`` interactions each."""

from __future__ import annotations

import numpy as np

from recshrink.data.dataset import InteractionData
from recshrink.errors import DataError


def kcore_filter(data: InteractionData, k: int) -> InteractionData:
    """Keep the k-core: users and items with at least ``k`` interactions each.

    Users and items below the threshold are dropped repeatedly until nothing changes (the
    result does not depend on removal order). A repeated interaction counts every time. Surviving
    items are re-indexed densely ``1..N`` in the order of their original internal ids; users
    keep their order. ``item_attrs``, ``attr_names`` and ``shift`` stay aligned.

    Args:
        data: The data to filter (not modified).
        k: Minimum interactions per user and per item; ``k <= 1`` returns ``data`` itself.

    Returns:
        The filtered data.

    Raises:
        DataError: The filter leaves no interactions (located at ``data.source``).
    """
    if k <= 1:
        return data
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    n_users, n_items = len(data.sequences), data.num_items
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in data.sequences])
        if n_users
        else np.zeros(0, dtype=np.int64)
    )
    owner = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    alive = np.ones(len(flat), dtype=bool)
    while True:
        item_count = np.bincount(flat[alive], minlength=n_items + 1)
        user_count = np.bincount(owner[alive], minlength=n_users)
        drop = alive & ((item_count[flat] < k) | (user_count[owner] < k))
        if not drop.any():
            break
        alive &= ~drop

    if not alive.any():
        raise DataError(
            data.source or data.name,
            f"k-core filter with k={k} left no data (every user or item has fewer than {k} "
            "interactions after filtering)",
        )
    kept_users = np.flatnonzero(user_count > 0)
    kept_items = np.flatnonzero(item_count[1:] > 0) + 1  # old internal ids, ascending
    remap = np.zeros(n_items + 1, dtype=np.int64)
    remap[kept_items] = np.arange(1, len(kept_items) + 1, dtype=np.int64)

    new_flat = remap[flat[alive]]
    new_lengths = user_count[kept_users]
    sequences = [s.copy() for s in np.split(new_flat, np.cumsum(new_lengths)[:-1])]

    item_attrs = None
    if data.item_attrs is not None:
        item_attrs = [frozenset()] + [data.item_attrs[i] for i in kept_items]
    shift = None if data.shift is None else np.asarray(data.shift)[kept_users]
    return InteractionData(
        name=data.name,
        sequences=sequences,
        user_ids=[data.user_ids[u] for u in kept_users],
        item_ids=[data.item_ids[i - 1] for i in kept_items],
        item_attrs=item_attrs,
        shift=shift,
        source=data.source,
        attr_names=None if data.attr_names is None else list(data.attr_names),
    )


__all__ = ["kcore_filter"]
