"""Structured pruning on Torch-Pruning's dependency graph, with our own GRU/LSTM pruner.

What is pruned (the model width D and the item table are kept, so scores stay comparable):

- SASRec: feed-forward channels (``fc1`` outputs with ``fc2`` inputs) and whole attention heads
  (the same channels of the separate q/k/v projections and of the output projection's inputs);
- GRU/LSTM: the recurrent hidden size of every layer (:class:`RNNHiddenPruner`, registered with
  Torch-Pruning as a customized pruner: it has no GRU pruner and its LSTM pruner fails), with the
  projection to D that follows it;
- CNN: the inner channels of each residual block.

Importance is the L2 magnitude or the first-order Taylor score ``|w * dL/dw|`` (from a few
training batches), summed over every weight the dependency graph couples to a channel. A ratio is
one global number or per module by dotted-name prefix (``{"blocks.1.ffn": 0.6}``). Pruning can
run in several steps, each followed by recovery training (by default distillation from the
unpruned model): see :func:`prune`.

Unstructured magnitude sparsity and 2:4 semi-structured sparsity are offered too; they keep every
shape, so they save nothing in size or speed with dense kernels (the report says so).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass as plain_dataclass
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from recshrink.models.base import SeqRecModel

Sparsity = Literal["structured", "unstructured", "2:4"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PruneConfig:
    """How to prune (validated on construction).

    Attributes:
        ratio: Fraction of the channels of every prunable unit to remove (0 <= ratio < 1).
        layers: Per-module ratios by dotted module-name prefix, overriding ``ratio``
            (the longest matching prefix wins), e.g. ``{"blocks.1.ffn": 0.6}``.
        importance: ``"magnitude"`` (L2) or ``"taylor"`` (first order, from training batches).
        targets: Which units to prune: ``"ffn"`` and ``"heads"`` (SASRec), ``"hidden"``
            (GRU/LSTM), ``"channels"`` (CNN). Units of other architectures are ignored.
        steps: Prune in this many equal steps (each followed by recovery when training is given).
        recover: Recovery after each step: ``"distill"`` from the unpruned model, ``"finetune"``
            on the ground truth, or ``"none"``.
        taylor_batches: Training batches whose gradients feed Taylor importance.
        sparsity: ``"structured"`` (channels removed), ``"unstructured"`` (smallest weights
            zeroed) or ``"2:4"`` (two of every four consecutive weights zeroed).
    """

    ratio: float = Field(0.5, ge=0.0, lt=1.0)
    layers: dict[str, float] = Field(default_factory=dict)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    targets: tuple[Literal["ffn", "heads", "hidden", "channels"], ...] = (
        "ffn", "heads", "hidden", "channels",
    )  # fmt: skip
    steps: int = Field(1, ge=1, le=20)
    recover: Literal["distill", "finetune", "none"] = "distill"
    taylor_batches: int = Field(8, ge=1)
    sparsity: Sparsity = "structured"

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: dict[str, float]) -> dict[str, float]:
        for name, r in v.items():
            if not 0.0 <= r < 1.0:
                raise ValueError(f"ratio of {name!r} must be in [0, 1), got {r}")
        return v

    def step(self) -> dict:
        """The step record stored with the pruned model."""
        rec = {"type": "prune", "ratio": self.ratio, "importance": self.importance,
               "sparsity": self.sparsity, "steps": self.steps, "recover": self.recover}  # fmt: skip
        if self.layers:
            rec["layers"] = dict(self.layers)
        return rec


# -- our pruner for recurrent layers ------------------------------------------------------------
def _gates(layer: nn.RNNBase) -> int:
    return 4 if isinstance(layer, nn.LSTM) else 3


class RNNHiddenPruner:
    """Torch-Pruning pruning function for the hidden size of ``nn.GRU``/``nn.LSTM`` (any layers).

    Out-channels are the hidden units, pruned in every layer at once (PyTorch RNNs share one
    hidden size): the gate rows of ``weight_ih``/``weight_hh``/biases, the columns of
    ``weight_hh`` and of the next layer's ``weight_ih``. In-channels are the input features of
    the first layer. Bidirectional and ``proj_size`` RNNs are refused.
    """

    TARGET_MODULES = (nn.GRU, nn.LSTM)

    def __new__(cls):  # a real BasePruningFunc subclass, created lazily (torch_pruning import)
        import torch_pruning as tp

        class _Pruner(tp.pruner.function.BasePruningFunc):
            TARGET_MODULES = cls.TARGET_MODULES

            def check(self, layer, idxs, to_output):
                if layer.bidirectional or getattr(layer, "proj_size", 0):
                    raise ValueError("bidirectional or projected RNNs cannot be pruned")

            def prune_out_channels(self, layer: nn.RNNBase, idxs: list[int]) -> nn.RNNBase:
                self.check(layer, idxs, True)
                h = layer.hidden_size
                keep = torch.tensor(sorted(set(range(h)) - set(int(i) for i in idxs)))
                rows = torch.cat([g * h + keep for g in range(_gates(layer))])
                for l in range(layer.num_layers):
                    w_ih = getattr(layer, f"weight_ih_l{l}").data[rows]  # [G*H', in]
                    if l > 0:
                        w_ih = w_ih[:, keep]
                    w_hh = getattr(layer, f"weight_hh_l{l}").data[rows][:, keep]  # [G*H', H']
                    setattr(layer, f"weight_ih_l{l}", nn.Parameter(w_ih.contiguous()))
                    setattr(layer, f"weight_hh_l{l}", nn.Parameter(w_hh.contiguous()))
                    if layer.bias:
                        for b in ("ih", "hh"):
                            old = getattr(layer, f"bias_{b}_l{l}").data
                            setattr(layer, f"bias_{b}_l{l}", nn.Parameter(old[rows].contiguous()))
                layer.hidden_size = len(keep)
                layer._init_flat_weights()
                return layer

            def prune_in_channels(self, layer: nn.RNNBase, idxs: list[int]) -> nn.RNNBase:
                self.check(layer, idxs, False)
                keep = torch.tensor(sorted(set(range(layer.input_size)) - set(int(i) for i in idxs)))
                w = layer.weight_ih_l0.data[:, keep]
                layer.weight_ih_l0 = nn.Parameter(w.contiguous())
                layer.input_size = len(keep)
                layer._init_flat_weights()
                return layer

            def get_out_channels(self, layer: nn.RNNBase) -> int:
                return layer.hidden_size

            def get_in_channels(self, layer: nn.RNNBase) -> int:
                return layer.input_size

        return _Pruner()


# -- prunable units -----------------------------------------------------------------------------
@plain_dataclass
class Unit:
    """A set of channels pruned together: a dependency-graph root and its granularity.

    Attributes:
        name: Dotted module name used for per-layer ratios (e.g. ``blocks.0.ffn``).
        kind: ``"ffn"``, ``"heads"``, ``"hidden"`` or ``"channels"``.
        root: The module whose out-channels root the group.
        group: Channels per pruning decision (head width for heads, else 1).
        attn: The attention module whose head count follows (heads only).
    """

    name: str
    kind: str
    root: nn.Module
    group: int = 1
    attn: nn.Module | None = None

    def channels(self) -> int:
        if isinstance(self.root, nn.RNNBase):
            return self.root.hidden_size
        if isinstance(self.root, nn.Conv1d):
            return self.root.out_channels
        return self.root.out_features


def prunable_units(model: SeqRecModel, targets: Iterable[str]) -> list[Unit]:
    """The units of ``model`` whose kind is in ``targets``."""
    targets = set(targets)
    units: list[Unit] = []
    if model.arch == "sasrec":
        for i, blk in enumerate(model.blocks):
            if "heads" in targets:
                units.append(Unit(f"blocks.{i}.attn", "heads", blk.attn.q, blk.attn.head_dim,
                                  blk.attn))  # fmt: skip
            if "ffn" in targets:
                units.append(Unit(f"blocks.{i}.ffn", "ffn", blk.ffn.fc1))
    elif model.arch in ("gru", "lstm"):
        if "hidden" in targets:
            units.append(Unit("rnn", "hidden", model.rnn))
    elif model.arch == "cnn":
        if "channels" in targets:
            for i, blk in enumerate(model.blocks):
                units.append(Unit(f"blocks.{i}", "channels", blk.conv1.conv))
    return units


def unit_ratio(name: str, cfg: PruneConfig) -> float:
    """The ratio for a unit: the longest ``cfg.layers`` prefix matching its name, else global."""
    best, ratio = -1, cfg.ratio
    for prefix, r in cfg.layers.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, ratio = len(prefix), r
    return ratio


# -- importance ---------------------------------------------------------------------------------
def _score(p: torch.Tensor, taylor: bool) -> torch.Tensor:
    if taylor:
        if p.grad is None:
            return torch.zeros_like(p)
        return (p.detach() * p.grad.detach()).abs()
    return p.detach() ** 2


def _rnn_scores(layer: nn.RNNBase, out: bool, taylor: bool) -> torch.Tensor:
    if not out:
        return _score(layer.weight_ih_l0, taylor).sum(0)  # [in]
    h, g = layer.hidden_size, _gates(layer)
    s = torch.zeros(h)
    for l in range(layer.num_layers):
        for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if layer.bias else ()):
            w = _score(getattr(layer, f"{name}_l{l}"), taylor)
            w = w.reshape(g, h, -1) if w.dim() == 2 else w.reshape(g, h, 1)
            s += w.sum(dim=(0, 2))
        s += _score(getattr(layer, f"weight_hh_l{l}"), taylor).sum(0)  # recurrent inputs
        if l + 1 < layer.num_layers:
            s += _score(getattr(layer, f"weight_ih_l{l + 1}"), taylor).sum(0)
    return s


def _module_scores(module: nn.Module, out: bool, n: int, taylor: bool) -> torch.Tensor | None:
    """Per-channel importance of one module's out- or in-channels (None: not a weighted layer)."""
    if isinstance(module, nn.RNNBase):
        s = _rnn_scores(module, out, taylor)
    elif isinstance(module, (nn.Linear, nn.Conv1d)):
        w = _score(module.weight, taylor)  # Linear [out, in], Conv1d [out, in, k]
        s = w.flatten(1).sum(1) if out else w.transpose(0, 1).flatten(1).sum(1)
        if out and module.bias is not None:
            s = s + _score(module.bias, taylor)
    elif isinstance(module, nn.LayerNorm) and module.weight is not None:
        s = _score(module.weight, taylor) + _score(module.bias, taylor)
    else:
        return None
    return s if s.numel() == n else None


