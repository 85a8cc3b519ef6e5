"""Structured pruning on Torch-Pruning's dependency graph, with our own GRU/LSTM pruner.

What is pruned (the model width D and the item table are kept, so scores stay comparable):

- SASRec: feed-forward channels (``fc1`` outputs with ``fc2`` inputs) and whole attention heads
  (the same channels of the separate q/k/v projections and of the output projection's inputs);
- GRU/LSTM: the recurrent hidden size of every layer (:class:`RNNHiddenPruner`, registered with
  Torch-Pruning as a customized pruner: it has no GRU pruner and its LSTM pruner fails), with the
  projection to D that follows it;
- CNN: the inner channels of each residual block.

Importance is the squared L2 magnitude or the first-order Taylor score ``|w * dL/dw|`` (from a
few training batches), summed over every weight and bias the dependency graph couples to a
channel: Torch-Pruning's ``GroupMagnitudeImportance`` / ``GroupTaylorImportance`` (sum reduction,
no normalisation, biases on) for Linear/Conv/LayerNorm, our own scores for GRU/LSTM. A ratio is
one global number or per module by dotted-name prefix (``{"blocks.1.ffn": 0.6}``). Pruning can
run in several steps, each followed by recovery training (by default distillation from the
unpruned model): see :func:`prune`.

Unstructured magnitude sparsity and 2:4 semi-structured sparsity are offered too; they keep every
shape, so they save nothing in size or speed with dense kernels (the report says so).

The GRU/LSTM pruner is in :mod:`recshrink.compress.prune_rnn`, the sparsity modes in
:mod:`recshrink.compress.sparsity`.
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

from recshrink.compress.prune_rnn import RNNHiddenPruner, rnn_gates
from recshrink.compress.sparsity import Sparsity, apply_sparsity
from recshrink.models.base import SeqRecModel


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
    h, g = layer.hidden_size, rnn_gates(layer)
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


def library_importance(taylor: bool):
    """Torch-Pruning's scorer for Linear/Conv/LayerNorm members, set up as ours: squared L2
    (or ``|w * dL/dw|``) of weights and biases, summed over the group, not normalised."""
    import torch_pruning as tp

    kw = dict(group_reduction="sum", normalizer=None, bias=True)
    if taylor:
        return tp.importance.GroupTaylorImportance(multivariable=False, **kw)
    return tp.importance.GroupMagnitudeImportance(p=2, **kw)


def group_importance(group, n: int, taylor: bool) -> torch.Tensor:
    """Importance ``[n]`` of the root channels of a Torch-Pruning group (summed over members).

    Linear, Conv and LayerNorm members are scored by Torch-Pruning (:func:`library_importance`),
    GRU/LSTM members by :func:`_rnn_scores`. A parameter without a gradient scores 0 (Taylor).
    """
    missing: dict[int, nn.Parameter] = {}
    if taylor:  # the library reads .grad unconditionally: lend zeros, then put None back
        for dep, _ in group:
            for p in dep.target.module.parameters(recurse=False):
                if p.grad is None:
                    missing[id(p)] = p
        for p in missing.values():
            p.grad = torch.zeros_like(p)
    try:
        lib = library_importance(taylor)(group)
    finally:
        for p in missing.values():
            p.grad = None
    total = torch.zeros(n) if lib is None else lib.detach().float().cpu()
    seen: set[tuple[int, bool]] = set()
    for dep, _ in group:
        module = dep.target.module
        if not isinstance(module, nn.RNNBase):
            continue
        out = dep.handler.__name__.endswith("out_channels")
        if (id(module), out) in seen:
            continue
        seen.add((id(module), out))
        s = _rnn_scores(module, out, taylor)
        if s.numel() == n:
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
    "PruneConfig", "Unit", "group_importance", "prune", "prunable_units", "structured_prune",
    "sync_builder_args", "taylor_gradients", "unit_ratio",
]  # fmt: skip
