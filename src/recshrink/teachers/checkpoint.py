"""Read a pickled PyTorch checkpoint from another framework without executing anything in it.

A ``torch.save`` file is a pickle: loading it normally may import and call any function the
file names. recshrink unpickles it with a restricted unpickler (``pickle.Unpickler.find_class``
overridden, the documented way to restrict globals): it resolves only tensors' rebuild functions,
plain containers, ``torch.device`` and numpy scalars, and reads the objects of known
frameworks' *data* classes (RecBole's ``Config``, its enums) as :class:`Inert` records: the class
name, the constructor arguments and the state, with no code of that framework imported or run.
Any other global (a function such as ``os.system``, a class of an unknown package) is refused
when the pickle first names it, before it could be called.

``torch.load(weights_only=True)`` is not used: its unpickler reads only pickle protocol 2, and
RecBole saves with ``pickle_protocol=4``.
"""

from __future__ import annotations

import codecs
import collections
import pickle
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recshrink.errors import RecshrinkError

#: Packages whose pickled objects are read as inert data (never imported). RecBole's Config
#: also keeps its YAML loader class (``yaml.loader.FullLoader``), a reference it never calls here.
INERT_PACKAGES = ("recbole.", "yaml.")


def _safe_globals() -> dict[str, Any]:
    """The globals a checkpoint may name that resolve to real objects (pure data constructors)."""
    try:  # numpy 2; numpy 1.26 has a stub numpy._core whose multiarray is not loaded
        from numpy._core import multiarray as core
    except ImportError:
        core = np.core.multiarray
    out = {
        "collections.OrderedDict": collections.OrderedDict,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch.device": torch.device,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "_codecs.encode": codecs.encode,  # bytes in protocol-2 pickles
        "numpy.dtype": np.dtype,
        "numpy.ndarray": np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{mod}.scalar"] = core.scalar
        out[f"{mod}._reconstruct"] = core._reconstruct
    out.update({f"torch.{n}": getattr(torch, n) for n in (
        "float32", "float64", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")})
    return out


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


_INERT_CLASSES: dict[str, type] = {}


def _inert_class(name: str) -> type:
    if name not in _INERT_CLASSES:
        _INERT_CLASSES[name] = type(name.rsplit(".", 1)[-1], (Inert,),
                                    {"cls": name, "__module__": __name__})  # fmt: skip
    return _INERT_CLASSES[name]


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :func:`_safe_globals` and :data:`INERT_PACKAGES`."""

    _safe = _safe_globals()

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in self._safe:
            return self._safe[full]
        if full.startswith(INERT_PACKAGES):
            return _inert_class(full)
        raise _Refused(full)


def _restricted_load(file, **kwargs) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


#: What ``torch.load(pickle_module=...)`` needs of a pickle module.
_PICKLE = types.ModuleType("recshrink_restricted_pickle")
_PICKLE.Unpickler = _RestrictedUnpickler
_PICKLE.load = _restricted_load


def read_checkpoint(path: str | Path) -> Any:
    """The objects of a ``torch.save`` file (zip format, any pickle protocol): tensors, plain
    containers, and :class:`Inert` records for the data classes of :data:`INERT_PACKAGES`.

    Raises:
        RecshrinkError: Not a readable PyTorch file, or the pickle names a global that is neither
            a tensor/container constructor nor a known framework's data class (nothing is run).
    """
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        raise RecshrinkError(f"{p}: not a readable PyTorch checkpoint: not a torch.save zip file")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
    except _Refused as exc:
        raise RecshrinkError(f"{p}: refused to load: the file's pickle names {exc.name}, which "
                             "would run code on load (recshrink reads only tensors, plain "
                             "containers and RecBole's data classes)")  # fmt: skip
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecshrinkError(f"{p}: not a readable PyTorch checkpoint: {first[:200]}") from None
