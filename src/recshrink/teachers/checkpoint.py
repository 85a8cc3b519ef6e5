"""Read a pickled PyTorch checkpoint from another framework without executing anything in it.

A ``torch.save`` file is a pickle: loading it normally may import and call any function the
file names. recshrink loads it through ``torch.load(weights_only=True)`` (tensors and plain
containers only) and reads the objects of known frameworks' *data* classes (RecBole's
``Config``, its enums) as :class:`Inert` records: the class name, the constructor arguments and
the state, with no code of that framework imported or run. A file naming any other global (a
function such as ``os.system``, a class of an unknown package) is refused before loading.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from recshrink.errors import RecshrinkError

#: Packages whose pickled objects are read as inert data (never imported).
INERT_PACKAGES = ("recbole.",)


class Inert:
    """A pickled object read as data: what the file says about it, with no code behind it.

    Attributes:
        cls: The pickled class's full name (``module.qualname``).
        args: Its constructor (or reduce) arguments.
        state: Its ``__dict__`` / ``__setstate__`` state.
    """

    cls = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = {}

    def __setstate__(self, state: Any) -> None:
        if not hasattr(self, "args"):
            self.args, self.kwargs = (), {}
        self.state = state

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the state (a dict state, or the ``__dict__`` part of a slots pair)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        return state.get(key, default) if isinstance(state, dict) else default

    def __repr__(self) -> str:
        return f"Inert({self.cls}, args={self.args!r})"


def _inert_class(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Inert,), {"cls": name, "__module__": __name__})


def read_checkpoint(path: str | Path) -> Any:
    """The objects of a ``torch.save`` file: tensors, plain containers, and :class:`Inert`
    records for the data classes of :data:`INERT_PACKAGES`.

    Raises:
        RecshrinkError: Not a readable PyTorch file, or the pickle names a global that is neither
            allowed by ``weights_only`` nor a known framework's data class (nothing is run).
    """
    p = Path(path)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
    except Exception as exc:  # not a zip checkpoint, truncated, ...
        raise RecshrinkError(f"{p}: not a readable PyTorch checkpoint: {exc}") from None
    refused = [g for g in unsafe if not g.startswith(INERT_PACKAGES)]
    if refused:
        raise RecshrinkError(f"{p}: refused to load: the file's pickle names {refused[0]}, which "
                             "would run code on load (recshrink reads only tensors, plain "
                             "containers and RecBole's data classes)")  # fmt: skip
    inert = [(_inert_class(g), g) for g in unsafe]
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(inert):
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a global pushed dynamically, not seen statically
        first = str(exc).strip().splitlines()[0]
        raise RecshrinkError(f"{p}: refused to load: {first[:200]}") from None
    except Exception as exc:
        raise RecshrinkError(f"{p}: not a readable PyTorch checkpoint: {exc}") from None
