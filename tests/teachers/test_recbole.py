"""RecBole SASRec / GRU4Rec checkpoints become native models with RecBole's scores.

RecBole is not needed: the reference forward passes below are written from RecBole 1.2.1's
equations (``SASRec.forward`` with ``TransformerEncoder``, ``GRU4Rec.forward``), on RecBole's
own state-dict layout, fed right-padded histories and gathered at ``item_seq_len - 1``.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from recshrink.errors import RecshrinkError
from recshrink.export.backends import open_backend
from tests.teachers.fake_recbole import forget, recbole_data_classes
from recshrink.models import sasrec
from recshrink.models.io import load_model, save_model
from recshrink.teachers.checkpoint import Inert
from recshrink.teachers.recbole import from_recbole

N_ITEMS = 31  # RecBole's n_items: [PAD] + 30 items

ACT = {
    "gelu": lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "relu": F.relu,
    "swish": lambda x: x * torch.sigmoid(x),
}


# -- RecBole's layout and equations -------------------------------------------------------------
def recbole_sasrec_state(g, n_items, d, layers, inner, max_len) -> dict[str, torch.Tensor]:
    def r(*shape, s=0.3):
        return torch.randn(*shape, generator=g) * s

    def ln():
        return {"weight": 1.0 + r(d, s=0.1), "bias": r(d, s=0.1)}

    sd = {"item_embedding.weight": r(n_items, d, s=0.5),  # RecBole's init fills [PAD] too
          "position_embedding.weight": r(max_len, d, s=0.5)}  # fmt: skip
    sd.update({f"LayerNorm.{k}": v for k, v in ln().items()})
    for i in range(layers):
        p = f"trm_encoder.layer.{i}."
        shapes = {"multi_head_attention.query": (d, d), "multi_head_attention.key": (d, d),
                  "multi_head_attention.value": (d, d), "multi_head_attention.dense": (d, d),
                  "feed_forward.dense_1": (inner, d), "feed_forward.dense_2": (d, inner)}
        for name, (o, n) in shapes.items():
            sd[p + name + ".weight"], sd[p + name + ".bias"] = r(o, n), r(o, s=0.1)
        for name in ("multi_head_attention.LayerNorm", "feed_forward.LayerNorm"):
            sd.update({f"{p}{name}.{k}": v for k, v in ln().items()})
    return sd


def recbole_sasrec_scores(sd, cfg, item_seq, item_seq_len) -> torch.Tensor:
    """RecBole's SASRec.full_sort_predict on right-padded ``item_seq`` (eval mode)."""
    b, l = item_seq.shape
    d, h, eps = cfg["hidden_size"], cfg["n_heads"], cfg["layer_norm_eps"]
    hd = d // h
    act = ACT[cfg["hidden_act"]]

    def lin(name, x):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    def ln(name, x):
        return F.layer_norm(x, (d,), sd[name + ".weight"], sd[name + ".bias"], eps)

    x = sd["item_embedding.weight"][item_seq] + sd["position_embedding.weight"][torch.arange(l)]
    x = ln("LayerNorm", x)
    mask = (item_seq != 0)[:, None, None, :].expand(-1, -1, l, -1).tril()
    mask = torch.where(mask, 0.0, -10000.0)  # [B, 1, L, L]
    for i in range(cfg["n_layers"]):
        p = f"trm_encoder.layer.{i}."
        q = lin(p + "multi_head_attention.query", x).view(b, l, h, hd).permute(0, 2, 1, 3)
        k = lin(p + "multi_head_attention.key", x).view(b, l, h, hd).permute(0, 2, 3, 1)
        v = lin(p + "multi_head_attention.value", x).view(b, l, h, hd).permute(0, 2, 1, 3)
        att = (q @ k / math.sqrt(hd) + mask).softmax(dim=-1)
        ctx = (att @ v).permute(0, 2, 1, 3).reshape(b, l, d)
        x = ln(p + "multi_head_attention.LayerNorm", lin(p + "multi_head_attention.dense", ctx) + x)
        f = lin(p + "feed_forward.dense_2", act(lin(p + "feed_forward.dense_1", x)))
        x = ln(p + "feed_forward.LayerNorm", f + x)
    out = x.gather(1, (item_seq_len - 1).view(-1, 1, 1).expand(-1, -1, d)).squeeze(1)
    return out @ sd["item_embedding.weight"].T  # [B, n_items], [PAD] included


