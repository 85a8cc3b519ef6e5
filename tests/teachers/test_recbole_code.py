"""A RecBole model without a native conversion as a black-box teacher, rebuilt by RecBole's own
code (a stand-in ``recbole`` package here: RecBole itself lives in benchmarks/recbole/'s venv)."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from torch import nn

from recshrink.errors import RecshrinkError
from recshrink.export.backends import is_foreign, open_backend
from recshrink.teachers import open_teacher
from recshrink.teachers.protocol import ScoresTeacher
from tests.teachers.fake_recbole import forget, recbole_data_classes

N, D, L = 12, 8, 7


class ToyRec(nn.Module):
    """A RecBole-style model: built from ``(config, dataset)``, scored by ``full_sort_predict``
    on right-padded histories (its last item's embedding against the item table)."""

    def __init__(self, config, dataset) -> None:
        super().__init__()
        self.seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.len_field = config["ITEM_LIST_LENGTH_FIELD"]
        self.item_embedding = nn.Embedding(dataset.num(config["ITEM_ID_FIELD"]),
                                           config["hidden_size"], padding_idx=0)  # fmt: skip
        assert config["no_such_key"] is None  # RecBole's Config answers None
        # what CORE, SINE and FEARec read of their dataset at construction
        assert dataset.field2seqlen[self.seq_field] == config["MAX_ITEM_LIST_LENGTH"]
        assert dataset.item_num == dataset.num(config["ITEM_ID_FIELD"])
        assert len(dataset.inter_feat[config["ITEM_ID_FIELD"]]) == 0

    def full_sort_predict(self, interaction):
        seq, lens = interaction[self.seq_field], interaction[self.len_field]
        last = self.item_embedding(seq.gather(1, (lens - 1).unsqueeze(1)).squeeze(1))  # [B, D]
        return last @ self.item_embedding.weight.T  # [B, n_items]


def _save_checkpoint(path, monkeypatch, state):
    """A ``torch.save`` as RecBole's Trainer writes it (its Config pickled by class name)."""
    ModelType, Config = recbole_data_classes(monkeypatch)
    cfg = {"model": "ToyRec", "dataset": "toy", "MODEL_TYPE": ModelType.SEQUENTIAL,
           "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
           "ITEM_LIST_LENGTH_FIELD": "item_length", "MAX_ITEM_LIST_LENGTH": L, "hidden_size": D}
    torch.save({"config": Config(cfg), "state_dict": state, "epoch": 3}, path, pickle_protocol=4)
    forget(monkeypatch)


def _install_recbole(monkeypatch):
    """A stand-in for RecBole's ``get_model`` and ``Interaction``."""
    utils, inter = types.ModuleType("recbole.utils"), types.ModuleType("recbole.data.interaction")
    utils.get_model = {"ToyRec": ToyRec}.__getitem__
    inter.Interaction = dict
    for name, mod in (("recbole", types.ModuleType("recbole")), ("recbole.utils", utils),
                      ("recbole.data", types.ModuleType("recbole.data")),
                      ("recbole.data.interaction", inter)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    torch.manual_seed(0)
    emb = torch.randn(N + 1, D)
    path = tmp_path / "ToyRec-Dec-02.pth"
    _save_checkpoint(path, monkeypatch, {"item_embedding.weight": emb})
    return path, emb


def test_a_recbole_model_runs_through_recboles_code(toy, monkeypatch):
    path, emb = toy
    _install_recbole(monkeypatch)
    teacher, meta = open_teacher(path, N)
    assert isinstance(teacher, ScoresTeacher) and meta is None
    assert (teacher.arch, teacher.max_len, teacher.num_items) == ("recbole:ToyRec", L, N)
    h = torch.tensor([[0, 0, 0, 0, 3, 5, 9], [1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 11]])
    want = emb[h[:, -1]] @ emb.T  # the last item's row against the table, RecBole's indices
    torch.testing.assert_close(teacher.scores(h)[:, 1:], want[:, 1:], atol=1e-6, rtol=1e-6)
    assert teacher.digest() and "module.item_embedding.weight" in teacher.state_dict()
    assert is_foreign(path)
    runner = open_backend(path, num_items=N)  # the benchmark times it in PyTorch, as RecBole runs
    assert runner.name == "torch" and runner.info["teacher"] == "recbole:ToyRec"
    assert (runner.run(h.numpy(), 3)[1] != 0).all()


def test_an_id_sidecar_beside_the_checkpoint_translates_it(toy, monkeypatch):
    path, emb = toy
    _install_recbole(monkeypatch)
    data_ids = [f"i{k}" for k in range(1, N + 1)]
    theirs = list(reversed(data_ids))  # its index j holds the data's item N + 1 - j
    path.with_name(path.stem + ".items.json").write_text(json.dumps(theirs))
    teacher = open_teacher(path, N, data_ids)[0]
    h = torch.tensor([[0, 0, 0, 0, 0, 2, 3]])
    flip = torch.tensor([0, *range(N, 0, -1)])  # data id <-> its index
    want = emb[flip[h[:, -1]]] @ emb.T  # in its indices
    torch.testing.assert_close(teacher.scores(h)[:, 1:], want[:, flip[1:]], atol=1e-6, rtol=1e-6)


def test_without_recbole_the_error_names_the_extra(toy):
    path, _ = toy
    with pytest.raises(RecshrinkError, match=r"install RecBole \(pip install 'recshrink\[recbole\]'"):
        open_teacher(path, N)


def test_a_catalogue_recbole_cannot_load_is_one_line(toy, monkeypatch):
    path, _ = toy
    _install_recbole(monkeypatch)
    with pytest.raises(RecshrinkError, match="does not build from this checkpoint with 20 items") as e:
        open_teacher(path, 20)
    assert "\n" not in str(e.value)
