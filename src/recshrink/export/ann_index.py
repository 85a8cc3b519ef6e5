"""The item index of a retrieval artifact: FAISS HNSW, IVF-PQ or exact Flat over the item table
(inner product), its defaults by catalogue size, and its recall against exact scoring.

FAISS (``faiss-cpu``, the ``ann`` extra) is imported only inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from recshrink.compare import topk_overlap
from recshrink.errors import RecshrinkError

INDEXES = ("auto", "hnsw", "ivfpq", "flat")
CODES = ("auto", "fp32", "int8", "pq")
LARGE = 2_000_000  # from this many items "auto" builds IVF-PQ instead of HNSW


def import_faiss():
    """The ``faiss`` module, or one line naming the extra to install."""
    try:
        import faiss
    except ImportError:
        raise RecshrinkError("retrieval artifacts need FAISS: pip install 'recshrink[ann]'") from None
    return faiss


@dataclass(frozen=True)
class RetrievalConfig:
    """The item index of a retrieval artifact (validated on construction; ``None`` = the
    default for the catalogue's size, see :meth:`resolve`).

    Attributes:
        index: ``"hnsw"`` (graph; the default below 2M items), ``"ivfpq"`` (inverted lists
            with product-quantized codes; the default from 2M), ``"flat"`` (exact, the
            baseline), or ``"auto"``.
        codes: Stored vectors: ``"fp32"``, ``"int8"`` (scalar-quantized, 4x smaller) or
            ``"pq"`` (IVF-PQ's codes); ``"auto"`` = fp32 for HNSW/Flat, pq for IVF-PQ.
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW build beam (default 80).
        ef_search: HNSW search beam (default 64 below 200k items, 128 from 200k).
        nlist: IVF lists (default about 4 sqrt(N), at most N / 39).
        nprobe: IVF lists searched (default nlist / 64, at least 16).
        pq_m: PQ sub-quantizers (default D / 2, bytes per vector at 8 bits).
        pq_bits: Bits per PQ code.
        recall_k: The K of the recall measured at build time.
        recall_users: Validation users whose recall is measured (0 = skip).
        min_recall: Fail the export when the measured recall@K is below this.
        threads: FAISS threads while building (None = FAISS's default).
    """

    index: str = "auto"
    codes: str = "auto"
    hnsw_m: int = 32
    ef_construction: int | None = None
    ef_search: int | None = None
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    pq_bits: int = 8
    recall_k: int = 10
    recall_users: int = 2000
    min_recall: float = 0.9
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.index not in INDEXES:
            raise ValueError(f"index must be one of {', '.join(INDEXES)}, got {self.index!r}")
        if self.codes not in CODES:
            raise ValueError(f"codes must be one of {', '.join(CODES)}, got {self.codes!r}")
        if self.codes == "pq" and self.index in ("hnsw", "flat"):
            raise ValueError(f"codes 'pq' go with index 'ivfpq', not {self.index!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m",
                     "pq_bits", "recall_k", "threads"):  # fmt: skip
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.recall_users < 0:
            raise ValueError(f"recall_users must be >= 0, got {self.recall_users}")
        if not 0.0 <= self.min_recall <= 1.0:
            raise ValueError(f"min_recall must be in [0, 1], got {self.min_recall}")

    def resolve(self, num_items: int, dim: int) -> RetrievalConfig:
        """Every ``None``/``"auto"`` replaced by its default for ``num_items`` vectors of ``dim``."""
        index = self.index if self.index != "auto" else ("hnsw" if num_items < LARGE else "ivfpq")
        codes = self.codes if self.codes != "auto" else ("pq" if index == "ivfpq" else "fp32")
        if index == "ivfpq" and codes != "pq":
            raise ValueError(f"index 'ivfpq' stores pq codes, not {codes!r}")
        nlist = self.nlist or max(1, min(int(4 * num_items**0.5), num_items // 39))
        pq_m = self.pq_m or max(1, dim // 2)
        if index == "ivfpq" and dim % pq_m:
            raise ValueError(f"pq_m {pq_m} must divide the vector size {dim}")
        return replace(self, index=index, codes=codes, nlist=nlist, pq_m=pq_m,
                       ef_construction=self.ef_construction or 80,
                       ef_search=self.ef_search or (64 if num_items < 200_000 else 128),
                       nprobe=min(nlist, self.nprobe or max(16, nlist // 64)))  # fmt: skip

    def spec(self) -> str:
        """A short name of a resolved index, e.g. ``HNSW32,fp32 (ef 64)``."""
        if self.index == "hnsw":
            return f"HNSW{self.hnsw_m},{self.codes} (efSearch {self.ef_search})"
        if self.index == "ivfpq":
            return f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits} (nprobe {self.nprobe})"
        return f"Flat,{self.codes}"


def build_index(vectors: np.ndarray, cfg: RetrievalConfig):
    """A FAISS inner-product index of ``vectors`` ``[N, D]`` (float32), as ``cfg`` (resolved)
    says; IVF-PQ is trained on the vectors themselves (at most 256 per PQ centroid and 64 per
    list).

    Raises:
        RecshrinkError: FAISS is not installed.
    """
    faiss = import_faiss()
    if cfg.threads:
        faiss.omp_set_num_threads(cfg.threads)
    x = np.ascontiguousarray(vectors, dtype=np.float32)  # [N, D]
    n, d = x.shape
    ip = faiss.METRIC_INNER_PRODUCT
    if cfg.index == "flat":
        index = (faiss.IndexFlatIP(d) if cfg.codes == "fp32" else
                 faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, ip))  # fmt: skip
    elif cfg.index == "hnsw":
        index = (faiss.IndexHNSWFlat(d, cfg.hnsw_m, ip) if cfg.codes == "fp32" else
                 faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, cfg.hnsw_m, ip))  # fmt: skip
        index.hnsw.efConstruction = cfg.ef_construction
    else:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, cfg.nlist, cfg.pq_m, cfg.pq_bits, ip)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        need = max(64 * cfg.nlist, 256 * 2**cfg.pq_bits // 8) if cfg.index == "ivfpq" else n
        sample = x[rng.choice(n, min(n, need), replace=False)] if need < n else x
        index.train(sample)
    index.add(x)
    set_search_params(index, cfg)
    return index


def set_search_params(index, cfg: RetrievalConfig) -> None:
    """Apply ``ef_search`` (HNSW) or ``nprobe`` (IVF) to an index."""
    if cfg.index == "hnsw":
        index.hnsw.efSearch = cfg.ef_search
    elif cfg.index == "ivfpq":
        index.nprobe = cfg.nprobe


def exact_top(users: np.ndarray, items: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    """Exact top-``k`` row indices of ``users @ items.T``, chunked over users: ``[U, k]``."""
    it = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))  # [N, D]
    out = []
    for i in range(0, len(users), chunk):
        s = torch.from_numpy(np.ascontiguousarray(users[i : i + chunk], dtype=np.float32)) @ it.T
        out.append(s.topk(k, dim=1).indices.numpy())  # [b, k]
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def index_recall(index, users: np.ndarray, items: np.ndarray, k: int) -> float:
    """Recall@``k`` of ``index`` against exact inner-product search of ``items`` for ``users``."""
    if not len(users):
        return float("nan")
    _, got = index.search(np.ascontiguousarray(users, dtype=np.float32), k)  # [U, k]
    return topk_overlap(torch.from_numpy(got), torch.from_numpy(exact_top(users, items, k)))


__all__ = ["CODES", "INDEXES", "RetrievalConfig", "build_index", "exact_top", "import_faiss",
           "index_recall", "set_search_params"]
