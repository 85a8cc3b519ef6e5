"""One serving layer: a model artifact opened on a back end, for the runtime and the benchmark.

:func:`open_backend` opens an artifact (its kind from :func:`recshrink.export.artifacts.
artifact_kind`) on one of :data:`BACKENDS`:

* checkpoints (a model directory, ``.pt``): ``torch`` (eager, fp32 or ``dtype`` fp16/bf16 on a
  GPU), ``torch-compile`` (``torch.compile``), ``torch-cudagraph`` (CUDA-graph replay per batch
  size and sequence-length bucket);
* ``.onnx``: ``onnxruntime``; ``.pt2``: ``aoti``; ``.engine``/``.plan``: ``tensorrt``;
* a retrieval artifact (user encoder plus item index, :mod:`recshrink.export.retrieval`):
  ``ann`` (the encoder in ONNX Runtime, the index in FAISS, history items dropped after an
  over-fetch);
* a foreign teacher (an ONNX graph recshrink did not export, a ``torch.export`` program, or a
  :class:`~recshrink.teachers.protocol.ScoresTeacher` object, :func:`scores_backend`): its own
  runtime only (ONNX Runtime; the program's module in eager PyTorch), its scores, history
  masking and top-K as its user would serve it.

The :class:`Backend` it returns serves both callers with the same loaded model:
:class:`recshrink.export.runtime.Predictor` asks ``run(seq, k)`` (host in, host top-k out), the
benchmark times ``call(prepare(batch))`` (the serving head, history masking and top-K inside;
then ``sync``) and measures quality through ``scorer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recshrink.errors import RecshrinkError
from recshrink.export.artifacts import CHECKPOINT_SUFFIXES, artifact_kind, read_id_map, read_meta
from recshrink.export.onnx import (
    ServingHead, fixed_len_of, onnx_metadata, onnx_scorer, ort_session, trim_for_graph,
)  # fmt: skip
from recshrink.export.retrieval import AnnSearcher
from recshrink.export.tensorrt import TensorRTRunner, tensorrt_scorer
from recshrink.teachers import is_recbole_checkpoint, open_model, open_teacher
from recshrink.teachers.checkpoint import read_checkpoint
from recshrink.teachers.recbole_code import needs_recbole_code
from recshrink.teachers.program import is_export_program
from recshrink.teachers.protocol import ScoresTeacher
from recshrink.train.evaluate import ScoreFn, model_scorer

BACKENDS = ("torch", "torch-compile", "torch-cudagraph", "onnxruntime", "aoti", "tensorrt", "ann")
GPU_ONLY = ("torch-cudagraph", "tensorrt")
KIND_BACKENDS = {  # the backends that run each artifact kind, its default first
    "checkpoint": ("torch", "torch-compile", "torch-cudagraph"),
    "onnx": ("onnxruntime",),
    "pt2": ("aoti",),
    "engine": ("tensorrt",),
    "retrieval": ("ann",),
}

# a foreign teacher's own runtime (a checkpoint: a RecBole model without a native conversion)
FOREIGN_BACKEND = {"onnx": "onnxruntime", "pt2": "torch", "checkpoint": "torch"}

TopK = tuple[np.ndarray, np.ndarray]  # (scores [B, k] float32, ids [B, k] int64), on the host


@dataclass
class Backend:
    """A model artifact opened on one back end.

    Attributes:
        name: Backend name (one of :data:`BACKENDS`).
        kind: Artifact kind (``"onnx"``, ``"engine"``, ``"pt2"``, ``"checkpoint"``).
        path: The artifact.
        num_items: Catalogue size N.
        max_len: Longest history the model reads.
        run: ``run(seq [B, L] int64, k) -> (scores [B, k], ids [B, k])`` on the host, the
            history's own items excluded (what :class:`~recshrink.export.runtime.Predictor`
            serves with). Raises ValueError for a ``k`` the artifact cannot return.
        prepare: Host batch ``[B, L]`` int64 -> the input ``call`` takes (e.g. a CUDA tensor).
        call: Runs the serving head on one prepared batch (what the benchmark times).
        sync: Called after ``call`` when timing (CUDA synchronize), or None.
        scorer: Full scores ``[B, N + 1]`` for quality measurement, or None.
        fixed_len: Inputs must be left-padded to this length (fixed-length graphs and packages).
        max_batch: Largest batch the artifact takes (None = any).
        meta: The artifact's metadata (ONNX ``metadata_props`` or its ``.meta.json``).
        info: Backend details for a benchmark report (device, dtype, threads, provider, ...).
        own_id_map: ``(item_ids, popular)`` a checkpoint carries; None where a sidecar does.
    """

    name: str
    kind: str
    path: Path
    num_items: int
    max_len: int
    run: Callable[[np.ndarray, int], TopK]
    prepare: Callable[[np.ndarray], object]
    call: Callable[[object], object]
    sync: Callable[[], None] | None = None
    scorer: ScoreFn | None = None
    fixed_len: int | None = None
    max_batch: int | None = None
    meta: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    own_id_map: tuple[list, list] | None = None

    def id_map(self) -> tuple[list, list]:
        """``(item_ids, popular)``: the checkpoint's own, or the exported artifact's sidecar
        (checked against the artifact's ``id_map_fingerprint``)."""
        if self.own_id_map is not None:
            return self.own_id_map
        return read_id_map(self.path, self.meta.get("id_map_fingerprint"))


def is_foreign(path: str | Path) -> bool:
    """Whether ``path`` is a teacher recshrink did not export: an ONNX graph without recshrink's
    metadata, a ``torch.export`` program (not an AOTInductor package), or a RecBole checkpoint
    run by RecBole's code. An unreadable file is not (opening it says why)."""
    kind = artifact_kind(path)
    try:
        if kind == "onnx":
            return Path(path).is_file() and "recshrink_version" not in onnx_metadata(path)
        if kind == "checkpoint":
            return is_recbole_checkpoint(path) and needs_recbole_code(read_checkpoint(path))
        return kind == "pt2" and is_export_program(path)
    except Exception:  # a broken file: open_backend names the problem
        return False


def own_backends(path: str | Path, foreign: bool | None = None) -> tuple[str, ...]:
    """The backends that run the artifact at ``path``, its default first: a foreign teacher's
    own runtime only (``foreign``: :func:`is_foreign`'s answer, when the caller has it)."""
    kind = artifact_kind(path)
    foreign = is_foreign(path) if foreign is None else foreign
    return (FOREIGN_BACKEND[kind],) if foreign else KIND_BACKENDS[kind]


def open_backend(path: str | Path, backend: str | None = None, *, device: str = "cpu",
                 threads: int | None = None, dtype: str = "fp32", k: int = 10,
                 num_items: int | None = None, item_ids: list | None = None) -> Backend:  # fmt: skip
    """Open the artifact at ``path`` on ``backend``.

    Args:
        path: ``.onnx``, ``.engine``/``.plan``, ``.pt2``, or a model directory / ``.pt``.
        backend: One of :data:`BACKENDS`; None = the artifact's default (``torch`` for a
            checkpoint, else its only backend).
        device: ``"cpu"`` or ``"cuda"`` for checkpoints (an AOTInductor package runs on the
            device it was compiled for; engines on the GPU).
        threads: CPU threads for ONNX Runtime / PyTorch on the CPU.
        dtype: ``"fp32"``, ``"fp16"`` or ``"bf16"`` weights for checkpoint backends.
        k: Items per user of a checkpoint's or foreign teacher's serving head (``call``);
            exported artifacts carry their own.
        num_items: The data's catalogue size, for a foreign graph whose metadata lacks it.
        item_ids: The data's raw item ids (a foreign graph with an id sidecar is translated).

    Raises:
        RecshrinkError: Missing or unknown artifact, a backend that does not apply to it, needs
            a GPU, or is not installed, or an artifact it cannot load.
    """
    p = Path(path)
    if backend is not None and backend not in BACKENDS:
        raise RecshrinkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if not p.exists():
        raise RecshrinkError(f"{p}: no such model file or directory")
    kind = artifact_kind(p)
    if kind == "checkpoint" and not p.is_dir() and p.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise RecshrinkError(f"{p}: unknown artifact (expected .onnx, .engine, .plan, .pt2, "
                             "or a model directory)")  # fmt: skip
    foreign = is_foreign(p)  # read once: it may load the file
    own = own_backends(p, foreign)
    backend = backend or own[0]
    if backend not in own:
        raise RecshrinkError(f"{p}: a foreign teacher runs on {own[0]} only, not {backend}"
                             if foreign else f"{p}: backend {backend} does not run a {kind} "
                             "artifact")  # fmt: skip
    if foreign:
        if threads and not device.startswith("cuda"):
            torch.set_num_threads(threads)
        teacher, _ = open_teacher(p, num_items, item_ids)
        return scores_backend(teacher, p, k)
    # an engine says itself what it lacks (its meta.json, TensorRT, or a GPU)
    gpu = backend == "torch-cudagraph" or device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        raise RecshrinkError(f"backend {backend} on {device} needs a CUDA GPU")
    if backend == "onnxruntime":
        return _onnx_backend(p, threads)
    if backend == "tensorrt":
        return _tensorrt_backend(p)
    if backend == "aoti":
        return _aoti_backend(p, device)
    if backend == "ann":
        return _ann_backend(p, threads, k)
    return _torch_backend(p, backend, device, threads, dtype, k)


def _host(h: np.ndarray) -> np.ndarray:
    return h


def scores_backend(teacher: ScoresTeacher, path: str | Path, k: int = 10) -> Backend:
    """A scores-only teacher served in its own runtime (``teacher.runtime``): its scores over
    the catalogue, then history masking and top-K in PyTorch, on histories padded to its length.

    Args:
        teacher: The teacher (:func:`recshrink.teacher_from_module`, ``_from_onnx``, ...).
        path: Its file, or a label for an object.
        k: Items per user of ``call``.
    """
    kk = min(k, teacher.num_items)

    def run(seq: np.ndarray, k: int) -> TopK:
        s = torch.from_numpy(seq)
        top = teacher.scores(s).scatter(1, s, float("-inf")).topk(k, dim=-1)
        return top.values.numpy(), top.indices.numpy()

    def call(x: torch.Tensor):
        with torch.inference_mode():
            return teacher.scores(x).scatter(1, x, float("-inf")).topk(kk, dim=-1)

    kind = {"onnxruntime": "onnx"}.get(teacher.runtime, "module")
    return Backend(teacher.runtime, kind, Path(path), teacher.num_items, teacher.max_len, run,
                   torch.from_numpy, call, scorer=teacher.scores, fixed_len=teacher.max_len,
                   info={"teacher": teacher.arch, "runtime": teacher.runtime, "foreign": True,
                         "threads": torch.get_num_threads()})  # fmt: skip


def _onnx_backend(path: Path, threads: int | None) -> Backend:
    try:
        meta = onnx_metadata(path)
        sess = ort_session(path, threads)
    except Exception as exc:  # onnx / ORT raise many types for a bad file
        first = str(exc).splitlines()[0][:200]
        raise RecshrinkError(f"{path}: not a loadable ONNX model: {first}") from None
    outputs = [o.name for o in sess.get_outputs()]
    if outputs == ["user"]:
        raise RecshrinkError(f"{path}: a user encoder without its item index: open the "
                             "retrieval directory it belongs to")  # fmt: skip
    if "ids" not in outputs:
        raise RecshrinkError(f"{path}: not a recshrink export (no 'ids' output)")
    graph_k = int(meta.get("k", "10"))

    def run(seq: np.ndarray, k: int) -> TopK:
        if k <= graph_k:
            s, i = sess.run(["scores", "ids"], {"seq": seq})
            return s[:, :k], i[:, :k]
        if "all_scores" not in outputs:
            raise ValueError(f"this export returns at most k={graph_k} (re-export with a larger k)")
        full = torch.from_numpy(sess.run(["all_scores"], {"seq": seq})[0])  # [B, N+1]
        full = full.scatter(1, torch.from_numpy(seq), float("-inf"))
        top = full.topk(k, dim=-1)
        return top.values.numpy(), top.indices.numpy()

    def call(h: np.ndarray):
        return sess.run(["scores", "ids"], {"seq": h})

    return Backend("onnxruntime", "onnx", path, int(meta["num_items"]), int(meta["max_len"]), run,
                   _host, call, scorer=onnx_scorer(path, session=sess),
                   fixed_len=fixed_len_of(meta), meta=meta,
                   info={"provider": "CPUExecutionProvider", "threads": threads})  # fmt: skip


def _ann_backend(path: Path, threads: int | None, k: int) -> Backend:
    """A retrieval artifact: ``call`` is the whole serving path (encoder, index search with
    over-fetch, history items dropped), ``scorer`` measures quality through the index."""
    ann = AnnSearcher(path, threads)
    kk = min(k, ann.num_items)
    return Backend("ann", "retrieval", path, ann.num_items, ann.max_len, ann.run, _host,
                   lambda h: ann.run(h, kk), scorer=ann.score, fixed_len=ann.fixed_len,
                   meta=ann.meta, info=ann.info, own_id_map=ann.id_map)  # fmt: skip


def _tensorrt_backend(path: Path) -> Backend:
    """An engine; ``call`` fetches its top-K outputs only (``scores``, ``ids``: what the ONNX
    Runtime backend fetches), ``scorer`` measures quality through the engine."""
    meta = read_meta(path)
    runner = TensorRTRunner(path)
    scorer = tensorrt_scorer(runner, meta)
    graph_k = int(meta.get("k", 10))

    def run(seq: np.ndarray, k: int) -> TopK:
        if k > graph_k:
            raise ValueError(f"this engine returns at most k={graph_k}")
        return runner.run(seq, k)

    def prepare(h: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(h).cuda()

    def call(x: torch.Tensor):
        return runner.run_torch(x, ("scores", "ids"))

    info = {"device": "cuda", "precision": meta.get("precision"),
            "quality_scores": "all_scores" if runner.has_output("all_scores") else "top-K fill"}
    return Backend("tensorrt", "engine", path, int(meta["num_items"]), int(meta["max_len"]), run,
                   prepare, call, sync=torch.cuda.synchronize, scorer=scorer,
                   fixed_len=fixed_len_of(meta), max_batch=int(meta.get("max_batch", 1024)),
                   meta=meta, info=info)  # fmt: skip


def _aoti_backend(path: Path, device: str) -> Backend:
    """An AOTInductor package, run on the device it was compiled for (its ``meta.json``)."""
    try:
        package = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        first = str(exc).splitlines()[0][:200]
        raise RecshrinkError(f"{path}: not a loadable AOTInductor package: {first}") from None
    meta = read_meta(path)
    dev = meta.get("device") or device
    graph_k = int(meta["k"])

    def prepare(h: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(h).to(dev)

    def run(seq: np.ndarray, k: int) -> TopK:
        if k > graph_k:
            raise ValueError(f"this package returns at most k={graph_k}")
        with torch.inference_mode():
            s, i = package(prepare(seq))
        return s[:, :k].float().cpu().numpy(), i[:, :k].cpu().numpy()

    sync = torch.cuda.synchronize if dev.startswith("cuda") else None
    return Backend("aoti", "pt2", path, int(meta["num_items"]), int(meta["max_len"]), run,
                   prepare, package, sync=sync,
                   fixed_len=meta.get("fixed_len"), max_batch=int(meta.get("max_batch", 4096)),
                   meta=meta, info={"device": dev})  # fmt: skip


def _dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _torch_backend(path: Path, backend: str, device: str, threads: int | None, dtype: str,
                   k: int) -> Backend:  # fmt: skip
    cuda = device.startswith("cuda")
    if threads and not cuda:
        torch.set_num_threads(threads)
    model, meta = open_model(path)  # native, or a RecBole checkpoint converted
    model = model.to(device).eval()
    if dtype != "fp32":
        model = model.to(_dtype(dtype))
    head = ServingHead(model, min(k, model.num_items)).eval()

    def run(seq: np.ndarray, k: int) -> TopK:
        with torch.inference_mode():
            s = torch.from_numpy(seq).to(device)
            scores = model.scores(s).scatter(1, s, float("-inf"))  # [B, N+1]
            top = scores.topk(k, dim=-1)
        return top.values.float().cpu().numpy(), top.indices.cpu().numpy()

    info = {"device": device, "dtype": dtype, "threads": torch.get_num_threads()}
    if backend == "torch-cudagraph":
        buckets = length_buckets(model.max_len)
        info["length_buckets"] = list(buckets)

        def prepare(h: np.ndarray) -> torch.Tensor:  # cut to the batch's length bucket
            return torch.from_numpy(to_bucket(h, buckets)).to(device)

        call = _cudagraph_call(head)
    else:
        fn = torch.compile(head, dynamic=True) if backend == "torch-compile" else head

        def prepare(h: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(h).to(device)

        def call(x: torch.Tensor):
            with torch.inference_mode():
                return fn(x)

    return Backend(backend, "checkpoint", path, model.num_items, model.max_len, run, prepare,
                   call, sync=torch.cuda.synchronize if cuda else None,
                   scorer=model_scorer(model, device), info=info,
                   own_id_map=(meta.item_ids, meta.extra.get("popular", [])))  # fmt: skip


def _cudagraph_call(head: ServingHead) -> Callable[[torch.Tensor], object]:
    """``call`` replaying one captured CUDA graph per input shape (batch size, length bucket):
    most histories are far shorter than ``max_len``, and a GRU's steps or attention's L^2 are
    the cost at small batches."""
    graphs: dict[tuple, tuple] = {}

    def call(x: torch.Tensor):
        b = tuple(x.shape)
        if b not in graphs:
            static = x.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.inference_mode():
                for _ in range(3):
                    head(static)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), torch.inference_mode():
                out = head(static)
            graphs[b] = (g, static, out)
        g, static, out = graphs[b]
        static.copy_(x)
        g.replay()
        return out

    return call


def length_buckets(max_len: int, sizes: tuple[int, ...] = (8, 16, 32)) -> tuple[int, ...]:
    """Sequence-length buckets for fixed-shape serving: ``sizes`` below ``max_len``, then it."""
    return tuple(sorted({b for b in sizes if 2 <= b < max_len} | {max_len}))


def to_bucket(hist: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """Left-pad or cut host histories ``[B, L]`` to the smallest bucket that holds the batch's
    longest history (every model's scores are the same whatever the left padding), int64."""
    real = (np.asarray(hist) > 0).any(0)  # [L]
    n = hist.shape[1] - int(real.argmax()) if real.any() else 1
    return trim_for_graph(hist, next((b for b in buckets if b >= n), buckets[-1]))


__all__ = ["BACKENDS", "FOREIGN_BACKEND", "GPU_ONLY", "KIND_BACKENDS", "Backend", "is_foreign",
           "length_buckets", "open_backend", "own_backends", "scores_backend",
           "to_bucket"]  # fmt: skip