def recbole_gru4rec_state(g, n_items, e, hidden, layers) -> dict[str, torch.Tensor]:
    sd = {"item_embedding.weight": torch.randn(n_items, e, generator=g) * 0.5}
    for k in range(layers):
        inp = e if k == 0 else hidden
        sd[f"gru_layers.weight_ih_l{k}"] = torch.randn(3 * hidden, inp, generator=g) * 0.4
        sd[f"gru_layers.weight_hh_l{k}"] = torch.randn(3 * hidden, hidden, generator=g) * 0.4
    sd["dense.weight"] = torch.randn(e, hidden, generator=g) * 0.4
    sd["dense.bias"] = torch.randn(e, generator=g) * 0.1
    return sd


def recbole_gru4rec_scores(sd, cfg, item_seq, item_seq_len) -> torch.Tensor:
    """RecBole's GRU4Rec.full_sort_predict (``nn.GRU(bias=False)`` written out) on right padding."""
    b, l = item_seq.shape
    x = sd["item_embedding.weight"][item_seq]  # [B, L, E]
    hid = cfg["hidden_size"]
    for k in range(cfg["num_layers"]):
        w_ih, w_hh = sd[f"gru_layers.weight_ih_l{k}"], sd[f"gru_layers.weight_hh_l{k}"]
        h, outs = torch.zeros(b, hid), []
        for t in range(l):
            gi, gh = x[:, t] @ w_ih.T, h @ w_hh.T
            r = torch.sigmoid(gi[:, :hid] + gh[:, :hid])
            z = torch.sigmoid(gi[:, hid:2 * hid] + gh[:, hid:2 * hid])
            n = torch.tanh(gi[:, 2 * hid:] + r * gh[:, 2 * hid:])
            h = (1 - z) * n + z * h
            outs.append(h)
        x = torch.stack(outs, 1)  # [B, L, H]
    x = x @ sd["dense.weight"].T + sd.get("dense.bias", 0.0)
    out = x.gather(1, (item_seq_len - 1).view(-1, 1, 1).expand(-1, -1, x.shape[-1])).squeeze(1)
    return out @ sd["item_embedding.weight"].T


