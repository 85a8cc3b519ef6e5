"""Foreign checkpoints are read without running anything they name."""

from __future__ import annotations

import enum
import os
import sys
import types

import pytest
import torch

from recshrink.errors import RecshrinkError
from recshrink.teachers.checkpoint import Inert, read_checkpoint


@pytest.fixture
def fake_recbole(monkeypatch):
    """Stand-ins for RecBole's Config and an enum, importable only while saving."""
    mods = {}
    for name in ("recbole", "recbole.config", "recbole.config.configurator", "recbole.utils",
                 "recbole.utils.enum_type"):
        mods[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mods[name])

    class ModelType(enum.Enum):
        SEQUENTIAL = 2

    class Config:
        def __init__(self):
            self.final_config_dict = {"model": "SASRec", "dataset": "ml-100k", "hidden_size": 64,
                                      "MODEL_TYPE": ModelType.SEQUENTIAL}
            self.model = "SASRec"

    for cls, mod in ((ModelType, "recbole.utils.enum_type"),
                     (Config, "recbole.config.configurator")):
        cls.__module__, cls.__qualname__ = mod, cls.__name__
        setattr(mods[mod], cls.__name__, cls)
    return Config


def test_recbole_config_is_read_as_inert_data(tmp_path, fake_recbole, monkeypatch):
    path = tmp_path / "SASRec-ml.pth"
    w = torch.arange(6.0).reshape(2, 3)
    torch.save({"config": fake_recbole(), "epoch": 3, "state_dict": {"item_embedding.weight": w},
                "other_parameter": None}, path)  # fmt: skip
    for name in [m for m in sys.modules if m.startswith("recbole")]:
        monkeypatch.delitem(sys.modules, name)  # RecBole is not installed where we read it
    obj = read_checkpoint(path)
    assert obj["epoch"] == 3 and torch.equal(obj["state_dict"]["item_embedding.weight"], w)
    cfg = obj["config"]
    assert isinstance(cfg, Inert) and cfg.cls == "recbole.config.configurator.Config"
    final = cfg.get("final_config_dict")
    assert final["model"] == "SASRec" and final["hidden_size"] == 64
    assert final["MODEL_TYPE"].cls == "recbole.utils.enum_type.ModelType"
    assert final["MODEL_TYPE"].args == (2,)
    assert "recbole" not in sys.modules  # nothing was imported


class _Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_call_a_function_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "config": _Evil(str(marker))}, path)
    with pytest.raises(RecshrinkError, match=r"refused to load: the file's pickle names (posix|os)\.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RecshrinkError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(bad)


def test_recbole_saves_with_pickle_protocol_4(tmp_path, fake_recbole, monkeypatch):
    """RecBole's trainer saves with ``pickle_protocol=4`` (torch's weights-only unpickler reads
    only protocol 2); its Config also holds a ``torch.device``, numpy scalars and the class of
    its YAML loader."""
    import numpy as np

    yaml_mod = types.ModuleType("yaml.loader")

    class FullLoader:
        pass

    FullLoader.__module__, FullLoader.__qualname__ = "yaml.loader", "FullLoader"
    yaml_mod.FullLoader = FullLoader
    monkeypatch.setitem(sys.modules, "yaml", types.ModuleType("yaml"))
    monkeypatch.setitem(sys.modules, "yaml.loader", yaml_mod)
    cfg = fake_recbole()
    cfg.final_config_dict.update(device=torch.device("cpu"), best=np.float64(0.25))
    cfg.yaml_loader = FullLoader
    path = tmp_path / "SASRec-ml.pth"
    w = torch.randn(3, 2)
    torch.save({"config": cfg, "state_dict": {"item_embedding.weight": w}, "epoch": 2}, path,
               pickle_protocol=4)  # fmt: skip
    for name in [m for m in sys.modules if m.startswith(("recbole", "yaml"))]:
        monkeypatch.delitem(sys.modules, name)
    obj = read_checkpoint(path)
    assert torch.equal(obj["state_dict"]["item_embedding.weight"], w)
    final = obj["config"].get("final_config_dict")
    assert final["device"] == torch.device("cpu") and final["best"] == 0.25
    assert final["MODEL_TYPE"].args == (2,)
    assert obj["config"].get("yaml_loader").cls == "yaml.loader.FullLoader"
    assert not any(m.startswith(("recbole", "yaml")) for m in sys.modules)


def test_protocol_4_pickle_that_would_call_a_function_is_refused(tmp_path):
    path = tmp_path / "evil4.pth"
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "config": _Evil(str(marker))}, path,
               pickle_protocol=4)  # fmt: skip
    refused = r"refused to load: the file's pickle names (posix|os)\.system"
    with pytest.raises(RecshrinkError, match=refused):
        read_checkpoint(path)
    assert not marker.exists()
