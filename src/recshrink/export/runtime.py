"""One small runtime: ``Predictor.load(artifact).recommend(histories, k)`` with raw item ids.

The backend follows the artifact (:func:`recshrink.export.backends.open_backend`): ``.onnx`` ->
ONNX Runtime, ``.engine``/``.plan`` -> TensorRT, ``.pt2`` -> an AOTInductor package, a model
directory (or ``.pt``) -> PyTorch. Exported files carry an ``<name>.items.json`` sidecar (raw
item ids and the most popular items) written by
:func:`recshrink.export.artifacts.write_sidecar`; model directories carry ``items.json``.

What the runtime does for the caller: maps raw ids to model ids (unknown items are skipped and
counted), keeps the last ``max_len`` items, left-pads, answers empty histories from item
popularity, and splits large batches into the backend's batch buckets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.export import Dim

from recshrink.version import __version__
from recshrink.errors import RecshrinkError
from recshrink.export.artifacts import id_map_fingerprint, meta_path, write_sidecar
from recshrink.export.backends import Backend, open_backend
from recshrink.export.onnx import ServingHead, trim_for_graph
from recshrink.fsutil import atomic_path, atomic_write_text


@dataclass
class Recommendations:
    """Top-k answers for a batch of histories.

    Attributes:
        ids: Raw item ids per user, best first.
        scores: Scores ``[B, k]`` (NaN for popularity answers to empty histories).
        unknown: Items in the input that the model does not know (skipped).
        empty: Users whose history was empty after skipping (answered by popularity).
        nonfinite: Users whose returned scores hold a NaN or ``+inf``: the model gave no
            usable answer, so their id list is empty (their scores row is kept as returned).
    """

    ids: list[list]
    scores: np.ndarray
    unknown: int = 0
    empty: int = 0
    nonfinite: int = 0


def _check_int_id(x, where: str) -> None:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer, str)):
        raise ValueError(f"{where}: item ids must be integers (or strings), got {x!r}")
    if isinstance(x, (int, np.integer)) and x < 0:
        raise ValueError(f"{where}: item ids must be non-negative, got {x}")


class Predictor:
    """Serve ``recommend(histories, k)`` from an exported or saved model.

    Use :meth:`load`; the constructor takes an already opened backend.
    """

    def __init__(self, backend: Backend, item_ids: Sequence[str], popular: Sequence[int]) -> None:
        self.backend = backend
        self.item_ids = [str(x) for x in item_ids] or [str(i) for i in range(1, backend.num_items + 1)]
        if len(self.item_ids) != backend.num_items:
            raise RecshrinkError(f"id map has {len(self.item_ids)} items, the model "
                                 f"{backend.num_items}")  # fmt: skip
        self.index = {raw: i + 1 for i, raw in enumerate(self.item_ids)}
        numeric = all(x.lstrip("-").isdigit() for x in self.item_ids)
        self._out = [int(x) for x in self.item_ids] if numeric else list(self.item_ids)
        self.popular = [int(p) for p in popular] or list(range(1, backend.num_items + 1))

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None, device: str = "cpu") -> Predictor:
        """Open an artifact, choosing the backend from what it is.

        Args:
            path: ``.onnx``, ``.engine``/``.plan``, ``.pt2``, or a model directory / ``.pt``.
            threads: CPU threads for ONNX Runtime / PyTorch.
            device: ``"cpu"`` or ``"cuda"`` for PyTorch and AOTInductor artifacts.

        Raises:
            RecshrinkError: Missing or unknown artifact, or a backend that is not installed.
        """
        backend = open_backend(path, device=device, threads=threads)
        item_ids, popular = backend.id_map()
        return cls(backend, item_ids, popular)

    # -- input handling ------------------------------------------------------------------------
    def encode(self, histories: Sequence[Sequence]) -> tuple[np.ndarray, int, np.ndarray]:
        """Raw histories -> left-padded model ids ``[B, L]``, unknown count, empty-row mask.

        Raises:
            ValueError: Not a list of id lists, non-integer or negative ids.
        """
        if isinstance(histories, (str, bytes)) or not isinstance(histories, (Sequence, np.ndarray)):
            raise ValueError("histories must be a list of item-id lists")
        if isinstance(histories, np.ndarray) and histories.ndim != 2:
            raise ValueError(f"a history array must have rank 2 [users, items], got rank "
                             f"{histories.ndim}")  # fmt: skip
        max_len = self.backend.max_len
        rows, unknown = [], 0
        for u, hist in enumerate(histories):
            if isinstance(hist, (str, bytes)) or not isinstance(hist, (Sequence, np.ndarray)):
                raise ValueError(f"history {u}: expected a list of item ids, got {type(hist).__name__}")
            if isinstance(hist, np.ndarray) and hist.dtype.kind not in "iuU":
                raise ValueError(f"history {u}: item ids must be integers, got dtype {hist.dtype}")
            ids = []
            for x in hist:
                _check_int_id(x, f"history {u}")
                i = self.index.get(str(x))
                if i is None:
                    if not (isinstance(x, (int, np.integer)) and x == 0):  # 0 is padding
                        unknown += 1
                    continue
                ids.append(i)
            rows.append(ids[-max_len:])
        width = max(2, max((len(r) for r in rows), default=0))
        seq = np.zeros((len(rows), width), dtype=np.int64)
        for r, ids in enumerate(rows):
            if ids:
                seq[r, width - len(ids):] = ids
        return seq, unknown, np.array([not r for r in rows], dtype=bool)

    def recommend(self, histories: Sequence[Sequence], k: int = 10) -> Recommendations:
        """Top-``k`` raw item ids for each history (items already in the history excluded).

        A history whose returned scores hold a NaN or ``+inf`` gets an empty id list (no fake
        answer) and is counted in :attr:`Recommendations.nonfinite`.

        Raises:
            ValueError: Bad histories or ``k`` outside ``1..num_items``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"k must be an integer, got {k!r}")
        if not 1 <= k <= self.backend.num_items:
            raise ValueError(f"k must be in 1..{self.backend.num_items}, got {k}")
        seq, unknown, empty = self.encode(histories)
        n = len(seq)
        scores = np.full((n, k), np.nan, dtype=np.float32)
        ids = np.zeros((n, k), dtype=np.int64)
        live = np.flatnonzero(~empty)
        step = self.backend.max_batch or max(1, len(live))
        for i in range(0, len(live), step):
            rows = live[i : i + step]
            s, t = self.backend.run(trim_for_graph(seq[rows], self.backend.fixed_len), k)
            scores[rows], ids[rows] = s, t
        if empty.any():
            ids[empty] = np.array(self.popular[:k] + list(range(1, k + 1)))[:k]
        # empty rows carry NaN scores by design (popularity answers); only model answers count
        bad = ~empty & (np.isnan(scores) | np.isposinf(scores)).any(axis=1)  # [B]
        out = [[] if b else [self._out[j - 1] for j in row] for row, b in zip(ids.tolist(), bad)]
        return Recommendations(out, scores, unknown, int(empty.sum()), int(bad.sum()))


