"""Interest-level evaluation: attribute sets of the recommended items against the target's.

Interest metrics compare the attribute sets (e.g. categories) of the top-K items with the
target's attributes (:func:`interest_f1`), and :func:`is_interest_shift` labels a user whose
target leaves their recent interests. :func:`informative_attrs` drops the attributes that nearly
every item carries before either is computed. Item ids are ``1..N``; id ``0`` is padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

__all__ = [
    "interest_f1",
    "informative_attrs",
    "interest_shift_mask",
    "is_interest_shift",
]

_INTEREST_KEYS = ("interest_precision", "interest_recall", "interest_f1")


def to_int_array(values: Tensor | np.ndarray | Sequence[int], name: str) -> np.ndarray:
    """Converts a tensor/array/sequence to a 1-D int64 numpy array."""
    if isinstance(values, Tensor):
        arr = values.detach().cpu().numpy()
    else:
        arr = np.asarray(values)
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must contain integers")
    return arr.astype(np.int64)


def to_2d_int_array(values: Tensor | np.ndarray | Sequence[Sequence[int]], name: str) -> np.ndarray:
    """Converts a tensor/array/nested sequence to a 2-D int64 numpy array."""
    if isinstance(values, Tensor):
        arr = values.detach().cpu().numpy()
    else:
        arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    return arr.astype(np.int64)


def _attrs_of(item_attrs: Sequence[frozenset[int]], item: int) -> frozenset[int]:
    """Attributes of one item; padding (0) and unknown ids have none."""
    if item <= 0 or item >= len(item_attrs):
        return frozenset()
    attrs = item_attrs[item]
    return attrs if attrs is not None else frozenset()


def per_user_interest(
    topk_ids: np.ndarray, targets: np.ndarray, item_attrs: Sequence[frozenset[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-user interest precision, recall, F1 and validity (all shape ``[B]``)."""
    n = targets.shape[0]
    prec = np.zeros(n, dtype=np.float64)
    rec = np.zeros(n, dtype=np.float64)
    f1 = np.zeros(n, dtype=np.float64)
    valid = np.zeros(n, dtype=bool)
    for u in range(n):
        t_attrs = _attrs_of(item_attrs, int(targets[u]))
        if not t_attrs:
            continue
        valid[u] = True
        a_attrs: set[int] = set()
        for item in topk_ids[u]:
            a_attrs.update(_attrs_of(item_attrs, int(item)))
        inter = len(a_attrs & t_attrs)
        p = inter / len(a_attrs) if a_attrs else 0.0
        r = inter / len(t_attrs)
        prec[u] = p
        rec[u] = r
        f1[u] = 2.0 * p * r / (p + r) if (p + r) > 0 else 0.0
    return prec, rec, f1, valid


def interest_summary(
    k: int, prec: np.ndarray, rec: np.ndarray, f1: np.ndarray, valid: np.ndarray
) -> dict[str, float]:
    """Averages per-user interest values over valid users."""
    cnt = int(valid.sum())
    vals = (prec, rec, f1)
    return {
        f"{name}@{k}": (float(v[valid].mean()) if cnt else 0.0)
        for name, v in zip(_INTEREST_KEYS, vals)
    }


def interest_f1(
    topk_ids: Tensor | np.ndarray,
    targets: Tensor | np.ndarray | Sequence[int],
    item_attrs: Sequence[frozenset[int]],
) -> dict[str, Any]:
    """Interest-level precision/recall/F1 between the top-K list and the target.

    For each user whose target has a non-empty attribute set T, let A be the union of
    the attributes of the top-K items (padding id 0 contributes none). Then
    ``precision = |A∩T|/|A|`` (0 if A is empty), ``recall = |A∩T|/|T|`` and
    ``f1 = 2PR/(P+R)`` (0 if both are 0). Users whose target has no attributes are
    excluded from the averages.

    Args:
        topk_ids: Recommended item ids, shape ``[B, K]``.
        targets: Target item ids, shape ``[B]``.
        item_attrs: ``item_attrs[i]`` is the attribute set of item id ``i``; ids past
            the end of the list have no attributes.

    Returns:
        ``{"interest_precision@K", "interest_recall@K", "interest_f1@K"}`` as floats
        (0.0 when no user counts) and ``"interest_count"``, the number of users averaged.

    Raises:
        ValueError: If the batch sizes disagree.
    """
    top = to_2d_int_array(topk_ids, "topk_ids")  # [B, K]
    tgt = to_int_array(targets, "targets")  # [B]
    if top.shape[0] != tgt.shape[0]:
        raise ValueError(f"topk_ids has {top.shape[0]} rows but targets has {tgt.shape[0]}")
    prec, rec, f1, valid = per_user_interest(top, tgt, item_attrs)
    out: dict[str, Any] = interest_summary(top.shape[1], prec, rec, f1, valid)
    out["interest_count"] = int(valid.sum())
    return out


