"""Benchmark several models side by side: latency, throughput, memory, size, quality.

All models run in one process, one after another, on the same inputs drawn from the test
split, so speed-ups, size reductions and retention are ratios measured in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from recshrink.benchmark.backends import BACKENDS, applies, artifact_kind, open_runner
from recshrink.benchmark.latency import PeakRSS, input_batches, throughput, time_calls
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.errors import RecshrinkError


def _params(path: Path) -> int | None:
    kind = artifact_kind(path)
    if kind == "checkpoint":
        from recshrink.models.io import load_model

        return load_model(path)[0].num_params()
    if kind == "onnx":
        import onnx

        proto = onnx.load(str(path))
        return int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    return None


def _artifact_bytes(path: Path) -> int:
    from recshrink.models.io import artifact_bytes

    if path.is_dir():  # weights only (configs, id maps and training state are not the model)
        w = path / "model.safetensors"
        return w.stat().st_size if w.is_file() else artifact_bytes(path)
    return path.stat().st_size


def time_runner(runner, histories: np.ndarray, batches, budget_s: float,
                warmup: int | None = None) -> tuple[dict, dict]:  # fmt: skip
    """Latency stats and users/s of an opened runner at each batch size.

    Each size gets 8 distinct batches of real histories (padded to the runner's fixed length
    where it has one), warm-up calls, then :func:`time_calls` within ``budget_s``.

    Returns:
        ``({batch: stats}, {batch: users_per_s})`` keyed by the batch size as a string.
    """
    lat, thr = {}, {}
    for b in batches:
        src = input_batches(histories, b, count=8, seed=b, fixed_len=runner.fixed_len)
        inputs = [runner.prepare(x) for x in src]
        stats = time_calls(runner.call, inputs, warmup=max(3, len(inputs)) if warmup is None
                           else warmup, budget_s=budget_s, sync=runner.sync)  # fmt: skip
        lat[str(b)], thr[str(b)] = stats, throughput(b, stats)
    return lat, thr


def run_benchmark(
    models: list[tuple[str, Path]],
    data: InteractionData,
    split: Split,
    *,
    backends: tuple[str, ...] = ("torch", "onnxruntime"),
    device: str = "cpu",
    batches: tuple[int, ...] = (1, 16, 256),
    threads: int | None = None,
    budget_s: float = 2.0,
    dtype: str = "fp32",
    teacher: str | None = None,
    quality: bool = True,
    ks: tuple[int, ...] = (5, 10, 20),
    progress: bool = True,
) -> dict:
    """Benchmark ``models`` (label, artifact) on every backend that applies to each.

    Returns:
        ``{"machine", "settings", "models": {label: {...}}, "teacher"}`` where each model has
        ``artifact``, ``bytes``, ``params``, ``latency_us[device][backend][batch]``,
        ``throughput[device][backend][batch]``, ``memory``, ``metrics`` (through its serving
        backend), ``fidelity@10`` (top-10 overlap with the teacher) and ratios to the teacher.
    """
    from recshrink.pipeline import machine_entry
    from recshrink.train.evaluate import evaluate

    for b in backends:
        if b not in BACKENDS:
            raise RecshrinkError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    if threads and not device.startswith("cuda"):
        torch.set_num_threads(threads)
    teacher = teacher or models[0][0]
    hist = split.test.histories
    report: dict = {
        "machine": {**machine_entry(device), "threads": torch.get_num_threads()},
        "settings": {"device": device, "backends": list(backends), "batches": list(batches),
                     "budget_s": budget_s, "dtype": dtype, "inputs": "test-split histories, "
                     "8 distinct batches per size, each trimmed to its longest history",
                     "io": "inputs resident on the device; synchronous calls"},  # fmt: skip
        "teacher": teacher,
        "models": {},
    }
    teacher_top = None
    ranks: dict[str, np.ndarray] = {}  # per-user test ranks through each model's backend
    for label, path in models:
        path = Path(path)
        if not path.exists():
            raise RecshrinkError(f"{path}: no such model artifact")
        entry: dict = {"artifact": str(path), "kind": artifact_kind(path),
                       "bytes": _artifact_bytes(path), "params": _params(path),
                       "latency_us": {device: {}}, "throughput": {device: {}}, "memory": {}}
        quality_done = False
        for backend in backends:
            if not applies(backend, path):
                continue
            t0 = time.perf_counter()
            cuda = device.startswith("cuda") or backend in ("tensorrt", "torch-cudagraph")
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            with PeakRSS() as rss:
                runner = open_runner(path, backend, device=device, threads=threads, dtype=dtype)
                first = input_batches(hist, batches[0], count=1, seed=batches[0],
                                      fixed_len=runner.fixed_len)[0]  # fmt: skip
                runner.call(runner.prepare(first))
            lat, thr = time_runner(runner, hist, batches, budget_s)
            entry["latency_us"][device][backend] = lat
            entry["throughput"][device][backend] = thr
            mem = {"peak_rss_increase_bytes": rss.increase_bytes}
            if cuda:
                mem["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated() - before)
            entry["memory"][backend] = mem
            entry.setdefault("backend_info", {})[backend] = runner.info
            if quality and not quality_done and runner.scorer is not None:
                m, users = evaluate(runner.scorer, split.test, data.item_attrs, ks,
                                    per_user=True)  # fmt: skip
                ranks[label] = users.ranks
                entry["metrics"] = {k: (round(v, 6) if isinstance(v, float) else v)
                                    for k, v in m.items()}  # fmt: skip
                entry["quality_backend"] = backend
                top = users.top[:, :10]  # ks include 10
                if label == teacher:
                    teacher_top = top
                if teacher_top is not None:
                    from recshrink.metrics import topk_overlap

                    entry["fidelity@10"] = round(topk_overlap(top, teacher_top), 4)
                quality_done = True
            if progress:
                p50 = lat[str(batches[0])]["p50"]
                print(f"[bench] {label} {backend}: p50@{batches[0]} {p50:.0f} us "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            del runner
        report["models"][label] = entry
    _ratios(report, device)
    _retention_intervals(report, ranks)
    return report


def _retention_intervals(report: dict, ranks: dict[str, np.ndarray]) -> None:
    """Add ``vs_teacher["ndcg@10_ci"]``: a paired-bootstrap 95% interval of each model's
    NDCG@10 retention, resampling the same test users for the model and the teacher."""
    from recshrink.metrics import rank_retention

    t = ranks.get(report["teacher"])
    if t is None or not (t < 10).any():  # no teacher, or a teacher with NDCG@10 = 0
        return
    for label, r in ranks.items():
        if label == report["teacher"] or "vs_teacher" not in report["models"][label]:
            continue
        cmp = rank_retention(r, t, "ndcg", 10, resamples=1000)
        report["models"][label]["vs_teacher"]["ndcg@10_ci"] = [
            round(cmp["ratio_low"], 4), round(cmp["ratio_high"], 4)]


def _first(entry: dict, device: str) -> str | None:
    lat = entry["latency_us"].get(device, {})
    return next(iter(lat), None)


def best_backend(entry: dict, device: str, batch: str) -> str | None:
    """The backend with the lowest p50 at ``batch`` for a model entry."""
    lat = entry["latency_us"].get(device, {})
    cands = [(v[batch]["p50"], b) for b, v in lat.items() if batch in v]
    return min(cands)[1] if cands else None


def _ratios(report: dict, device: str) -> None:
    """Teacher-relative ratios: retention, size, p50 speed-up, throughput gain."""
    t = report["models"].get(report["teacher"])
    if not t:
        return
    tb = _first(t, device)
    for label, e in report["models"].items():
        r: dict = {"size": round(e["bytes"] / t["bytes"], 4)}
        if "metrics" in e and "metrics" in t:
            r["ndcg@10"] = round(e["metrics"]["ndcg@10"] / max(t["metrics"]["ndcg@10"], 1e-12), 4)
            r["f1@10"] = round(e["metrics"]["f1@10"] / max(t["metrics"]["f1@10"], 1e-12), 4)
        if tb:
            for b, tstats in t["latency_us"][device][tb].items():
                eb = best_backend(e, device, b)
                if eb:
                    r[f"speedup_p50@{b}"] = round(tstats["p50"] / e["latency_us"][device][eb][b]["p50"], 2)
                    r[f"throughput_x@{b}"] = round(
                        e["throughput"][device][eb][b] / t["throughput"][device][tb][b], 2)
        r["teacher_backend"] = tb
        e["vs_teacher"] = r
