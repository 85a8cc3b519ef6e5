"""RecBole checkpoints (SASRec, GRU4Rec) as native recshrink models.

:func:`from_recbole` takes what :func:`recshrink.teachers.checkpoint.read_checkpoint` returns
for a RecBole ``.pth`` (``{"config": Inert(Config), "state_dict": {...}, ...}``), renames the
weights to recshrink's modules and builds the model with the layout options that reproduce
RecBole's forward pass:

- SASRec: post-LN blocks with biases, a LayerNorm on the summed item + position embeddings,
  no final LayerNorm, unscaled item embeddings, RecBole's ``layer_norm_eps`` and
  ``hidden_act``, positions counted from the first item (RecBole right-pads its histories;
  recshrink reads the same history left-padded and gives the same scores).
- GRU4Rec: a GRU without biases and the ``dense`` projection (hidden -> embedding size).

Item indices stay RecBole's internal ones: RecBole index ``i`` is recshrink id ``i`` and the
padding index 0 is shared (``info["n_items"]`` counts it, ``model.num_items`` does not). The
padding row of the item table is zeroed (recshrink's contract); it changes no real item's score,
and score column 0 is ``-inf`` in recshrink where RecBole scores [PAD] like any item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel
from recshrink.models.rnn import gru
from recshrink.models.sasrec import ACTIVATIONS, sasrec
from recshrink.teachers.checkpoint import Inert, read_checkpoint

#: Hyperparameters reported in ``info`` besides each model's own (when the config has them).
TRAINING_KEYS = ("MAX_ITEM_LIST_LENGTH", "loss_type", "learning_rate", "train_batch_size",
                 "epochs", "seed", "train_neg_sample_args")  # fmt: skip

_SASREC_KEYS = ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob",
                "attn_dropout_prob", "hidden_act", "layer_norm_eps")  # fmt: skip
_GRU4REC_KEYS = ("embedding_size", "hidden_size", "num_layers", "dropout_prob")

_SASREC_LAYER = {  # RecBole module in trm_encoder.layer.{i} -> recshrink module in blocks.{i}
    "multi_head_attention.query": "attn.q",
    "multi_head_attention.key": "attn.k",
    "multi_head_attention.value": "attn.v",
    "multi_head_attention.dense": "attn.out",
    "multi_head_attention.LayerNorm": "ln1",
    "feed_forward.dense_1": "ffn.fc1",
    "feed_forward.dense_2": "ffn.fc2",
    "feed_forward.LayerNorm": "ln2",
}


def plain_value(value: Any) -> Any:
    """A config value as plain data (a pickled enum becomes ``"Name(args)"``)."""
    if isinstance(value, Inert):
        args = ", ".join(map(repr, value.args))
        return f"{value.cls.rsplit('.', 1)[-1]}({args})"
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return value


def checkpoint_parts(obj: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and RecBole's ``final_config_dict`` of a read checkpoint."""
    if not isinstance(obj, Mapping) or "state_dict" not in obj or "config" not in obj:
        got = sorted(map(str, obj))[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise RecshrinkError(f"not a RecBole checkpoint: expected a dict with 'config' and "
                             f"'state_dict', got {got}")  # fmt: skip
    state, cfg = obj["state_dict"], obj["config"]
    if isinstance(cfg, Inert):
        cfg = cfg.get("final_config_dict")
    elif isinstance(cfg, Mapping) and "final_config_dict" in cfg:
        cfg = cfg["final_config_dict"]
    if not isinstance(cfg, Mapping) or not isinstance(state, Mapping):
        raise RecshrinkError("not a RecBole checkpoint: its 'config' holds no final_config_dict "
                             "or its 'state_dict' is not a mapping")  # fmt: skip
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise RecshrinkError(f"RecBole checkpoint: state_dict entry {bad[0]!r} is not a tensor")
    return dict(state), dict(cfg)


def _need(cfg: dict, keys: tuple[str, ...], model: str) -> dict:
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise RecshrinkError(f"RecBole {model} checkpoint: its config lacks {', '.join(missing)}")
    return {k: cfg[k] for k in keys}


def _shape(state: dict, key: str, model: str) -> tuple[int, ...]:
    if key not in state:
        raise RecshrinkError(f"RecBole {model} checkpoint: state_dict has no {key!r} (keys: "
                             f"{', '.join(sorted(state)[:4])}, ...)")  # fmt: skip
    return tuple(state[key].shape)


def _sasrec(state: dict, cfg: dict) -> tuple[SeqRecModel, dict[str, str], dict]:
    hp = _need(cfg, _SASREC_KEYS, "SASRec")
    n_items, dim = _shape(state, "item_embedding.weight", "SASRec")
    max_len, _ = _shape(state, "position_embedding.weight", "SASRec")
    act = str(hp["hidden_act"])
    if act not in ACTIVATIONS:
        raise RecshrinkError(f"RecBole SASRec checkpoint: hidden_act {act!r} has no recshrink "
                             f"equivalent (supported: {', '.join(ACTIVATIONS)})")  # fmt: skip
    layers = int(hp["n_layers"])
    model = sasrec(
        n_items - 1, dim=dim, layers=layers, heads=int(hp["n_heads"]), max_len=max_len,
        dropout=float(hp["hidden_dropout_prob"]), ffn_dim=int(hp["inner_size"]), norm="post",
        emb_norm=True, final_norm=False, ln_eps=float(hp["layer_norm_eps"]), act=act,
        positions="start", scale_items=False,
    )  # fmt: skip
    names = {"item_embedding.weight": "item_emb.weight",
             "position_embedding.weight": "pos_emb.weight",
             "LayerNorm.weight": "emb_ln.weight", "LayerNorm.bias": "emb_ln.bias"}  # fmt: skip
    for i in range(layers):
        for src, dst in _SASREC_LAYER.items():
            for p in ("weight", "bias"):
                names[f"trm_encoder.layer.{i}.{src}.{p}"] = f"blocks.{i}.{dst}.{p}"
    return model, names, hp


def _gru4rec(state: dict, cfg: dict) -> tuple[SeqRecModel, dict[str, str], dict]:
    hp = _need(cfg, _GRU4REC_KEYS, "GRU4Rec")
    n_items, dim = _shape(state, "item_embedding.weight", "GRU4Rec")
    _shape(state, "dense.weight", "GRU4Rec")
    layers = int(hp["num_layers"])
    bias = "gru_layers.bias_ih_l0" in state
    proj_bias = "dense.bias" in state
    model = gru(
        n_items - 1, dim=dim, hidden=int(hp["hidden_size"]), layers=layers,
        max_len=int(cfg.get("MAX_ITEM_LIST_LENGTH", 50)), dropout=float(hp["dropout_prob"]),
        project=True, bias=bias, proj_bias=proj_bias,
    )  # fmt: skip
    names = {"item_embedding.weight": "item_emb.weight", "dense.weight": "proj.weight"}
    if proj_bias:
        names["dense.bias"] = "proj.bias"
    kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    for k in range(layers):
        for kind in kinds:
            names[f"gru_layers.{kind}_l{k}"] = f"rnn.{kind}_l{k}"
    return model, names, hp


#: RecBole model name -> converter (the model, RecBole key -> recshrink key, hyperparameters).
CONVERTERS: dict[str, Callable[[dict, dict], tuple[SeqRecModel, dict[str, str], dict]]] = {
    "SASRec": _sasrec,
    "GRU4Rec": _gru4rec,
}


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def _load(model: SeqRecModel, state: dict, names: dict[str, str], name: str) -> None:
    missing = [k for k in names if k not in state]
    extra = [k for k in state if k not in names]
    if missing or extra:
        parts = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"unexpected {_few(extra)}"] if extra else [])  # fmt: skip
        raise RecshrinkError(f"RecBole {name} checkpoint: state_dict does not match the layout "
                             f"its config describes: {'; '.join(parts)}")  # fmt: skip
    own = model.state_dict()
    mapped = {}
    for src, dst in names.items():
        t = state[src]
        if tuple(t.shape) != tuple(own[dst].shape):
            raise RecshrinkError(f"RecBole {name} checkpoint: {src} has shape {tuple(t.shape)}, "
                                 f"expected {tuple(own[dst].shape)} from its config")  # fmt: skip
        mapped[dst] = t.detach().to(own[dst].dtype)
    mapped["item_emb.weight"] = mapped["item_emb.weight"].clone()
    mapped["item_emb.weight"][0] = 0.0  # recshrink's padding row (column 0 scores -inf anyway)
    model.load_state_dict(mapped, strict=True)