def export_aoti(model, path: str | Path, *, k: int = 10, device: str = "cpu",
                item_ids: Sequence[str] = (), popular: Sequence[int] = (),
                max_batch: int = 4096) -> Path:  # fmt: skip
    """Compile the model with its serving head into an AOTInductor package (``.pt2``).

    The package loads with ``torch._inductor.aoti_load_package`` without the recshrink model
    code. Batch (1..``max_batch``) and sequence length (2..``max_len``) stay dynamic. Metadata
    goes to ``<name>.meta.json`` and the id map to ``<name>.items.json``.

    Raises:
        RecshrinkError: torch.export or Inductor failed.
    """
    p = Path(path)
    model = model.eval().to(device)
    head = ServingHead(model, min(k, model.num_items), mask_history=True)
    max_len = max(model.max_len, 3)
    example = torch.randint(1, model.num_items + 1, (4, max_len), device=device)
    example[0, : max_len // 2] = 0
    # torch.export unrolls GRU/LSTM over time: their packages take a fixed length (inputs are
    # left-padded to it; the models give the same scores whatever the padding)
    fixed_len = model.max_len if model.arch in ("gru", "lstm") else None
    if fixed_len:
        example = example[:, -fixed_len:]
    seq_dim = None if fixed_len else Dim("seq_len", min=2, max=max_len)
    try:
        with torch.inference_mode(False), torch.no_grad():
            ep = torch.export.export(head, (example,), dynamic_shapes={
                "seq": {0: Dim("batch", min=1, max=max_batch), 1: seq_dim}})
            with atomic_path(p) as tmp:
                torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp.with_suffix(".pt2")))
                tmp.with_suffix(".pt2").replace(tmp)
    except Exception as exc:  # export / inductor raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecshrinkError(f"AOTInductor export of {model.arch} failed: {first[:300]}") from None
    atomic_write_text(meta_path(p), json.dumps({
        "recshrink_version": __version__, "arch": model.arch, "num_items": model.num_items,
        "max_len": model.max_len, "k": head.k, "device": device, "max_batch": max_batch,
        "fixed_len": fixed_len,
        "id_map_fingerprint": id_map_fingerprint(item_ids) if item_ids else ""}, indent=2))
    if item_ids:
        write_sidecar(p, item_ids, popular)
    return p


__all__ = ["Predictor", "Recommendations", "export_aoti"]
