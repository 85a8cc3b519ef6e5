"""TensorRT engines from recshrink ONNX files, and a runner that serves them on the GPU.

Written against the TensorRT 10 Python API (``pip install recshrink[tensorrt]``); ``tensorrt``
is imported inside these functions, so the rest of recshrink works without it. The GPU machine
this project was measured on has no TensorRT: the build and run paths are covered by tests
marked ``tensorrt`` that skip where it is missing. The runtime and the benchmark open engines
through :func:`recshrink.export.backends.open_backend`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from recshrink.errors import RecshrinkError
from recshrink.export.artifacts import meta_path, sidecar_path
from recshrink.export.onnx import fixed_len_of, onnx_metadata, scores_from_topk, trim_for_graph
from recshrink.fsutil import atomic_path, atomic_write_text

INSTALL_HINT = "TensorRT is not installed: pip install 'recshrink[tensorrt]' (needs an NVIDIA GPU)"


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RecshrinkError(INSTALL_HINT) from None
    return trt


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TensorRTConfig:
    """How to build an engine (validated on construction).

    Attributes:
        precision: ``"fp32"``, ``"fp16"``, or ``"int8"`` (explicit quantization from a QDQ graph;
            FP16 is enabled too for the layers that stay in float).
        min_batch, opt_batch, max_batch: Optimization-profile batch sizes.
        min_len, opt_len, max_len: Optimization-profile sequence lengths (``opt_len`` is best
            taken from the data: see :func:`opt_length`).
        workspace_mb: Builder workspace limit.
        timing_cache: File of the timing cache reused across builds (None = no cache).
    """

    precision: str = "fp16"
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(256, ge=1)
    max_batch: int = Field(1024, ge=1)
    min_len: int = Field(2, ge=2)
    opt_len: int = Field(16, ge=2)
    max_len: int = Field(50, ge=2)
    workspace_mb: int = Field(2048, ge=16)
    timing_cache: str | None = None

    @model_validator(mode="after")
    def _order(self) -> TensorRTConfig:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32, fp16 or int8, got {self.precision!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("need min_batch <= opt_batch <= max_batch")
        if not self.min_len <= self.opt_len <= self.max_len:
            raise ValueError("need min_len <= opt_len <= max_len")
        return self


def opt_length(histories: np.ndarray, quantile: float = 0.9) -> int:
    """A profile's ``opt`` sequence length from real histories: their ``quantile`` length."""
    lengths = (np.asarray(histories) != 0).sum(axis=1)
    return int(max(2, np.quantile(lengths, quantile))) if len(lengths) else 2


