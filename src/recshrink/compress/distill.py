"""Cross-architecture knowledge distillation: a transformer teacher into GRU/LSTM/CNN students.

The teacher runs once over every training window; its user vector and top-M items with their
logits at every position are cached on disk (keyed by teacher weights, data and settings) and
reused by every student and every epoch, so a student trains at the cost of training alone
(:mod:`recshrink.compress.teacher_cache`).

Losses (each with a weight, combinable):

- ground truth: the trainer's next-item loss (full, sampled softmax or BCE);
- logit KD: KL(teacher || student) of the softmax at temperature T over the teacher's top-M
  items plus shared sampled negatives (``kd_scope="topm"``; teacher logits of the negatives come
  from the cached teacher vectors), or over the whole catalogue (``kd_scope="full"``);
- ranking KD (Tang & Wang, KDD 2018): the teacher's top-K items as positives weighted by
  ``exp(-rank / lambda)``, each against the shared negatives;
- representation alignment: a learned projection of the student's user vector to the teacher's,
  MSE or cosine, at every position or at the last one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from recshrink.compress.teacher_cache import cache_batch_hook, teacher_cache
from recshrink.data.split import Split, training_pairs
from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel
from recshrink.train.config import LATER_DEFAULTS, TrainConfig, config_json
from recshrink.train.losses import item_rows
from recshrink.train.trainer import (
    TrainResult, fit, ground_truth_loss, item_popularity, state_digest,
)  # fmt: skip


@dataclass(config=ConfigDict(extra="forbid"))
class DistillConfig:
    """Which distillation losses to use and how (validated on construction).

    Attributes:
        gt_weight: Weight of the ground-truth next-item loss. The defaults, 0.5 and 0.5, were
            better than or level with the reference recipe's 0.1 and 0.9 for every student
            measured on Beauty and ML-100K (docs/benchmarks.md).
        kd_weight: Weight of logit KD.
        temperature: Softmax temperature T of logit KD (the loss is scaled by T^2).
        kd_scope: ``"topm"`` (teacher top-M + shared negatives) or ``"full"`` (all items).
        top_m: Teacher items cached per position.
        cache_search: How the cache finds each position's teacher top-M: ``"exact"`` (every
            item scored, in bounded blocks) or ``"hnsw"`` (a FAISS HNSW index of the
            teacher's item table, efSearch max(128, 2 top_m); for catalogues of 100k items
            and more, where the exact cache costs positions x N dot products; needs
            ``recshrink[ann]`` and a native teacher; its recall@M against exact, measured on
            512 positions, is in the summary as ``cache_search_recall``).
        kd_negatives: Shared negatives per batch for ``"topm"`` KD and ranking KD.
        kd_tail: How ``"topm"`` KD counts the sampled negatives: ``"plain"`` (each once) or
            ``"weighted"`` (each stands for ``(N - M) / S`` items of the catalogue outside the
            teacher's top-M, and a negative that is one of the row's top-M items is dropped), so
            the softmax over the subset estimates the full-catalogue softmax; ``"none"``: KD
            over the teacher's top M alone (what a scores-only teacher gets).
        rank_weight: Weight of ranking distillation.
        rank_k: Teacher top-K items used as weighted positives.
        rank_lambda: Position-weight decay: weight of rank r is ``exp(-r / rank_lambda)``.
        align_weight: Weight of representation alignment.
        align: ``"cosine"`` or ``"mse"``.
        align_positions: ``"all"`` positions or only the ``"last"`` one.
        init_items: Student item table from the teacher's: ``"pca"`` (project to the
            student's width, which must not exceed the teacher's), ``"shared"`` (copy; widths
            must match), ``"none"``, or ``"auto"`` (the default: ``"pca"`` where the student
            is no wider than the teacher, else ``"none"``; PCA gave the same quality in about
            1.6x fewer epochs on Beauty and ML-100K). Never applied to pruning recovery.
    """

    gt_weight: float = Field(0.5, ge=0)
    kd_weight: float = Field(0.5, ge=0)
    temperature: float = Field(1.0, gt=0)
    kd_scope: Literal["topm", "full"] = "topm"
    top_m: int = Field(100, ge=1)
    cache_search: Literal["exact", "hnsw"] = "exact"
    kd_negatives: int = Field(1024, ge=1)
    kd_tail: Literal["plain", "weighted", "none"] = "plain"
    rank_weight: float = Field(0.0, ge=0)
    rank_k: int = Field(10, ge=1)
    rank_lambda: float = Field(5.0, gt=0)
    align_weight: float = Field(0.0, ge=0)
    align: Literal["cosine", "mse"] = "cosine"
    align_positions: Literal["all", "last"] = "all"
    init_items: Literal["auto", "pca", "shared", "none"] = "auto"

    def __post_init__(self) -> None:
        if self.gt_weight + self.kd_weight + self.rank_weight + self.align_weight <= 0:
            raise ValueError("at least one loss weight must be positive")
        if self.rank_weight > 0 and self.rank_k > self.top_m:
            raise ValueError(f"rank_k ({self.rank_k}) must be <= top_m ({self.top_m})")

    def losses(self) -> list[str]:
        """Names of the losses in use (for reports)."""
        names = [("ground_truth", self.gt_weight), ("logit_kd", self.kd_weight),
                 ("ranking_kd", self.rank_weight), ("alignment", self.align_weight)]  # fmt: skip
        out = [n for n, w in names if w > 0]
        if self.init_items != "none":
            out.append(f"init_items_{self.init_items}")
        return out


# -- losses (pure functions, unit-tested against hand computations) -----------------------------


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` averaged over rows ``[P, C]``.

    ``-inf`` teacher logits (excluded candidates) contribute nothing. Computed as the soft-target
    cross-entropy minus the teacher's entropy, the teacher side without autograd: the same value
    with about half the ``[P, C]`` temporaries (it matters for ``kd_scope="full"``).
    """
    with torch.no_grad():
        log_pt = F.log_softmax(teacher_logits / t, dim=-1)  # [P, C]
        pt = log_pt.exp()
        neg_entropy = torch.where(pt > 0, pt * log_pt, torch.zeros_like(pt)).sum(-1).mean()
    return (F.cross_entropy(student_logits / t, pt) + neg_entropy) * t * t