ATTR_MAX_SHARE = 0.5  # attributes on more than this share of the items say nothing of interest


def informative_attrs(
    item_attrs: Sequence[frozenset[int]], max_share: float = ATTR_MAX_SHARE
) -> tuple[list[frozenset[int]], list[int]]:
    """The attribute table without the attributes that nearly every item carries.

    An attribute on more than ``max_share`` of the real items (a root category such as
    "Beauty" on every Amazon item) tells nothing about a user's interest: with it, every target
    "shares an attribute" with every history, so no case is an interest shift and interest F1
    is trivially high. Such attributes are left out of the shift/stable decision and of
    interest F1.

    Args:
        item_attrs: ``item_attrs[i]`` is the attribute set of item id ``i`` (index 0 padding).
        max_share: Largest share of items an attribute may be on and still count.

    Returns:
        ``(table, dropped)``: the filtered table (same length) and the dropped attribute ids,
        sorted. The table is ``item_attrs`` itself when nothing is dropped.
    """
    n = max(1, len(item_attrs) - 1)
    counts: dict[int, int] = {}
    for attrs in item_attrs[1:]:
        for a in attrs or ():
            counts[a] = counts.get(a, 0) + 1
    dropped = sorted(a for a, c in counts.items() if c > max_share * n)
    if not dropped:
        return list(item_attrs), []
    gone = frozenset(dropped)
    return [frozenset(a - gone) if a else frozenset() for a in item_attrs], dropped


def is_interest_shift(
    history: Tensor | np.ndarray | Sequence[int],
    target: int,
    item_attrs: Sequence[frozenset[int]],
    window: int = 5,
) -> bool | None:
    """Whether the target leaves the user's recent interests.

    The recent interests are the union of the attributes of the last ``window``
    non-padding items of ``history`` (zeros are ignored wherever they appear).

    Args:
        history: 1-D item ids in time order (oldest first), 0 = padding.
        target: The target item id.
        item_attrs: ``item_attrs[i]`` is the attribute set of item id ``i``.
        window: How many of the most recent real items define recent interests (>= 1).

    Returns:
        True if the target's attributes share nothing with the recent interests, False
        if they overlap, and None (undetermined) when the target has no attributes or
        the window items have none (including an empty history).

    Raises:
        ValueError: If ``window`` < 1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    t_attrs = _attrs_of(item_attrs, int(target))
    if not t_attrs:
        return None
    items = to_int_array(history, "history")
    items = items[items != 0][-window:]
    recent: set[int] = set()
    for item in items:
        recent.update(_attrs_of(item_attrs, int(item)))
    if not recent:
        return None
    return recent.isdisjoint(t_attrs)


def interest_shift_mask(
    histories: Tensor | np.ndarray | Sequence[Sequence[int]],
    targets: Tensor | np.ndarray | Sequence[int],
    item_attrs: Sequence[frozenset[int]],
    window: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched :func:`is_interest_shift`.

    Args:
        histories: Item ids, shape ``[B, L]``, 0 = padding.
        targets: Target ids, shape ``[B]``.
        item_attrs: ``item_attrs[i]`` is the attribute set of item id ``i``.
        window: See :func:`is_interest_shift`.

    Returns:
        ``(shift, known)``, two bool arrays of shape ``[B]``. ``known`` is False where
        the shift is undetermined, and ``shift`` is False there. Stable users are
        ``known & ~shift``.

    Raises:
        ValueError: If the batch sizes disagree or ``window`` < 1.
    """
    hist = to_2d_int_array(histories, "histories")  # [B, L]
    tgt = to_int_array(targets, "targets")  # [B]
    if hist.shape[0] != tgt.shape[0]:
        raise ValueError(f"histories has {hist.shape[0]} rows but targets has {tgt.shape[0]}")
    shift = np.zeros(tgt.shape[0], dtype=bool)
    known = np.zeros(tgt.shape[0], dtype=bool)
    for u in range(tgt.shape[0]):
        res = is_interest_shift(hist[u], int(tgt[u]), item_attrs, window=window)
        if res is not None:
            known[u] = True
            shift[u] = res
    return shift, known