def build_engine(onnx_path: str | Path, engine_path: str | Path, cfg: TensorRTConfig | None = None
                 ) -> Path:  # fmt: skip
    """Build a serialized TensorRT engine from a recshrink ONNX file (written atomically).

    The engine's metadata (num_items, max_len, k, precision, profile) goes to
    ``<engine>.meta.json``; the id-map sidecar of the ONNX file is copied beside the engine.

    Raises:
        RecshrinkError: TensorRT missing, the parser rejected the graph (its errors named), or
            the build failed.
    """
    trt = _trt()
    cfg = cfg or TensorRTConfig()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = onnx_metadata(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RecshrinkError(f"{onnx_path}: TensorRT could not parse the graph: {'; '.join(errors)[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    if cfg.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # the QDQ nodes carry the scales
    max_len = min(cfg.max_len, int(meta.get("max_len", cfg.max_len)))
    lens = (cfg.min_len, min(cfg.opt_len, max_len), max_len)
    fixed = fixed_len_of(meta)
    if fixed:  # a graph exported at one length (see export_onnx)
        max_len, lens = fixed, (fixed, fixed, fixed)
    profile = builder.create_optimization_profile()
    profile.set_shape("seq", (cfg.min_batch, lens[0]), (cfg.opt_batch, lens[1]),
                      (cfg.max_batch, lens[2]))  # fmt: skip
    config.add_optimization_profile(profile)
    cache_file = Path(cfg.timing_cache) if cfg.timing_cache else None
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RecshrinkError(f"{onnx_path}: TensorRT engine build failed (see the log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache_file:
        with atomic_path(cache_file) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    info = {**meta, "precision": cfg.precision, "max_batch": cfg.max_batch, "max_len": str(max_len),
            "profile": {"batch": [cfg.min_batch, cfg.opt_batch, cfg.max_batch],
                        "len": list(lens)},
            "tensorrt": trt.__version__}  # fmt: skip
    atomic_write_text(meta_path(engine_path), json.dumps(info, indent=2))
    side = sidecar_path(onnx_path)
    if side.is_file():
        shutil.copyfile(side, sidecar_path(engine_path))
    return engine_path


class TensorRTRunner:
    """Runs a recshrink engine on the GPU: ``run(seq [B, L] int64, k) -> (scores, ids)``.

    Buffers are CUDA tensors from PyTorch (no pycuda); the engine's I/O tensors are bound by
    name and executed with ``execute_async_v3`` on the current stream.
    """

    def __init__(self, engine_path: str | Path) -> None:
        trt = _trt()
        if not torch.cuda.is_available():
            raise RecshrinkError("a TensorRT engine needs a CUDA GPU")
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RecshrinkError(f"{engine_path}: not an engine for this TensorRT/GPU")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names
                        if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]  # fmt: skip
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in self.names}
        self._scratch: dict[tuple, object] = {}  # outputs written but not asked for, per shape

    def has_output(self, name: str) -> bool:
        """Whether the engine has the output tensor ``name`` (e.g. ``"all_scores"``)."""
        return name in self.outputs

    def run_torch(self, seq, outputs: tuple[str, ...] = ("scores", "ids")):
        """Run on a CUDA int64 tensor; returns the ``outputs`` as CUDA tensors, by default
        ``(scores, ids)`` ``[B, K]``.

        TensorRT needs an address for every output of the engine, so an engine built with
        ``all_scores`` still writes it: into a scratch buffer kept per shape (reused, never
        returned) when it is not asked for. Asked-for outputs are fresh tensors.
        """
        missing = [n for n in outputs if n not in self.outputs]
        if missing:
            raise RecshrinkError(f"this engine has no output {', '.join(missing)} "
                                 f"(its outputs: {', '.join(self.outputs)})")  # fmt: skip
        seq = seq.to(device="cuda", dtype=self._dtypes["seq"]).contiguous()
        self.context.set_input_shape("seq", tuple(seq.shape))
        self.context.set_tensor_address("seq", seq.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if name in outputs:
                outs[name] = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            else:
                key = (name, shape)
                if key not in self._scratch:
                    self._scratch[key] = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
                outs[name] = self._scratch[key]
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RecshrinkError("TensorRT execution failed")
        return tuple(outs[n] for n in outputs)

    def run(self, seq: np.ndarray, k: int):
        """Host ``seq [B, L]`` int64 -> host ``(scores [B, k] float32, ids [B, k] int64)``."""
        scores, ids = self.run_torch(torch.from_numpy(seq))
        torch.cuda.synchronize()
        return scores[:, :k].float().cpu().numpy(), ids[:, :k].long().cpu().numpy()


def tensorrt_scorer(runner: TensorRTRunner, meta: dict):
    """A score function for :func:`recshrink.train.evaluate.evaluate` that runs the engine,
    like :func:`recshrink.export.onnx.onnx_scorer`: the engine's ``all_scores`` output when it
    has one (exact full ranking), else the top-K list through
    :func:`recshrink.export.onnx.scores_from_topk` (exact below K, a lower bound at K). Returns CPU float32 ``[B, N + 1]``; batches
    larger than the engine's ``max_batch`` are run in chunks.
    """
    if "num_items" not in meta:
        raise RecshrinkError("the engine's meta.json has no num_items (rebuild the engine)")
    n = int(meta["num_items"]) + 1
    fixed = fixed_len_of(meta)
    max_len = int(meta.get("max_len", 0)) or None
    max_batch = int(meta.get("max_batch", 1024))
    full = runner.has_output("all_scores")

    def chunk(h: np.ndarray) -> torch.Tensor:
        seq = torch.from_numpy(h)  # run_torch moves it to the GPU
        if full:
            (out,) = runner.run_torch(seq, ("all_scores",))
            out = out.float().cpu()
        else:
            top, ids = runner.run_torch(seq)
            out = scores_from_topk(top.float().cpu(), ids.long().cpu(), n - 1)
        if out.shape != (len(h), n):
            raise RecshrinkError(f"the engine returned scores {tuple(out.shape)}, expected "
                                 f"{(len(h), n)} (num_items in its meta.json)")  # fmt: skip
        return out

    def score(hist: torch.Tensor) -> torch.Tensor:
        h = trim_for_graph(hist.numpy(), fixed)
        if max_len and h.shape[1] > max_len:  # the profile's longest input: the latest items
            h = np.ascontiguousarray(h[:, -max_len:])
        return torch.cat([chunk(h[i:i + max_batch]) for i in range(0, len(h), max_batch)])

    return score


def _torch_dtype(trt, dt):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8}  # fmt: skip
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dt]
