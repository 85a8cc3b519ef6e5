"""Models behind one contract (see :mod:`recshrink.models.base`), built by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel
from recshrink.models.cnn import NextItNet, nextitnet
from recshrink.models.rnn import RNNRec, gru, lstm
from recshrink.models.sasrec import SASRec, sasrec, sasrec_base, sasrec_large

__all__ = [
    "SeqRecModel", "SASRec", "RNNRec", "NextItNet", "sasrec", "sasrec_base", "sasrec_large",
    "gru", "lstm", "nextitnet", "builder_names", "build_model",
]  # fmt: skip


def _builders() -> dict[str, Callable[..., SeqRecModel]]:
    return {
        # generic builders (architecture names as stored in checkpoints)
        "sasrec": sasrec,
        "gru": gru,
        "lstm": lstm,
        "cnn": nextitnet,
        "nextitnet": nextitnet,
        # size presets
        "sasrec_base": sasrec_base,
        "sasrec_large": sasrec_large,
        "gru_small": partial(gru, dim=64),
        "gru_tiny": partial(gru, dim=32),
        "gru_wide": partial(gru, dim=64, hidden=128),  # d64 table, 128-unit state projected
        "lstm_small": partial(lstm, dim=64),
        "lstm_2layer": partial(lstm, dim=64, layers=2),
        "cnn_small": partial(nextitnet, dim=64),
        "cnn_wide": partial(nextitnet, dim=64, width=96, kernel=2),  # d64 table, 96-wide stream
    }


def builder_names() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_builders())


def build_model(name: str, num_items: int, **kwargs) -> SeqRecModel:
    """Build a model by builder or preset name.

    Args:
        name: One of :func:`builder_names`.
        num_items: Number of items N.
        **kwargs: Builder arguments overriding the preset (e.g. ``dim=128``).

    Raises:
        RecshrinkError: Unknown name or argument.
    """
    builders = _builders()
    if name not in builders:
        raise RecshrinkError(f"unknown model {name!r}; choose one of: {', '.join(sorted(builders))}")
    try:
        return builders[name](num_items, **kwargs)
    except TypeError as exc:
        raise RecshrinkError(f"bad arguments for model {name!r}: {exc}") from None
    except ValueError as exc:
        raise RecshrinkError(f"model {name!r}: {exc}") from None
