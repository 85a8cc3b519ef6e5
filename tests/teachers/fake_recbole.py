"""RecBole's pickled data classes, stood in for: a checkpoint saved with them pickles
``recbole.config.configurator.Config`` and ``recbole.utils.enum_type.ModelType`` by name, as
RecBole's Trainer does, without RecBole installed."""

from __future__ import annotations

import enum
import sys
import types

NAMES = ("recbole", "recbole.config", "recbole.config.configurator", "recbole.utils",
         "recbole.utils.enum_type")  # fmt: skip


def recbole_data_classes(monkeypatch) -> tuple[type, type]:
    """``(ModelType, Config)`` importable under RecBole's module names until :func:`forget`."""
    mods = {n: types.ModuleType(n) for n in NAMES}
    for n, mod in mods.items():
        monkeypatch.setitem(sys.modules, n, mod)

    class ModelType(enum.Enum):
        SEQUENTIAL = 2

    class Config:
        def __init__(self, d):
            self.final_config_dict = d

    for cls, mod in ((ModelType, "recbole.utils.enum_type"),
                     (Config, "recbole.config.configurator")):  # fmt: skip
        cls.__module__, cls.__qualname__ = mod, cls.__name__
        setattr(mods[mod], cls.__name__, cls)
    return ModelType, Config


def forget(monkeypatch) -> None:
    """Remove the stand-in modules again (the file must be read without them)."""
    for n in NAMES:
        monkeypatch.delitem(sys.modules, n)