def group_importance(group, n: int, taylor: bool) -> torch.Tensor:
    """Importance ``[n]`` of the root channels of a Torch-Pruning group (summed over members)."""
    total = torch.zeros(n)
    seen: set[tuple[int, bool]] = set()
    for dep, _ in group:
        module = dep.target.module
        out = dep.handler.__name__.endswith("out_channels")
        if (id(module), out) in seen:
            continue
        seen.add((id(module), out))
        s = _module_scores(module, out, n, taylor)
        if s is not None:
            total += s
    return total


def taylor_gradients(model: SeqRecModel, batches: Iterable[dict],
                     loss_fn: Callable[[SeqRecModel, dict], torch.Tensor]) -> int:  # fmt: skip
    """Accumulate gradients of ``loss_fn`` over ``batches`` on ``model`` (for Taylor importance).

    Returns:
        The number of batches used.
    """
    model.train()
    model.zero_grad(set_to_none=True)
    n = 0
    for batch in batches:
        loss_fn(model, batch).backward()
        n += 1
    model.eval()
    return n


# -- structured pruning -------------------------------------------------------------------------
def _dependency_graph(model: SeqRecModel):
    import torch_pruning as tp

    rnn_pruner = RNNHiddenPruner()
    example = torch.randint(1, model.num_items + 1, (2, min(model.max_len, 8)))
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():  # shape inference warns on RNN graphs; groups are checked
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=example, forward_fn=lambda m, x: m.forward_all(x),
            customized_pruners={nn.GRU: rnn_pruner, nn.LSTM: rnn_pruner},
        )  # fmt: skip
    model.train(was_training)
    return dg, rnn_pruner