def config_key(cfg: DistillConfig) -> str:
    """``repr(cfg)`` without the :data:`LATER_DEFAULTS` options at their default."""
    text = repr(cfg)
    for name, value in LATER_DEFAULTS.items():
        text = text.replace(f", {name}={value!r}", "")
    return text


def negative_clash(ids: torch.Tensor, negs: torch.Tensor, num_items: int) -> torch.Tensor:
    """``[P, S]`` bool: where a shared negative is one of row p's ``ids`` (``[P, M]``), i.e. a
    sampled "negative" that is really one of the row's positives."""
    p, m = ids.shape
    uniq, inv = torch.unique(negs, return_inverse=True)  # [U], [S]
    lookup = torch.full((num_items + 1,), -1, dtype=torch.long, device=negs.device)
    lookup[uniq] = torch.arange(len(uniq), device=negs.device)
    col = lookup[ids]  # [P, M] column of each id among the unique negatives, or -1
    hit = col >= 0
    rows = torch.arange(p, device=negs.device).unsqueeze(1).expand(p, m)  # [P, M]
    clash = torch.zeros(p, len(uniq), dtype=torch.bool, device=negs.device)
    clash[rows[hit], col[hit]] = True
    return clash[:, inv]  # [P, S]


def tail_bias(t_ids: torch.Tensor, negs: torch.Tensor, num_items: int) -> torch.Tensor:
    """Log-weights ``[P, S]`` that turn top-M + sampled-negative logits into an estimate of the
    full-catalogue softmax (add ``T * bias`` to the negatives' logits before dividing by T).

    Each uniform negative of row p stands for ``(N - M) / S_p`` items outside the row's top-M
    (``S_p``: negatives that are not among them); a negative that is one of the row's top-M
    items gets ``-1e9`` (dropped: it is already counted).

    Args:
        t_ids: ``[P, M]`` teacher top-M item ids per position.
        negs: ``[S]`` shared negatives (uniform over 1..N, with replacement).
        num_items: Catalogue size N.
    """
    m = t_ids.shape[1]
    clash = negative_clash(t_ids, negs, num_items)  # [P, S]
    kept = (~clash).sum(1).clamp_min(1).float()  # [P]
    logw = torch.log(max(num_items - m, 1) / kept).unsqueeze(1)  # [P, 1]
    return torch.where(clash, torch.full_like(clash, -1e9, dtype=torch.float), logw)


