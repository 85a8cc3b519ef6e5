"""Retrieval artifacts: a user encoder plus an approximate-nearest-neighbour item index.

For catalogues of 100k items and more, scoring every item inside the graph *is* the latency.
A retrieval artifact splits the model in two (:func:`export_retrieval`):

``<name>/`` (a directory)
  ``encoder.onnx``       histories ``[B, L]`` -> user vectors ``[B, D]`` (no catalogue inside),
                         run by ONNX Runtime; its metadata holds the catalogue fingerprint
  ``encoder.items.json`` the raw item ids and popular items (the usual sidecar)
  ``items.faiss``        a FAISS index of the item table's rows 1..N (inner product): HNSW, IVF-PQ
                         or exact Flat, with fp32, INT8 or PQ codes
  ``retrieval.json``     what ties them together: catalogue fingerprint, metric, index spec and
                         search parameters, the index file's sha256, and the index's recall@K
                         against exact scoring measured at build time on validation users

:class:`AnnSearcher` serves it (backend ``ann``): the encoder, then an index search that
over-fetches ``k`` plus the history's length and drops the history's own items, so
:class:`recshrink.export.runtime.Predictor` answers ``recommend(histories, k)`` with the same
raw-id contract as an exact artifact. Quality goes through the one ranking helper: the items the
index returns keep their scores and every other item ranks after all of them
(:func:`recshrink.export.onnx.scores_from_topk`).

The index itself (kinds, defaults by catalogue size, recall) is :mod:`recshrink.export.ann_index`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from recshrink.compare import topk_overlap
from recshrink.errors import RecshrinkError
from recshrink.export.ann_index import (
    RetrievalConfig, import_faiss, build_index, exact_top, index_recall, set_search_params,
)  # fmt: skip
from recshrink.export.artifacts import (
    RETRIEVAL_MANIFEST as MANIFEST, id_map_fingerprint, read_id_map, write_sidecar,
)  # fmt: skip
from recshrink.export.onnx import (
    OnnxExportConfig, export_onnx, fixed_len_of, onnx_metadata, ort_session, scores_from_topk,
    trim_for_graph,
)  # fmt: skip
from recshrink.fsutil import write_json
from recshrink.models.base import SeqRecModel
from recshrink.version import __version__

ENCODER, INDEX = "encoder.onnx", "items.faiss"
QUALITY_K = 20  # items fetched per user (plus the history) when quality is measured


def catalogue_fingerprint(items: np.ndarray, item_ids) -> str:
    """A short hash of the item vectors and their raw ids: what encoder and index must share."""
    h = hashlib.sha256(np.ascontiguousarray(items, dtype=np.float32).tobytes())
    h.update(id_map_fingerprint(item_ids).encode())
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_retrieval(
    model: SeqRecModel,
    out: str | Path,
    *,
    histories: np.ndarray,
    item_ids: list[str],
    popular: list[int],
    steps: list[dict],
    config: RetrievalConfig | None = None,
    min_agreement: float = 0.99,
) -> dict:
    """Write a retrieval artifact: the user encoder as ONNX plus a FAISS index of the item table.

    The directory is built under a temporary name and renamed into place when complete; a
    failed check leaves nothing behind.

    Args:
        model: The model (its :meth:`~recshrink.models.base.SeqRecModel.encode` and
            :meth:`~recshrink.models.base.SeqRecModel.item_table`).
        out: The artifact directory.
        histories: Validation histories ``[U, L]``: the encoder is checked against PyTorch on
            them and the index's recall is measured for their users.
        item_ids: Raw id of each item 1..N.
        popular: The most popular model ids (answers to empty histories).
        steps: The steps that made the model (recorded).
        config: The index (:class:`RetrievalConfig`; defaults by catalogue size).
        min_agreement: Fail when fewer than this share of the encoder's user vectors match
            PyTorch's top-10 (exact scoring of both).

    Returns:
        The ``export`` block of report.json: path, bytes, index spec, recall, build seconds.

    Raises:
        RecshrinkError: FAISS missing, the encoder export failed or disagrees with PyTorch,
            non-finite vectors, or recall below ``config.min_recall``.
    """
    out = Path(out)
    model = model.eval().cpu()
    with torch.no_grad():
        items = model.item_table()[1:].float().numpy()  # [N, D]
    cfg = (config or RetrievalConfig()).resolve(model.num_items, items.shape[1])
    if not np.isfinite(items).all():
        raise RecshrinkError(f"{out}: the item table holds NaN or infinite values; no index built")
    fp = catalogue_fingerprint(items, item_ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        enc = tmp / ENCODER
        export_onnx(model, enc, OnnxExportConfig(head="user"),
                    metadata={"steps": steps, "id_map_fingerprint": id_map_fingerprint(item_ids),
                              "catalogue_fingerprint": fp})  # fmt: skip
        hist = np.asarray(histories)[: cfg.recall_users or 200]
        users, check = _check_encoder(enc, model, hist, items)
        if check["nonfinite"]:
            raise RecshrinkError(f"{out}: the encoder gives NaN or infinite user vectors for "
                                 f"{check['nonfinite']} of {check['users']} validation users")  # fmt: skip
        if check["users"] and check["agreement@10"] < min_agreement:
            raise RecshrinkError(f"{out}: encoder top-10 agreement with PyTorch "
                                 f"{check['agreement@10']:.4f} is below {min_agreement}")  # fmt: skip
        t0 = time.perf_counter()
        index = build_index(items, cfg)
        build_s = time.perf_counter() - t0
        k = min(cfg.recall_k, model.num_items)
        recall = index_recall(index, users[: cfg.recall_users], items, k) if cfg.recall_users else None
        if recall is not None and recall < cfg.min_recall:
            raise RecshrinkError(f"{out}: index recall@{k} {recall:.4f} against exact scoring is "
                                 f"below min_recall {cfg.min_recall} ({cfg.spec()}); raise "
                                 "ef_search/nprobe or use another index")  # fmt: skip
        import_faiss().write_index(index, str(tmp / INDEX))
        write_sidecar(enc, item_ids, popular)
        manifest = {
            "recshrink_version": __version__, "format": "retrieval", "metric": "inner_product",
            "arch": model.arch, "num_items": model.num_items, "max_len": model.max_len,
            "dim": int(items.shape[1]), "catalogue_fingerprint": fp,
            "id_map_fingerprint": id_map_fingerprint(item_ids),
            "encoder": ENCODER, "index_file": INDEX, "index_sha256": _sha256(tmp / INDEX),
            "index": {**asdict(cfg), "spec": cfg.spec()},
            f"recall@{k}": None if recall is None else round(recall, 6),
            "recall_users": len(users[: cfg.recall_users]) if cfg.recall_users else 0,
            "build_s": round(build_s, 3), "encoder_check": check, "steps": steps,
            "bytes": {"encoder": enc.stat().st_size, "index": (tmp / INDEX).stat().st_size},
        }  # fmt: skip
        write_json(tmp / MANIFEST, manifest)
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"format": "retrieval", "path": str(out), "bytes": artifact_size(out),
            "index": cfg.spec(), f"recall@{k}": manifest[f"recall@{k}"],
            "build_s": manifest["build_s"], "encoder_agreement@10": check.get("agreement@10"),
            "max_abs_diff": check.get("max_abs_diff")}  # fmt: skip


def _check_encoder(path: Path, model: SeqRecModel, hist: np.ndarray,
                   items: np.ndarray) -> tuple[np.ndarray, dict]:  # fmt: skip
    """The encoder's user vectors for ``hist`` and their check against PyTorch: max |diff| of
    the vectors and top-10 agreement of exact scoring with each."""
    if not len(hist):
        return np.zeros((0, items.shape[1]), np.float32), {"users": 0, "nonfinite": 0}
    sess = ort_session(path, 1)
    fixed = fixed_len_of(onnx_metadata(path))
    got, ref = [], []
    for i in range(0, len(hist), 256):
        h = trim_for_graph(hist[i : i + 256], fixed)
        got.append(sess.run(["user"], {"seq": h})[0])
        with torch.no_grad():
            ref.append(model.encode(torch.from_numpy(h)).float().numpy())
    u, r = np.concatenate(got), np.concatenate(ref)  # [U, D]
    bad = int((~np.isfinite(u)).any(axis=1).sum())
    k = min(10, len(items))
    agree = 0.0 if bad else topk_overlap(torch.from_numpy(exact_top(u, items, k)),
                                         torch.from_numpy(exact_top(r, items, k)))  # fmt: skip
    return u, {"users": len(u), "nonfinite": bad, "agreement@10": round(agree, 6),
               "max_abs_diff": float(np.abs(u - r).max()) if not bad else float("nan")}


def artifact_size(path: str | Path) -> int:
    """Bytes of a retrieval artifact: its encoder graph and its index."""
    p = Path(path)
    return sum((p / f).stat().st_size for f in (ENCODER, INDEX) if (p / f).is_file())


def read_manifest(path: str | Path) -> dict:
    """The artifact's ``retrieval.json``, with encoder and index checked to belong together.

    Raises:
        RecshrinkError: A missing or unreadable file, or an index or encoder of another
            catalogue.
    """
    p = Path(path)
    man = p / MANIFEST
    try:
        meta = json.loads(man.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecshrinkError(f"{man}: not a readable retrieval manifest: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "retrieval":
        raise RecshrinkError(f"{man}: not a retrieval manifest (no format: retrieval)")
    for key in ("encoder", "index_file"):
        f = p / str(meta.get(key, ""))
        if not meta.get(key) or not f.is_file():
            raise RecshrinkError(f"{f}: missing (the {key.replace('_file', '')} of {p})")
    enc_fp = onnx_metadata(p / meta["encoder"]).get("catalogue_fingerprint")
    if enc_fp != meta.get("catalogue_fingerprint"):
        raise RecshrinkError(f"{p / meta['encoder']}: the encoder was exported for catalogue "
                             f"{enc_fp}, the index was built for {meta.get('catalogue_fingerprint')}")  # fmt: skip
    if _sha256(p / meta["index_file"]) != meta.get("index_sha256"):
        raise RecshrinkError(f"{p / meta['index_file']}: not the index built with this encoder "
                             f"(its sha256 differs from {man.name}'s)")  # fmt: skip
    return meta


class AnnSearcher:
    """A retrieval artifact opened for search: ONNX Runtime runs the encoder, FAISS the index
    (:func:`recshrink.export.backends.open_backend` serves it as backend ``ann``).

    :meth:`run` over-fetches ``k`` plus the longest history of the batch, drops each history's
    own items, and raises ValueError when the index returns fewer than ``k`` others even after
    fetching more. :meth:`score` fetches :data:`QUALITY_K` plus the history per user and gives
    full scores through :func:`scores_from_topk` (every item the index did not return ranks
    after every returned one).

    Raises:
        RecshrinkError: FAISS missing, or an artifact whose parts do not belong together.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        faiss = import_faiss()
        p = Path(path)
        self.meta = meta = read_manifest(p)
        self.num_items, self.max_len = int(meta["num_items"]), int(meta["max_len"])
        try:
            self.index = faiss.read_index(str(p / meta["index_file"]))
        except Exception as exc:  # faiss raises RuntimeError with a C++ trace
            raise RecshrinkError(f"{p / meta['index_file']}: not a readable FAISS index: "
                                 f"{str(exc).splitlines()[0][:200]}") from None  # fmt: skip
        if self.index.ntotal != self.num_items or self.index.d != int(meta["dim"]):
            raise RecshrinkError(f"{p / meta['index_file']}: holds {self.index.ntotal} vectors of "
                                 f"size {self.index.d}; the encoder's catalogue is "
                                 f"{self.num_items} of size {meta['dim']}")  # fmt: skip
        self.cfg = RetrievalConfig(**{f: v for f, v in meta["index"].items() if f != "spec"})
        set_search_params(self.index, self.cfg)
        if threads:
            faiss.omp_set_num_threads(threads)
        enc = p / meta["encoder"]
        self.session = ort_session(enc, threads)
        emeta = onnx_metadata(enc)
        self.fixed_len = fixed_len_of(emeta)
        self.id_map = read_id_map(enc, emeta.get("id_map_fingerprint"))
        k = self.cfg.recall_k
        self.info = {"index": self.cfg.spec(), f"recall@{k}": meta.get(f"recall@{k}"),
                     "build_s": meta.get("build_s"),
                     "index_bytes": meta.get("bytes", {}).get("index"),
                     "encoder": "onnxruntime", "threads": threads}  # fmt: skip

    def search(self, seq: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoder then index: ``(scores [B, F], model ids [B, F])``; 0 where nothing came back."""
        user = self.session.run(["user"], {"seq": seq})[0]  # [B, D]
        top, idx = self.index.search(np.ascontiguousarray(user, dtype=np.float32),
                                     min(fetch, self.num_items))  # fmt: skip
        return top, idx + 1  # rows 1..N; -1 (nothing returned) becomes 0

    def run(self, seq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores [B, k], ids [B, k])``, each history's own items excluded."""
        n = self.num_items
        if not 1 <= k <= n:
            raise ValueError(f"k must be in 1..{n}, got {k}")
        fetch = k + int((seq != 0).sum(axis=1).max(initial=0))
        while True:
            top, ids = self.search(seq, fetch)  # [B, F]
            drop = (ids == 0) | (ids[:, :, None] == seq[:, None, :]).any(axis=2)  # [B, F]
            keep = (~drop).sum(axis=1)  # [B]
            if keep.min(initial=k) >= k or fetch >= n:
                break
            fetch = min(n, 2 * fetch)
        if keep.min(initial=k) < k:
            knob = "nprobe" if self.cfg.index == "ivfpq" else "ef_search"
            raise ValueError(f"k={k} is more than the index returns for this history "
                             f"({int(keep.min())} items); lower k or raise {knob}")  # fmt: skip
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept items first, best first
        return (np.take_along_axis(top, order, 1).astype(np.float32),
                np.take_along_axis(ids, order, 1).astype(np.int64))  # fmt: skip

    def score(self, hist: torch.Tensor) -> torch.Tensor:
        """Full scores ``[B, N + 1]`` through the index, for the one ranking helper."""
        h = trim_for_graph(hist.numpy(), self.fixed_len)
        top, ids = self.search(h, QUALITY_K + int((h != 0).sum(axis=1).max(initial=0)))
        miss = ids == 0
        if miss.any():  # nothing returned there: the padding column, at the row's lowest score
            low = np.where(miss, np.inf, top).min(axis=1, keepdims=True)
            top = np.where(miss, low, top)
        return scores_from_topk(top, ids, self.num_items)


__all__ = ["AnnSearcher", "RetrievalConfig", "catalogue_fingerprint", "export_retrieval",
           "read_manifest"]