def _ensure_rnn_projection(model: SeqRecModel) -> None:
    """Give an RNN whose hidden size equals D an identity projection, so hidden units can go."""
    if model.arch in ("gru", "lstm") and isinstance(model.proj, nn.Identity):
        h = model.rnn.hidden_size
        proj = nn.Linear(h, model.dim)
        with torch.no_grad():
            proj.weight.copy_(torch.eye(model.dim, h))
            proj.bias.zero_()
        model.proj = proj


def sync_builder_args(model: SeqRecModel) -> None:
    """Rewrite ``model.builder_args`` from its module shapes (so a checkpoint rebuilds it)."""
    args = model.builder_args
    if model.arch == "sasrec":
        heads = [blk.attn.heads for blk in model.blocks]
        ffn = [blk.ffn.fc1.out_features for blk in model.blocks]
        args["heads"] = heads[0] if len(set(heads)) == 1 else heads
        args["ffn_dim"] = ffn[0] if len(set(ffn)) == 1 else ffn
        args["head_dim"] = model.blocks[0].attn.head_dim
    elif model.arch in ("gru", "lstm"):
        args["hidden"] = model.rnn.hidden_size
        if isinstance(model.proj, nn.Linear):
            args["project"] = True
    elif model.arch == "cnn":
        ch = [blk.conv1.conv.out_channels for blk in model.blocks]
        args["channels"] = ch[0] if len(set(ch)) == 1 else ch


