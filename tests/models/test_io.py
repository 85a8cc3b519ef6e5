import json
import os
import pickle

import pytest
import torch

from recshrink.errors import RecshrinkError
from recshrink.models import build_model
from recshrink.models.io import load_model, save_model


@pytest.mark.parametrize("name", ["sasrec_base", "gru_small", "lstm_2layer", "cnn_small"])
def test_roundtrip(tmp_path, name):
    torch.manual_seed(0)
    m = build_model(name, 30, dim=16) if name != "lstm_2layer" else build_model(name, 30)
    save_model(m, tmp_path / "m", item_ids=[f"i{i}" for i in range(30)], data_fingerprint="abc",
               steps=[{"type": "train"}])
    m2, meta = load_model(tmp_path / "m")
    s = torch.tensor([[0, 3, 4, 5]])
    m.eval()
    assert torch.equal(m.scores(s), m2.scores(s))
    assert meta.item_ids[0] == "i0" and meta.data_fingerprint == "abc"
    assert meta.steps == [{"type": "train"}]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["params"] == m.num_params() and cfg["arch"] == m.arch
    assert not [p for p in os.listdir(tmp_path / "m") if ".tmp" in p]


def test_pt_state_dict_with_config(tmp_path):
    m = build_model("gru", 20, dim=8)
    torch.save({"config": {"arch": "gru", "num_items": 20, "builder_args": {"dim": 8}},
                "state_dict": m.state_dict()}, tmp_path / "m.pt")
    m2, meta = load_model(tmp_path / "m.pt")
    assert meta.arch == "gru" and m2.num_params() == m.num_params()
    s = torch.tensor([[1, 2, 3]])
    assert torch.equal(m.eval().scores(s), m2.scores(s))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARKER', '/tmp/never')}",))


def test_refuses_code_pickle(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"config": _Evil(), "state_dict": {}}, f)
    torch.save({"config": _Evil(), "state_dict": {}}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(RecshrinkError, match="refused|not a readable"):
            load_model(tmp_path / name)
    assert not marker.exists()


def test_mismatched_weights(tmp_path):
    m = build_model("gru", 20, dim=8)
    save_model(m, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["builder_args"]["dim"] = 16
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RecshrinkError, match="weights do not match"):
        load_model(tmp_path / "m")
    with pytest.raises(RecshrinkError, match="no such model"):
        load_model(tmp_path / "missing")