def reorder_items(model: SeqRecModel, order: list[int]) -> None:
    """Move a native model's item-table rows so that row ``i`` holds the data's item ``i``
    (``order[i - 1]`` is that item's row in the foreign model; from
    :func:`~recshrink.teachers.protocol.item_order`).

    Raises:
        RecshrinkError: The model has no plain item table.
    """
    emb = getattr(model, "item_emb", None)
    if not isinstance(emb, torch.nn.Embedding):
        raise RecshrinkError(f"{model.arch}: no plain item table to reorder")
    with torch.no_grad():
        emb.weight.copy_(emb.weight[torch.tensor([0, *order])].clone())


def from_recbole(obj: Any) -> tuple[SeqRecModel, dict]:
    """A native recshrink model from a RecBole checkpoint (SASRec or GRU4Rec).

    Args:
        obj: What :func:`~recshrink.teachers.checkpoint.read_checkpoint` returns for the
            ``.pth`` file (or the file's path, read with it).

    Returns:
        ``(model, info)``: the model in eval mode, scoring a left-padded history as RecBole scores
        it right-padded (columns ``1..n_items - 1``; RecBole's internal item indices), and
        ``info`` with ``model``, ``dataset``, ``n_items`` (RecBole's, [PAD] included),
        ``num_items`` (recshrink's N), ``epoch``, ``hyperparameters``, ``arch`` and
        ``builder_args``.

    Raises:
        RecshrinkError: Not a RecBole checkpoint, a RecBole model other than SASRec/GRU4Rec, or
            weights that do not match the layout its config describes.
    """
    if isinstance(obj, (str, Path)):
        obj = read_checkpoint(obj)
    state, cfg = checkpoint_parts(obj)
    name = plain_value(cfg.get("model"))
    if name not in CONVERTERS:
        raise RecshrinkError(
            f"RecBole model {name!r} has no native recshrink equivalent (only "
            f"{', '.join(CONVERTERS)} convert, so it cannot be pruned, quantized or exported); "
            "evaluate, distill and benchmark run it as a black-box teacher through RecBole's "
            "own code where RecBole is installed"
        )
    try:
        model, names, hp = CONVERTERS[name](state, cfg)
    except (TypeError, ValueError) as exc:
        raise RecshrinkError(f"RecBole {name} checkpoint: {exc}") from None
    _load(model, state, names, name)
    info = {
        "model": name,
        "dataset": plain_value(cfg.get("dataset")),
        "n_items": model.num_items + 1,
        "num_items": model.num_items,
        "epoch": plain_value(obj.get("epoch")),
        "hyperparameters": plain_value({**hp, **{k: cfg[k] for k in TRAINING_KEYS if k in cfg}}),
        "arch": model.arch,
        "builder_args": dict(model.builder_args),
    }
    return model.eval(), info