def structured_prune(model: SeqRecModel, cfg: PruneConfig, keep: dict[str, int] | None = None
                     ) -> dict[str, tuple[int, int]]:  # fmt: skip
    """Remove channels in place, down to ``keep[unit]`` channels per unit.

    Gradients already on the parameters are used for Taylor importance (see
    :func:`taylor_gradients`).

    Args:
        model: The model (pruned in place).
        cfg: Pruning settings.
        keep: Channels to keep per unit name; default from ``cfg`` ratios of the current sizes.

    Returns:
        ``{unit: (channels before, channels after)}``.
    """
    import torch_pruning as tp

    _ensure_rnn_projection(model)
    dg, rnn_pruner = _dependency_graph(model)
    taylor = cfg.importance == "taylor"
    changes: dict[str, tuple[int, int]] = {}
    for unit in prunable_units(model, cfg.targets):
        n = unit.channels()
        groups = n // unit.group
        if keep is not None and unit.name in keep:
            keep_groups = max(1, keep[unit.name] // unit.group)
        else:
            keep_groups = max(1, groups - int(round(groups * unit_ratio(unit.name, cfg))))
        if keep_groups >= groups:
            changes[unit.name] = (n, n)
            continue
        if isinstance(unit.root, nn.RNNBase):
            fn = rnn_pruner.prune_out_channels
        elif isinstance(unit.root, nn.Conv1d):
            fn = tp.prune_conv_out_channels
        else:
            fn = tp.prune_linear_out_channels
        probe = dg.get_pruning_group(unit.root, fn, idxs=list(range(n)))
        imp = group_importance(probe, n, taylor).reshape(groups, unit.group).sum(1)  # [groups]
        drop_groups = torch.argsort(imp)[: groups - keep_groups]
        idxs = sorted(int(g) * unit.group + j for g in drop_groups for j in range(unit.group))
        group = dg.get_pruning_group(unit.root, fn, idxs=idxs)
        if not dg.check_pruning_group(group):
            raise ValueError(f"pruning {unit.name} would leave an empty layer")
        group.prune()
        if unit.attn is not None:
            unit.attn.heads = keep_groups
        changes[unit.name] = (n, unit.channels())
    model.zero_grad(set_to_none=True)
    sync_builder_args(model)
    return changes


# -- sparsity -----------------------------------------------------------------------------------
def _sparse_targets(model: SeqRecModel) -> list[tuple[str, nn.Parameter]]:
    """Weight matrices of the network body (the item table and position table excluded)."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() >= 2 and not name.startswith(("item_emb", "pos_emb")):
            out.append((name, p))
    return out


def apply_sparsity(model: SeqRecModel, mode: Sparsity, ratio: float) -> dict:
    """Zero weights in place: unstructured magnitude (``ratio`` of each matrix) or 2:4.

    Returns:
        ``{"zeros": n, "weights": n, "sparsity": fraction}`` over the affected matrices.
    """
    zeros = total = 0
    with torch.no_grad():
        for _, p in _sparse_targets(model):
            w = p.data
            if mode == "unstructured":
                k = int(w.numel() * ratio)
                if k:
                    thresh = w.abs().flatten().kthvalue(k).values
                    w[w.abs() <= thresh] = 0.0
            elif mode == "2:4":
                flat = w.reshape(w.shape[0], -1)
                cols = flat.shape[1] - flat.shape[1] % 4
                blocks = flat[:, :cols].reshape(flat.shape[0], -1, 4)  # [R, C/4, 4]
                small = blocks.abs().argsort(dim=-1)[..., :2]
                blocks.scatter_(-1, small, 0.0)
                flat[:, :cols] = blocks.reshape(flat.shape[0], cols)
            zeros += int((w == 0).sum())
            total += w.numel()
    return {"zeros": zeros, "weights": total, "sparsity": round(zeros / max(1, total), 4)}


# -- the whole step -----------------------------------------------------------------------------
def prune(
    model: SeqRecModel,
    cfg: PruneConfig,
    *,
    recover: Callable[[SeqRecModel, SeqRecModel, int], None] | None = None,
    taylor_batches: Callable[[], Iterable[dict]] | None = None,
    loss_fn: Callable[[SeqRecModel, dict], torch.Tensor] | None = None,
) -> tuple[SeqRecModel, dict]:
    """Prune a copy of ``model`` in ``cfg.steps`` steps, with recovery after each.

    Args:
        model: The trained model (left unchanged).
        cfg: Pruning settings.
        recover: ``recover(pruned, original, step)`` trains the pruned model after each step
            (e.g. distillation from ``original``); None skips recovery.
        taylor_batches: Returns training batches for Taylor importance (required for it).
        loss_fn: Loss on those batches (required for Taylor importance).

    Returns:
        The pruned model and a summary: per-unit sizes, params before/after, sparsity.
    """
    if cfg.importance == "taylor" and cfg.sparsity == "structured" and (
            taylor_batches is None or loss_fn is None):  # fmt: skip
        raise ValueError("Taylor importance needs training batches and a loss")
    pruned = copy.deepcopy(model).cpu().eval()
    params_before = pruned.num_params()
    summary: dict = {"params_before": params_before, "steps": []}
    if cfg.sparsity != "structured":
        for s in range(1, cfg.steps + 1):
            stats = apply_sparsity(pruned, cfg.sparsity, cfg.ratio * s / cfg.steps)
            if recover is not None:
                recover(pruned, model, s)
                stats = apply_sparsity(pruned, cfg.sparsity, cfg.ratio * s / cfg.steps)
            summary["steps"].append(stats)
        summary.update(params_after=pruned.num_params(), sparsity=summary["steps"][-1]["sparsity"],
                       note="zeros keep their storage: no size or speed change in dense kernels")  # fmt: skip
        return pruned, summary
    original = {u.name: u.channels() for u in prunable_units(pruned, cfg.targets)}
    for s in range(1, cfg.steps + 1):
        keep = {name: n - int(round(n * unit_ratio(name, cfg) * s / cfg.steps))
                for name, n in original.items()}  # fmt: skip
        if cfg.importance == "taylor":
            taylor_gradients(pruned, taylor_batches(), loss_fn)
        changes = structured_prune(pruned, cfg, keep)
        if recover is not None:
            recover(pruned, model, s)
        summary["steps"].append({"step": s, "params": pruned.num_params(),
                                 "units": {k: list(v) for k, v in changes.items()}})  # fmt: skip
    summary["params_after"] = pruned.num_params()
    return pruned.eval(), summary


__all__ = [
    "PruneConfig", "RNNHiddenPruner", "Unit", "apply_sparsity", "group_importance", "prune",
    "prunable_units", "structured_prune", "sync_builder_args", "taylor_gradients", "unit_ratio",
]  # fmt: skip
