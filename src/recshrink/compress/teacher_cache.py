"""The teacher cache of distillation: the teacher's outputs at every training position.

The teacher runs once over every training window; its user vector and top-M items with their
logits at every position are cached on disk (keyed by teacher weights, data and settings) and
reused by every student and every epoch (see :mod:`recshrink.compress.distill`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from recshrink.data.split import pad_left
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


@torch.inference_mode()
def build_teacher_cache(
    teacher: SeqRecModel,
    windows: list[np.ndarray],
    top_m: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Run the teacher over every training window once.

    Returns:
        ``{"vectors": [P, Dt] fp16, "top_ids": [P, M] int32, "top_logits": [P, M] fp16,
        "offsets": [W + 1] int64}`` where P is the number of training positions; row
        ``offsets[w] + j`` belongs to input position j of window w.
    """
    teacher.eval().to(device)
    offsets = window_offsets(windows)
    total = int(offsets[-1])
    m = min(top_m, teacher.num_items)
    vectors = torch.zeros(total, teacher.dim, dtype=torch.float16)
    top_ids = torch.zeros(total, m, dtype=torch.int32)
    top_logits = torch.zeros(total, m, dtype=torch.float16)
    order = np.argsort([len(w) for w in windows], kind="stable")
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        width = max(len(windows[r]) - 1 for r in rows)
        inp = torch.from_numpy(pad_left([windows[r][:-1] for r in rows], width)).to(device)
        h = teacher.forward_all(inp)[inp > 0]  # [P_b, Dt], row-major = window order
        dest = torch.from_numpy(np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows]))
        vals, ids = top_m_chunked(teacher.score_vectors, h, m, teacher.num_items)  # [P_b, M]
        vectors[dest] = h.cpu().half()
        top_ids[dest] = ids.cpu().int()
        top_logits[dest] = vals.cpu().half()
    return {"vectors": vectors, "top_ids": top_ids, "top_logits": top_logits,
            "offsets": torch.from_numpy(offsets)}  # fmt: skip


def teacher_cache(
    teacher: SeqRecModel,
    windows: list[np.ndarray],
    top_m: int,
    cache_dir: str | Path | None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Load the teacher cache from ``cache_dir`` or build (and store) it.

    Returns:
        The cache and whether it was loaded from disk.
    """
    digest = teacher.digest() if hasattr(teacher, "digest") else state_digest(teacher)
    key = hashlib.sha256(
        f"{digest}|{_windows_digest(windows)}|{top_m}".encode()
    ).hexdigest()[:20]
    path = Path(cache_dir) / f"teacher-{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        return load_file(str(path)), True
    cache = (build_teacher_cache(teacher, windows, top_m, device=device)
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


__all__ = ["build_prefix_cache", "build_teacher_cache", "cache_batch_hook", "teacher_cache",
           "top_m_chunked", "window_offsets"]
