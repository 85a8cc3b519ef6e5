"""Open an artifact on a serving backend for timing and for quality measurement.

Backends: ``torch`` (eager, fp32 or ``--dtype fp16/bf16`` on GPU), ``torch-compile``
(``torch.compile``), ``torch-cudagraph`` (CUDA-graph replay per batch size and sequence-length
bucket), ``onnxruntime``, ``aoti`` (``.pt2``) and ``tensorrt`` (``.engine``/``.plan``).
Each runner serves the model with its serving head (history masking and top-K inside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recshrink.errors import RecshrinkError

BACKENDS = ("torch", "torch-compile", "torch-cudagraph", "onnxruntime", "aoti", "tensorrt")
GPU_ONLY = ("torch-cudagraph", "tensorrt")


@dataclass
class Runner:
    """A model opened on one backend.

    Attributes:
        backend: Backend name.
        prepare: Host batch ``[B, L]`` int64 -> the backend's input (e.g. a CUDA tensor).
        call: Runs one prepared batch (synchronous on CPU; see ``sync``).
        sync: Called after ``call`` in timing (CUDA synchronize), or None.
        scorer: Full scores ``[B, N + 1]`` for quality measurement, or None.
        fixed_len: Inputs must be padded to this length (CUDA graphs, fixed-length packages).
        info: Backend details for the report (dtype, threads, provider, ...).
    """

    backend: str
    prepare: Callable[[np.ndarray], object]
    call: Callable[[object], object]
    sync: Callable[[], None] | None = None
    scorer: Callable[[torch.Tensor], torch.Tensor] | None = None
    fixed_len: int | None = None
    info: dict = field(default_factory=dict)


def artifact_kind(path: Path) -> str:
    """``"onnx"``, ``"engine"``, ``"pt2"`` or ``"checkpoint"``."""
    s = path.suffix.lower()
    if s == ".onnx":
        return "onnx"
    if s in (".engine", ".plan"):
        return "engine"
    if s == ".pt2":
        return "pt2"
    return "checkpoint"


def applies(backend: str, path: Path) -> bool:
    """Whether ``backend`` can run the artifact at ``path``."""
    kind = artifact_kind(path)
    return {"onnxruntime": kind == "onnx", "tensorrt": kind == "engine", "aoti": kind == "pt2"
            }.get(backend, kind == "checkpoint")  # fmt: skip


def length_buckets(max_len: int, sizes: tuple[int, ...] = (8, 16, 32)) -> tuple[int, ...]:
    """Sequence-length buckets for fixed-shape serving: ``sizes`` below ``max_len``, then it."""
    return tuple(sorted({b for b in sizes if 2 <= b < max_len} | {max_len}))


def to_bucket(hist: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """Left-pad or cut host histories ``[B, L]`` to the smallest bucket that holds the batch's
    longest history (every model's scores are the same whatever the left padding), int64."""
    from recshrink.export.onnx import trim_for_graph

    real = (np.asarray(hist) > 0).any(0)  # [L]
    n = hist.shape[1] - int(real.argmax()) if real.any() else 1
    return trim_for_graph(hist, next((b for b in buckets if b >= n), buckets[-1]))


def _dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def open_runner(path: str | Path, backend: str, *, device: str = "cpu", threads: int | None = None,
                dtype: str = "fp32", k: int = 10) -> Runner:  # fmt: skip
    """Open ``path`` on ``backend``.

    Raises:
        RecshrinkError: The backend does not apply to the artifact, needs a GPU, or is missing.
    """
    p = Path(path)
    if backend not in BACKENDS:
        raise RecshrinkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if not applies(backend, p):
        raise RecshrinkError(f"{p}: backend {backend} does not run a {artifact_kind(p)} artifact")
    cuda = device.startswith("cuda")
    if (backend in GPU_ONLY or cuda) and not torch.cuda.is_available():
        raise RecshrinkError(f"backend {backend} on {device} needs a CUDA GPU")
    if backend == "onnxruntime":
        return _ort_runner(p, threads, k)
    if backend == "tensorrt":
        return _trt_runner(p)
    if backend == "aoti":
        runner = torch._inductor.aoti_load_package(str(p))
        import json

        meta = json.loads(p.with_name(p.stem + ".meta.json").read_text())
        dev = meta.get("device", device)
        return Runner("aoti", lambda h: torch.from_numpy(h).to(dev), runner,
                      sync=torch.cuda.synchronize if dev.startswith("cuda") else None,
                      fixed_len=meta.get("fixed_len"), info={"device": dev})  # fmt: skip
    return _torch_runner(p, backend, device, threads, dtype, k)


def _ort_runner(p: Path, threads: int | None, k: int) -> Runner:
    from recshrink.export.onnx import graph_length, onnx_scorer, ort_session

    sess = ort_session(p, threads)

    def call(h: np.ndarray):
        return sess.run(["scores", "ids"], {"seq": h})

    return Runner("onnxruntime", lambda h: h, call, scorer=onnx_scorer(p, session=sess),
                  fixed_len=graph_length(p),
                  info={"provider": "CPUExecutionProvider", "threads": threads})  # fmt: skip


def _trt_runner(p: Path) -> Runner:
    """An engine timed on its top-K outputs only (``scores``, ``ids``: what the ONNX Runtime
    runner fetches), with a scorer for quality measured through the engine."""
    from recshrink.export.onnx import fixed_len_of
    from recshrink.export.tensorrt import TensorRTRunner, engine_meta, tensorrt_scorer

    meta = engine_meta(p)
    r = TensorRTRunner(p)

    def call(x: torch.Tensor):
        return r.run_torch(x, ("scores", "ids"))

    full = r.has_output("all_scores")
    return Runner("tensorrt", lambda h: torch.from_numpy(h).cuda(), call,
                  sync=torch.cuda.synchronize, scorer=tensorrt_scorer(r, meta),
                  fixed_len=fixed_len_of(meta),
                  info={"device": "cuda", "precision": meta.get("precision"),
                        "quality_scores": "all_scores" if full else "top-K fill"})  # fmt: skip


def _torch_runner(p: Path, backend: str, device: str, threads: int | None, dtype: str,
                  k: int) -> Runner:  # fmt: skip
    from recshrink.export.onnx import ServingHead
    from recshrink.models.io import load_model
    from recshrink.train.evaluate import model_scorer

    if threads and not device.startswith("cuda"):
        torch.set_num_threads(threads)
    model, _ = load_model(p)
    model = model.to(device).eval()
    if dtype != "fp32":
        model = model.to(_dtype(dtype))
    head = ServingHead(model, min(k, model.num_items)).eval()
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    info = {"device": device, "dtype": dtype, "threads": torch.get_num_threads()}

    def prepare(h: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(h).to(device)

    scorer = model_scorer(model, device)
    if backend == "torch":
        def call(x):
            with torch.inference_mode():
                return head(x)

        return Runner("torch", prepare, call, sync, scorer, info=info)
    if backend == "torch-compile":
        compiled = torch.compile(head, dynamic=True)

        def call(x):
            with torch.inference_mode():
                return compiled(x)

        return Runner("torch-compile", prepare, call, sync, scorer, info=info)
    # torch-cudagraph: one captured graph per (batch size, length bucket); a batch is cut to the
    # smallest bucket that holds its longest history (most histories are far shorter than
    # max_len, and a GRU's steps or attention's L^2 are the cost at small batches)
    graphs: dict[tuple, tuple] = {}
    buckets = length_buckets(model.max_len)
    info["length_buckets"] = list(buckets)

    def prepare_bucket(h: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_bucket(h, buckets)).to(device)

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

    return Runner("torch-cudagraph", prepare_bucket, call, sync, scorer, info=info)