def rank_weights(k: int, lam: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Position weights ``exp(-r / lam)`` for ranks r = 0..k-1, normalised to sum to 1."""
    w = torch.exp(-torch.arange(k, dtype=torch.float32, device=device) / lam)
    return w / w.sum()


def ranking_kd(pos_logits: torch.Tensor, neg_logits: torch.Tensor, weights: torch.Tensor
               ) -> torch.Tensor:  # fmt: skip
    """Teacher top-K items as weighted positives, each in a softmax against shared negatives.

    Args:
        pos_logits: ``[P, K]`` student logits of the teacher's top-K items.
        neg_logits: ``[P, S]`` student logits of the shared negatives.
        weights: ``[K]`` position weights summing to 1.
    """
    lse_neg = torch.logsumexp(neg_logits, dim=-1, keepdim=True)  # [P, 1]
    per = torch.logaddexp(pos_logits, lse_neg) - pos_logits  # [P, K] = -log softmax of each pos
    return (per * weights).sum(-1).mean()


def alignment(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """MSE or ``1 - cosine`` between projected student vectors and teacher vectors ``[P, Dt]``."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


class DistillLoss(nn.Module):
    """The combined distillation loss; owns the alignment projection (trained with the student).

    Args:
        cfg: Distillation settings.
        train_cfg: The student's training settings (ground-truth loss).
        teacher_table: Teacher item table ``[N + 1, Dt]`` (frozen).
        student_dim: Student width Ds.
        popularity: Item counts (for popularity-sampled ground truth).
    """

    def __init__(self, cfg: DistillConfig, train_cfg: TrainConfig, teacher_table: torch.Tensor,
                 student_dim: int, popularity: torch.Tensor | None = None) -> None:  # fmt: skip
        super().__init__()
        self.cfg = cfg
        self.gt = ground_truth_loss(train_cfg, popularity)
        if teacher_table is not None:  # None: a scores-only teacher (KD over its top M only)
            self.register_buffer("teacher_table", teacher_table.detach().float().clone())
        self.proj = (nn.Linear(student_dim, teacher_table.shape[1])
                     if cfg.align_weight > 0 and teacher_table is not None else None)  # fmt: skip

    def forward(self, model: SeqRecModel, batch: dict) -> torch.Tensor:
        c = self.cfg
        tgt = batch["targets"]  # [B, L]
        h = model.forward_all(batch["inputs"])  # [B, L, Ds]
        sel = tgt > 0
        hs, ts = h[sel], tgt[sel]  # [P, Ds], [P]
        table, sp = model.item_table(), model.sparse_items  # [N+1, Ds]; sparse gradients?
        loss = hs.new_zeros(())
        if c.gt_weight > 0:
            loss = loss + c.gt_weight * self.gt(hs, ts, table, batch, sel, sp)
        if c.kd_weight > 0 or c.rank_weight > 0:
            negs = batch["kd_negatives"]  # [S]
            s_neg = hs @ item_rows(table, negs, sp).t()  # [P, S]
            t_ids = batch["t_ids"]  # [P, M]
        if c.kd_weight > 0:
            if c.kd_scope == "full":
                s_all = hs @ table[1:].t()  # [P, N]
                t_all = batch["t_vec"] @ self.teacher_table[1:].t()  # [P, N]
            else:
                s_top = torch.einsum("pd,pmd->pm", hs, item_rows(table, t_ids, sp))  # [P, M]
            if c.kd_scope == "topm" and c.kd_tail == "none":  # the teacher's top M only
                s_all, t_all = s_top, batch["t_logits"]
            elif c.kd_scope == "topm":
                t_neg = batch["t_vec"] @ self.teacher_table[negs].t()  # [P, S]
                s_kd_neg = s_neg
                if c.kd_tail == "weighted":
                    bias = c.temperature * tail_bias(t_ids, negs, model.num_items)  # [P, S]
                    s_kd_neg, t_neg = s_neg + bias, t_neg + bias
                s_all = torch.cat([s_top, s_kd_neg], dim=-1)
                t_all = torch.cat([batch["t_logits"], t_neg], dim=-1)
            loss = loss + c.kd_weight * kd_kl(s_all, t_all, c.temperature)
        if c.rank_weight > 0:
            k_ids = t_ids[:, : c.rank_k]  # [P, K]
            s_pos = torch.einsum("pd,pkd->pk", hs, item_rows(table, k_ids, sp))
            w = rank_weights(c.rank_k, c.rank_lambda, hs.device)
            # a sampled negative that is one of the row's K positives is no negative
            s_rank_neg = s_neg.masked_fill(negative_clash(k_ids, negs, model.num_items),
                                           float("-inf"))  # [P, S]
            loss = loss + c.rank_weight * ranking_kd(s_pos, s_rank_neg, w)
        if c.align_weight > 0:
            sv, tv = self.proj(hs), batch["t_vec"]  # [P, Dt]
            if c.align_positions == "last":
                last = torch.cumsum(sel.sum(1), 0) - 1  # the last real position of each row
                sv, tv = sv[last], tv[last]
            loss = loss + c.align_weight * alignment(sv, tv, c.align)
        return loss


def init_items_from_teacher(student: SeqRecModel, teacher: SeqRecModel, mode: str) -> None:
    """Initialise the student's item table from the teacher's (``"pca"`` or ``"shared"``).

    ``"pca"`` projects the centred teacher table on its top principal directions and rescales it
    to the student's initial row norm.
    """
    if mode == "none":
        return
    src = teacher.item_table().detach().float()  # [N+1, Dt]
    ds = student.dim
    if mode == "shared":
        if src.shape[1] != ds:
            raise RecshrinkError(f"init_items 'shared' needs equal widths ({src.shape[1]} vs {ds})")
        new = src.clone()
    else:
        x = src[1:] - src[1:].mean(0, keepdim=True)
        if ds > min(x.shape):
            raise RecshrinkError(f"init_items 'pca' needs student dim <= {min(x.shape)} (the "
                                 f"teacher's width), got {ds}; set init_items to none")
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        proj = x @ v[:ds].t()  # [N, Ds]
        cur = student.item_table().detach()[1:].norm(dim=-1).mean()
        proj = proj * (cur / proj.norm(dim=-1).mean().clamp_min(1e-8))
        new = torch.cat([torch.zeros(1, ds), proj], dim=0)
    with torch.no_grad():
        student.item_emb.weight.copy_(new)
        student.item_emb.weight[0].zero_()


def _scores_only(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` for a teacher known by its scores alone: logit KD over its top M items (no
    sampled-negative tail), no alignment, no item-table initialisation.

    Raises:
        RecshrinkError: A setting that needs the teacher's user vectors or item table.
    """
    bad = [f"{k}: {v}" for k, v in (("kd_scope", cfg.kd_scope), ("align_weight", cfg.align_weight),
                                     ("init_items", cfg.init_items),
                                     ("cache_search", cfg.cache_search))
           if (k == "kd_scope" and v == "full") or (k == "align_weight" and v > 0)
           or (k == "init_items" and v in ("pca", "shared"))
           or (k == "cache_search" and v != "exact")]  # fmt: skip
    if bad:
        raise RecshrinkError(f"distill: {', '.join(bad)} needs the teacher's user vectors or item "
                             "table, which a scores-only teacher does not give (use kd_scope: "
                             "topm, align_weight: 0, init_items: none, cache_search: exact)")  # fmt: skip
    return dataclasses.replace(cfg, init_items="none", kd_tail="none")


def distill_fit(
    teacher: SeqRecModel,
    student: SeqRecModel,
    split: Split,
    train_cfg: TrainConfig,
    cfg: DistillConfig,
    work_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    item_attrs: list[frozenset[int]] | None = None,
    run_key: str | tuple[str, ...] = "",
    progress: bool = True,
    desc: str = "distill",
) -> tuple[TrainResult, dict]:
    """Distil ``teacher`` into ``student`` on ``split`` (early stopping on validation NDCG@10):
    the training loop behind :func:`recshrink.distill`.

    ``run_key`` identifies the run (a tuple: the key, then earlier forms of it, see
    :func:`recshrink.train.trainer.fit`); the resume key adds the teacher's weights and the
    canonical JSON of ``cfg`` (runs keyed by its ``repr`` before 0.1.0's API still resume).

    Returns:
        The trainer's result and a summary (losses, cache reuse, cache seconds).
    """
    if teacher.num_items != student.num_items:
        raise ValueError("teacher and student must share the item catalogue")
    native = isinstance(teacher, SeqRecModel)
    if not native:  # scores only: what needs the teacher's vectors or item table cannot run
        cfg = _scores_only(cfg)
    if cfg.init_items == "auto":  # record what was applied
        fits = student.dim <= min(teacher.item_table().shape[1], teacher.num_items)
        cfg = dataclasses.replace(cfg, init_items="pca" if fits else "none")
    t0 = time.perf_counter()
    windows = training_pairs(split.train, student.max_len)
    cache, reused = teacher_cache(teacher, windows, cfg.top_m, cache_dir, train_cfg.device,
                                  progress=progress, search=cfg.cache_search)  # fmt: skip
    cache_seconds = time.perf_counter() - t0
    init_items_from_teacher(student, teacher, cfg.init_items)
    table = teacher.item_table() if native else None
    loss = DistillLoss(cfg, train_cfg, table, student.dim,
                       item_popularity(split.train, student.num_items))  # fmt: skip
    hook = cache_batch_hook(cache, student.num_items, cfg.kd_negatives)
    digest = state_digest(teacher) if native else teacher.digest()
    run_keys = (run_key,) if isinstance(run_key, str) else tuple(run_key)
    key = (f"distill|{run_keys[0]}|{digest}|{config_json(cfg)}",
           # the forms runs were keyed by before: the config's repr (and an earlier run key)
           *(f"distill|{k}|{digest}|{config_key(cfg)}" for k in run_keys))
    result = fit(student, split, train_cfg, work_dir, item_attrs=item_attrs, loss_fn=loss,
                 batch_hook=hook, run_key=key, progress=progress, desc=desc,
                 dense_table="kd_scope: full" if cfg.kd_weight > 0 and cfg.kd_scope == "full"
                 else None)  # fmt: skip
    summary = {"losses": cfg.losses(), "cache_reused": reused,
               "cache_seconds": round(cache_seconds, 2), "cache_positions": int(cache["offsets"][-1])}  # fmt: skip
    if "search_recall" in cache:
        summary["cache_search"] = cfg.cache_search
        summary["cache_search_recall"] = round(float(cache["search_recall"][0]), 4)
        summary["cache_index_build_seconds"] = round(float(cache["search_build_seconds"][0]), 2)
    return result, summary


__all__ = [
    "DistillConfig", "DistillLoss", "alignment", "config_key", "distill_fit",
    "init_items_from_teacher", "kd_kl", "rank_weights", "ranking_kd", "tail_bias",
]  # fmt: skip