def histories(g, max_len, lens=(1, 3, 1, 7, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``item_seq [B, max_len]`` as RecBole feeds it, and ``item_seq_len``."""
    lens = list(lens) + [max_len]
    seq = torch.zeros(len(lens), max_len, dtype=torch.long)
    for i, n in enumerate(lens):
        seq[i, :n] = torch.randint(1, N_ITEMS, (n,), generator=g)
    return seq, torch.tensor(lens)


def left_padded(seq, lens, width) -> torch.Tensor:
    out = torch.zeros(len(lens), width, dtype=torch.long)
    for i, n in enumerate(lens.tolist()):
        out[i, width - n:] = seq[i, :n]
    return out


def checkpoint(cfg, state, epoch=4):
    config = Inert()
    config.__setstate__({"final_config_dict": cfg, "model": cfg["model"]})
    return {"config": config, "state_dict": state, "epoch": epoch, "other_parameter": None}


def sasrec_cfg(**kw):
    return {"model": "SASRec", "dataset": "toy", "n_layers": 2, "n_heads": 2, "hidden_size": 16,
            "inner_size": 24, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "MAX_ITEM_LIST_LENGTH": 9,
            "loss_type": "CE", **kw}  # fmt: skip


def gru4rec_cfg(**kw):
    return {"model": "GRU4Rec", "dataset": "toy", "embedding_size": 10, "hidden_size": 14,
            "num_layers": 1, "dropout_prob": 0.3, "MAX_ITEM_LIST_LENGTH": 9, **kw}  # fmt: skip


def _check_scores(model, ref, seq, lens, max_len):
    assert torch.isfinite(ref).all()
    # the same histories left-padded to the fixture's width and to the batch's longest history
    for width in (max_len, int(lens.max()), max_len + 3):
        with torch.no_grad():
            got = model.scores(left_padded(seq, lens, width))
        assert got.shape == ref.shape
        assert torch.isinf(got[:, 0]).all()
        torch.testing.assert_close(got[:, 1:], ref[:, 1:], atol=1e-5, rtol=0)


# -- scores -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {},
    {"n_layers": 1, "n_heads": 3, "hidden_size": 12, "inner_size": 20, "hidden_act": "relu",
     "layer_norm_eps": 1e-5},
    {"n_heads": 4, "hidden_act": "swish"},
], ids=["gelu-2layers", "relu-1layer", "swish-4heads"])  # fmt: skip
def test_sasrec_scores_match_recbole(kw):
    g = torch.Generator().manual_seed(0)
    cfg = sasrec_cfg(**kw)
    max_len = cfg["MAX_ITEM_LIST_LENGTH"]
    sd = recbole_sasrec_state(g, N_ITEMS, cfg["hidden_size"], cfg["n_layers"], cfg["inner_size"],
                              max_len)  # fmt: skip
    seq, lens = histories(g, max_len)
    ref = recbole_sasrec_scores(sd, cfg, seq, lens)
    model, info = from_recbole(checkpoint(cfg, sd))
    assert not model.training
    assert info["model"] == "SASRec" and info["dataset"] == "toy" and info["epoch"] == 4
    assert info["n_items"] == N_ITEMS and model.num_items == N_ITEMS - 1
    assert info["hyperparameters"]["hidden_act"] == cfg["hidden_act"]
    assert info["hyperparameters"]["MAX_ITEM_LIST_LENGTH"] == max_len
    _check_scores(model, ref, seq, lens, max_len)


@pytest.mark.parametrize("kw,drop_bias", [
    ({}, False),
    ({"embedding_size": 8, "hidden_size": 8, "num_layers": 2}, False),
    ({"num_layers": 3}, True),
], ids=["1layer", "2layers-square", "3layers-dense-without-bias"])  # fmt: skip
def test_gru4rec_scores_match_recbole(kw, drop_bias):
    g = torch.Generator().manual_seed(1)
    cfg = gru4rec_cfg(**kw)
    sd = recbole_gru4rec_state(g, N_ITEMS, cfg["embedding_size"], cfg["hidden_size"],
                               cfg["num_layers"])  # fmt: skip
    if drop_bias:
        del sd["dense.bias"]
    seq, lens = histories(g, cfg["MAX_ITEM_LIST_LENGTH"])
    ref = recbole_gru4rec_scores(sd, cfg, seq, lens)
    model, info = from_recbole(checkpoint(cfg, sd))
    assert info["model"] == "GRU4Rec" and info["n_items"] == N_ITEMS and info["arch"] == "gru"
    assert model.rnn.bias is False and (model.proj.bias is None) == drop_bias
    _check_scores(model, ref, seq, lens, cfg["MAX_ITEM_LIST_LENGTH"])


def test_converted_models_save_and_reload(tmp_path):
    g = torch.Generator().manual_seed(2)
    cfg = sasrec_cfg()
    sd = recbole_sasrec_state(g, N_ITEMS, 16, 2, 24, 9)
    model, info = from_recbole(checkpoint(cfg, sd))
    assert info["builder_args"] == {
        "dim": 16, "layers": 2, "heads": 2, "max_len": 9, "dropout": 0.5, "ffn_dim": 24,
        "scale_positions": False, "norm": "post", "emb_norm": True, "final_norm": False,
        "ln_eps": 1e-12, "positions": "start", "scale_items": False,
    }  # fmt: skip
    gcfg = gru4rec_cfg(num_layers=2)
    gmodel, _ = from_recbole(checkpoint(gcfg, recbole_gru4rec_state(g, N_ITEMS, 10, 14, 2)))
    seq = left_padded(*histories(g, 9), 9)
    for i, m in enumerate((model, gmodel)):
        back, _ = load_model(save_model(m, tmp_path / str(i)))
        with torch.no_grad():
            torch.testing.assert_close(back.eval().scores(seq), m.scores(seq), atol=0, rtol=0)


def test_default_layouts_are_unchanged():
    assert set(sasrec(10).builder_args) == {"dim", "layers", "heads", "max_len", "dropout",
                                            "ffn_dim", "scale_positions"}  # fmt: skip
    m = from_recbole(checkpoint(gru4rec_cfg(), recbole_gru4rec_state(
        torch.Generator().manual_seed(3), N_ITEMS, 10, 14, 1)))[0]
    assert m.builder_args["bias"] is False and "proj_bias" not in m.builder_args


def test_read_from_a_pth_file_without_recbole(tmp_path, monkeypatch):
    """A real ``torch.save`` of a RecBole-like Config object, read back by path."""
    ModelType, Config = recbole_data_classes(monkeypatch)
    g = torch.Generator().manual_seed(4)
    cfg = gru4rec_cfg(MODEL_TYPE=ModelType.SEQUENTIAL)
    sd = recbole_gru4rec_state(g, N_ITEMS, 10, 14, 1)
    path = tmp_path / "GRU4Rec-toy.pth"
    torch.save({"config": Config(cfg), "state_dict": sd, "epoch": 7}, path,
               pickle_protocol=4)  # as RecBole's trainer saves  # fmt: skip
    forget(monkeypatch)
    model, info = from_recbole(path)
    assert info["epoch"] == 7 and "recbole" not in sys.modules
    seq, lens = histories(g, 9)
    _check_scores(model, recbole_gru4rec_scores(sd, cfg, seq, lens), seq, lens, 9)
    runner = open_backend(path)  # benchmark and recommend serve the .pth file as it is
    assert (runner.name, runner.num_items) == ("torch", model.num_items)
    h = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    torch.testing.assert_close(runner.scorer(h), model.scores(h), atol=0, rtol=0)


# -- errors -------------------------------------------------------------------------------------
def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_wrong_keys_and_shapes_are_one_line_errors():
    g = torch.Generator().manual_seed(5)
    cfg = sasrec_cfg()
    sd = recbole_sasrec_state(g, N_ITEMS, 16, 2, 24, 9)
    renamed = {k.replace("trm_encoder.layer", "encoder.layers"): v for k, v in sd.items()}
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint(cfg, renamed))
    msg = _one_line(e)
    assert "SASRec" in msg and "missing trm_encoder.layer.0." in msg
    assert "unexpected encoder.layers." in msg
    with pytest.raises(RecshrinkError) as e:  # config says 3 layers, weights hold 2
        from_recbole(checkpoint(sasrec_cfg(n_layers=3), sd))
    assert "missing trm_encoder.layer.2." in _one_line(e)
    bad = dict(sd, **{"trm_encoder.layer.0.feed_forward.dense_1.weight": torch.zeros(30, 16)})
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint(cfg, bad))
    assert "dense_1.weight has shape (30, 16), expected (24, 16)" in _one_line(e)
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint(sasrec_cfg(hidden_act="mish"), sd))
    assert "hidden_act 'mish'" in _one_line(e)
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint(sasrec_cfg(n_heads=5), sd))
    assert "not divisible" in _one_line(e)
    no_heads = {k: v for k, v in sasrec_cfg().items() if k != "n_heads"}
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint(no_heads, sd))
    assert "config lacks n_heads" in _one_line(e)
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint(gru4rec_cfg(), {"item_embedding.weight": torch.zeros(5, 10)}))
    assert "no 'dense.weight'" in _one_line(e)


def test_other_models_and_non_checkpoints_are_refused():
    with pytest.raises(RecshrinkError) as e:
        from_recbole(checkpoint({"model": "BERT4Rec", "dataset": "toy"}, {}))
    msg = _one_line(e)
    assert "'BERT4Rec'" in msg and "black-box teacher through RecBole" in msg
    with pytest.raises(RecshrinkError, match="not a RecBole checkpoint"):
        from_recbole({"state_dict": {}})
    with pytest.raises(RecshrinkError, match="not a RecBole checkpoint"):
        from_recbole([1, 2])


# -- import: detection, item ids, the CLI -------------------------------------------------------
def _recbole_pth(tmp_path, monkeypatch, sd, cfg, name="GRU4Rec-toy.pth"):
    """A torch.save of a RecBole-like Config object (pickle protocol 4, as RecBole's Trainer)."""
    _, Config = recbole_data_classes(monkeypatch)
    path = tmp_path / name
    torch.save({"config": Config(cfg), "state_dict": sd, "epoch": 3}, path, pickle_protocol=4)
    forget(monkeypatch)
    return path


def _inter_file(tmp_path, n_items: int) -> "Path":
    """RecBole atomic interactions over items "i1".."i<n>", first seen in that order."""
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    t = 0
    for u in range(12):
        for k in range(6):
            t += 1
            lines.append(f"u{u}\ti{(u * 3 + k) % n_items + 1}\t{t}")
    path = tmp_path / "toy.inter"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_detects_recbole_and_maps_item_ids(tmp_path, monkeypatch):
    from recshrink import evaluate, import_model, load_data
    from recshrink.teachers import is_recbole_checkpoint, open_model, open_teacher

    g = torch.Generator().manual_seed(5)
    n = N_ITEMS - 1
    sd = recbole_gru4rec_state(g, N_ITEMS, 10, 14, 1)
    path = _recbole_pth(tmp_path, monkeypatch, sd, gru4rec_cfg())
    data = load_data(_inter_file(tmp_path, n))
    assert data.num_items == n and data.item_ids[:3] == ["i1", "i2", "i3"]  # not i1, i10, i11
    assert is_recbole_checkpoint(path) and not is_recbole_checkpoint(_inter_file(tmp_path, n))
    direct, meta = open_model(path)
    assert meta.extra["recbole"]["model"] == "GRU4Rec"
    res = import_model(path, data, out=tmp_path / "native")
    native, nmeta = load_model(tmp_path / "native")
    assert nmeta.item_ids == data.item_ids and nmeta.steps[0]["framework"] == "recbole"
    seq = torch.tensor([[0, 0, 3, 5, 2], [0, 0, 0, 0, 9]])
    with torch.no_grad():
        assert torch.allclose(native.scores(seq), direct.scores(seq), atol=1e-6)
    # an explicit id list: the model's item index k is the data's item ids[k - 1]
    ids = list(reversed(data.item_ids))
    moved = import_model(path, data, item_ids=ids).model
    with torch.no_grad():
        a, b = moved.scores(torch.tensor([[0, 1]])), direct.scores(torch.tensor([[0, n]]))
    col = {raw: i for i, raw in enumerate(ids, start=1)}  # the data's item j -> model index
    assert torch.allclose(a[0, 1:], b[0, [col[x] for x in data.item_ids]], atol=1e-6)
    m = evaluate(res.model, data, mask_history=False)
    assert 0.0 <= m["ndcg@10"] <= 1.0 and m["count"] == 12
    # the same id list as a sidecar beside the .pth: distill/evaluate/benchmark read it
    sidecar = path.with_name(path.stem + ".items.json")
    sidecar.write_text(json.dumps(ids))
    opened = open_teacher(path, data.num_items, data.item_ids)[0]
    with torch.no_grad():
        torch.testing.assert_close(opened.scores(seq), moved.scores(seq), atol=0, rtol=0)


def test_import_refuses_mismatches_in_one_line(tmp_path, monkeypatch):
    from recshrink import import_model, load_data, synthetic

    from cli_helpers import assert_user_error, invoke

    g = torch.Generator().manual_seed(6)
    path = _recbole_pth(tmp_path, monkeypatch, recbole_gru4rec_state(g, N_ITEMS, 10, 14, 1),
                        gru4rec_cfg())  # fmt: skip
    small = load_data(_inter_file(tmp_path, N_ITEMS - 5))
    with pytest.raises(RecshrinkError, match=r"model has 30 items but the data .* has 26"):
        import_model(path, small)
    data = load_data(_inter_file(tmp_path, N_ITEMS - 1))
    with pytest.raises(RecshrinkError, match="not in the model's id list"):
        import_model(path, data, item_ids=[f"x{i}" for i in range(N_ITEMS - 1)])
    with pytest.raises(RecshrinkError, match="give item_ids"):
        import_model(path, synthetic(users=50, items=N_ITEMS - 1, categories=5))
    out = tmp_path / "cli"
    assert_user_error(invoke("import", "--model", path, "--data", tmp_path / "toy.inter",
                             "--out", out, "--item-ids", tmp_path / "missing.json"),
                      "missing.json")  # fmt: skip
    assert not out.exists()
    ok = invoke("import", "--model", path, "--data", tmp_path / "toy.inter", "--out", out)
    assert ok.exit_code == 0, ok.output
    assert "imported GRU4Rec" in ok.output and (out / "model.safetensors").is_file()
