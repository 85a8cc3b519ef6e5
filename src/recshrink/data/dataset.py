"""The in-memory dataset every loader returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from recshrink.data.split import Split, leave_one_out


@dataclass
class InteractionData:
    """Per-user item sequences in time order with an item id map.

    Internal item ids run from 1 to ``num_items``; 0 is the padding id. ``item_ids[i - 1]`` is the
    raw id of internal item ``i``.

    Attributes:
        name: Data set name (for reports).
        sequences: One int64 array of internal item ids per user, oldest first.
        user_ids: Raw user id of each sequence.
        item_ids: Raw item ids; position ``i - 1`` holds the raw id of internal id ``i``.
        item_attrs: Optional attribute (category) ids per internal item id, index 0 empty.
        shift: Optional ground truth per user: True when the user's test target shifts interest
            (synthetic data only); None means it is derived from ``item_attrs``.
        source: Where the data came from (path or "synthetic").
    """

    name: str
    sequences: list[np.ndarray]
    user_ids: list[str]
    item_ids: list[str]
    item_attrs: list[frozenset[int]] | None = None
    shift: np.ndarray | None = None
    source: str = ""
    attr_names: list[str] | None = field(default=None, repr=False)

    def split(self, max_len: int = 50, shift_window: int = 5) -> Split:
        """The leave-one-out split (last item test, second last validation, the rest training)
        with histories of the last ``max_len`` items; see
        :func:`recshrink.data.split.leave_one_out`."""
        return leave_one_out(self, max_len, shift_window)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def fingerprint(self) -> str:
        """A short stable hash of the sequences and id map (identifies the data a model saw)."""
        h = hashlib.sha256()
        h.update(str(self.num_items).encode())
        for raw in self.item_ids:
            h.update(raw.encode())
            h.update(b"\0")
        for seq in self.sequences:
            h.update(np.asarray(seq, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def stats(self) -> dict:
        """Summary numbers for ``recshrink data stats`` and reports."""
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        out = {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "seq_len_mean": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
            "seq_len_median": float(np.median(lengths)) if len(lengths) else 0.0,
            "seq_len_max": int(lengths.max()) if len(lengths) else 0,
            "density": round(self.num_interactions / max(1, self.num_users * self.num_items), 6),
            "has_attributes": self.item_attrs is not None,
        }
        if self.item_attrs is not None:
            out["attributes"] = len(set().union(*self.item_attrs))
        return out


Dataset = InteractionData  # the public name (recshrink.Dataset)
