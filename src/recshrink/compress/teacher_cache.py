"""The teacher cache of distillation: the teacher's outputs at every training position.

The teacher runs once over every training window; its user vector and top-M items with their
logits at every position are cached on disk (keyed by teacher weights, data and settings) and
reused by every student and every epoch (see :mod:`recshrink.compress.distill`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from recshrink.data.split import pad_left
from recshrink.errors import RecshrinkError
from recshrink.export.ann_index import RetrievalConfig, build_index  # FAISS loads on first use
from recshrink.fsutil import atomic_path
from recshrink.models.base import SeqRecModel
from recshrink.train.losses import sample_negatives
from recshrink.train.evaluate import chunk_rows
from recshrink.train.trainer import state_digest


def _windows_digest(windows: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in windows:
        h.update(np.asarray(w, np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def window_offsets(windows: list[np.ndarray]) -> np.ndarray:
    """Start of each window's positions in the flat cache (``[W + 1]``, positions = len - 1)."""
    return np.concatenate([[0], np.cumsum([len(w) - 1 for w in windows])]).astype(np.int64)


def top_m_chunked(score: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, m: int, num_items: int,
                  max_elems: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``torch.topk(score(h), m)`` over row blocks: the ``[rows, N + 1]`` score matrix is never
    held whole, so the cache of a 1M-item catalogue costs one block of memory, not
    positions x N (``max_elems``: :func:`recshrink.train.evaluate.chunk_rows`)."""
    step = chunk_rows(num_items, max_elems)
    vals, ids = [], []
    for i in range(0, len(h), step):
        v, j = torch.topk(score(h[i : i + step]), m, dim=-1)  # [b, M]
        vals.append(v)
        ids.append(j)
    if not vals:
        return torch.zeros(0, m), torch.zeros(0, m, dtype=torch.long)
    return torch.cat(vals), torch.cat(ids)


@torch.inference_mode()
def build_prefix_cache(
    teacher: torch.nn.Module,
    windows: list[np.ndarray],
    top_m: int,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The cache of a teacher with last-position scores only (``teacher.scores``), by prefix
    expansion: the history before each training position is scored as its own sequence.

    Returns:
        The same layout as :func:`build_teacher_cache`, with ``vectors`` of width 0.
    """
    offsets = window_offsets(windows)
    total = int(offsets[-1])
    m = min(top_m, teacher.num_items)
    top_ids = torch.zeros(total, m, dtype=torch.int32)
    top_logits = torch.zeros(total, m, dtype=torch.float16)
    prefixes = [w[: j + 1] for w in windows for j in range(len(w) - 1)]  # row order = cache order
    width = teacher.max_len
    batch_size = min(batch_size, chunk_rows(teacher.num_items))  # one [b, N + 1] block at a time
    bar = tqdm(total=total, desc="teacher cache (prefixes)", disable=not progress, leave=False)
    for i in range(0, total, batch_size):
        inp = torch.from_numpy(pad_left([p[-width:] for p in prefixes[i : i + batch_size]], width))
        vals, ids = torch.topk(teacher.scores(inp)[:, 1:], m, dim=-1)  # [b, M] (no padding)
        top_ids[i : i + len(inp)] = (ids + 1).int()
        top_logits[i : i + len(inp)] = vals.half()
        bar.update(len(inp))
    bar.close()
    return {"vectors": torch.zeros(total, 0, dtype=torch.float16), "top_ids": top_ids,
            "top_logits": top_logits, "offsets": torch.from_numpy(offsets)}  # fmt: skip


RECALL_SAMPLE = 512  # positions whose index top-M is checked against the exact top-M
CHECK_PER_CALL = 8  # of them from each batch, spread over the cache's length order


class IndexTopM:
    """The teacher's top-M through a FAISS HNSW index of its item table (``search="hnsw"``):
    the cost of a 1M-item catalogue's cache becomes a graph search per position instead of
    ``N`` dot products. Built once per cache; a teacher whose scores are not inner products
    with its item table is refused.

    The logits are the index's inner products (the teacher's own scores, in float32); an item
    the index does not return is outside the cached top-M, as a lower-scored item would be.
    """

    def __init__(self, teacher: SeqRecModel, m: int, threads: int | None = None) -> None:
        own = teacher.item_table()
        table = own.detach().float().cpu()  # [N + 1, D]
        probe = torch.randn(4, table.shape[1], generator=torch.Generator().manual_seed(0))
        if not torch.allclose(teacher.score_vectors(probe.to(own))[:, 1:].float().cpu(),
                              probe @ table[1:].t(), rtol=1e-4, atol=1e-4):  # fmt: skip
            raise RecshrinkError(
                f"distill.cache_search: hnsw needs a teacher that scores by inner product with "
                f"its item table; {type(teacher).__name__} does not (use cache_search: exact)")
        self.items = table[1:].numpy()  # [N, D], index row r = item r + 1
        # efSearch: at least 2M, so the beam holds every returned item with room to spare
        self.cfg = RetrievalConfig(index="hnsw", ef_search=max(128, 2 * m), threads=threads
                                   ).resolve(len(self.items), self.items.shape[1])  # fmt: skip
        t0 = time.perf_counter()
        self.index = build_index(self.items, self.cfg)
        self.build_seconds = time.perf_counter() - t0
        self.m, self.checked = m, []

    def __call__(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-M ``(logits, item ids)`` of user vectors ``h`` ``[P, D]``: ``[P, M]`` each."""
        x = np.ascontiguousarray(h.detach().float().cpu().numpy())  # [P, D]
        vals, rows = self.index.search(x, self.m)  # [P, M] inner products, index rows
        missing = (rows < 0).any(axis=1)
        if missing.any():  # fewer than M found (tiny or disconnected graph): exact for those
            v, j = self.exact(x[missing])
            vals[missing], rows[missing] = v.numpy(), j.numpy()
        if len(self.checked) < RECALL_SAMPLE:  # a few positions of every call, for the recall
            pick = np.arange(0, len(x), max(1, len(x) // CHECK_PER_CALL))[:CHECK_PER_CALL]
            exact = self.exact(x[pick])[1].numpy()
            self.checked += [len(np.intersect1d(a, b)) / self.m for a, b in zip(rows[pick], exact)]
        return torch.from_numpy(vals), torch.from_numpy(rows.astype(np.int64) + 1)

    def exact(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-M ``(logits, index rows)`` of ``x`` ``[P, D]``, in bounded score blocks."""
        items_t = torch.from_numpy(self.items).t()  # [D, N]
        return top_m_chunked(lambda b: b @ items_t, torch.from_numpy(x), self.m, len(self.items))

    def recall(self) -> float:
        """Mean recall@M of the index against the exact top-M on the checked positions."""
        return float(np.mean(self.checked)) if self.checked else float("nan")


@torch.inference_mode()
def build_teacher_cache(
    teacher: SeqRecModel,
    windows: list[np.ndarray],
    top_m: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    search: str = "exact",
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run the teacher over every training window once.

    Args:
        search: How each position's top-M is found: ``"exact"`` (every item scored, in
            bounded blocks) or ``"hnsw"`` (a FAISS index of the teacher's item table, see
            :class:`IndexTopM`; needs ``recshrink[ann]``).

    Returns:
        ``{"vectors": [P, Dt] fp16, "top_ids": [P, M] int32, "top_logits": [P, M] fp16,
        "offsets": [W + 1] int64}`` where P is the number of training positions; row
        ``offsets[w] + j`` belongs to input position j of window w. With ``"hnsw"`` also
        ``"search_recall"`` ``[1]`` (the index's recall@M on a sample of positions) and
        ``"search_build_seconds"`` ``[1]``.
    """
    if search not in ("exact", "hnsw"):
        raise ValueError(f"search must be 'exact' or 'hnsw', got {search!r}")
    teacher.eval().to(device)
    offsets = window_offsets(windows)
    total = int(offsets[-1])
    m = min(top_m, teacher.num_items)
    vectors = torch.zeros(total, teacher.dim, dtype=torch.float16)
    top_ids = torch.zeros(total, m, dtype=torch.int32)
    top_logits = torch.zeros(total, m, dtype=torch.float16)
    finder = IndexTopM(teacher, m) if search == "hnsw" else None
    order = np.argsort([len(w) for w in windows], kind="stable")
    bar = tqdm(total=total, desc=f"teacher cache ({search})", disable=not progress, leave=False)
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        width = max(len(windows[r]) - 1 for r in rows)
        inp = torch.from_numpy(pad_left([windows[r][:-1] for r in rows], width)).to(device)
        h = teacher.forward_all(inp)[inp > 0]  # [P_b, Dt], row-major = window order
        dest = torch.from_numpy(np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows]))
        vals, ids = (finder(h) if finder is not None else
                     top_m_chunked(teacher.score_vectors, h, m, teacher.num_items))  # [P_b, M]
        vectors[dest] = h.cpu().half()
        top_ids[dest] = ids.cpu().int()
        top_logits[dest] = vals.cpu().half()
        bar.update(len(h))
    bar.close()
    cache = {"vectors": vectors, "top_ids": top_ids, "top_logits": top_logits,
             "offsets": torch.from_numpy(offsets)}  # fmt: skip
    if finder is not None:
        cache["search_recall"] = torch.tensor([finder.recall()])
        cache["search_build_seconds"] = torch.tensor([finder.build_seconds])
    return cache


def teacher_cache(
    teacher: SeqRecModel,
    windows: list[np.ndarray],
    top_m: int,
    cache_dir: str | Path | None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    search: str = "exact",
) -> tuple[dict[str, torch.Tensor], bool]:
    """Load the teacher cache from ``cache_dir`` or build (and store) it (``search``: see
    :func:`build_teacher_cache`, for a native teacher; a scores-only teacher is prefix-expanded
    exactly, and :func:`recshrink.compress.distill.distill_fit` refuses ``"hnsw"`` for it).

    Returns:
        The cache and whether it was loaded from disk.
    """
    digest = teacher.digest() if hasattr(teacher, "digest") else state_digest(teacher)
    tag = "" if search == "exact" else f"|{search}"  # exact caches keep their earlier keys
    key = hashlib.sha256(
        f"{digest}|{_windows_digest(windows)}|{top_m}{tag}".encode()
    ).hexdigest()[:20]
    path = Path(cache_dir) / f"teacher-{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        return load_file(str(path)), True
    cache = (build_teacher_cache(teacher, windows, top_m, device=device, search=search,
                                 progress=progress)
             if isinstance(teacher, SeqRecModel) else
             build_prefix_cache(teacher, windows, top_m, progress=progress))  # fmt: skip
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in cache.items()}, str(tmp))
    return cache, False


def cache_batch_hook(cache: dict[str, torch.Tensor], num_items: int, negatives: int):
    """A trainer batch hook adding the cached teacher outputs of the batch's positions.

    Adds ``t_vec [P, Dt]``, ``t_ids [P, M]``, ``t_logits [P, M]`` (P = positions with a target,
    row-major, as ``h[targets > 0]``) and ``kd_negatives [S]`` drawn from the epoch generator.
    """
    offsets = cache["offsets"]

    def hook(batch: dict, gen: torch.Generator) -> dict:
        tgt = batch["targets"]  # [B, L]
        width = tgt.shape[1]
        n = (tgt > 0).sum(1)  # [B] positions per row (targets are left-padded)
        col = torch.arange(width).unsqueeze(0)  # [1, L]
        start = (width - n).unsqueeze(1)  # [B, 1]
        flat = offsets[batch["index"]].unsqueeze(1) + (col - start)  # [B, L]
        rows = flat[tgt > 0]  # [P]
        batch["t_vec"] = cache["vectors"][rows].float()
        batch["t_ids"] = cache["top_ids"][rows].long()
        batch["t_logits"] = cache["top_logits"][rows].float()
        batch["kd_negatives"] = sample_negatives(num_items, negatives, gen)
        return batch

    return hook


__all__ = ["IndexTopM", "build_prefix_cache", "build_teacher_cache", "cache_batch_hook",
           "teacher_cache", "top_m_chunked", "window_offsets"]
