"""Benchmark several models side by side: latency, throughput, memory, size, quality.

All models run in one process, one after another, on the same inputs drawn from the test
split, so speed-ups, size reductions and retention are ratios measured in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from recshrink.compare import fidelity, rank_retention
from recshrink.benchmark.latency import PeakRSS, input_batches, throughput, time_calls
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.entries import machine_entry
from recshrink.errors import RecshrinkError
from recshrink.export.artifacts import artifact_kind
from recshrink.export.backends import (
    BACKENDS, Backend, is_foreign, open_backend, own_backends, scores_backend,
)  # fmt: skip
from recshrink.export.retrieval import artifact_size as retrieval_size
from recshrink.models.io import artifact_bytes
from recshrink.teachers import open_model
from recshrink.teachers.protocol import ScoresTeacher
from recshrink.train.evaluate import evaluate


def _object_entry(teacher: ScoresTeacher, device: str) -> dict:
    """The entry of a scores-only teacher given as an object (a module from Python)."""
    tensors = list(teacher.state_dict().values())
    return {"artifact": teacher.arch, "kind": "module",
            "bytes": int(sum(t.numel() * t.element_size() for t in tensors)),
            "params": int(sum(t.numel() for t in tensors)) or None,
            "latency_us": {device: {}}, "throughput": {device: {}}, "memory": {}}  # fmt: skip


def _params(path: Path, foreign: bool) -> int | None:
    kind = artifact_kind(path)
    if kind == "checkpoint" and not foreign:
        return open_model(path)[0].num_params()
    if kind in ("onnx", "retrieval"):  # a retrieval index holds a copy of the encoder's table
        import onnx

        proto = onnx.load(str(path / "encoder.onnx" if kind == "retrieval" else path))
        return int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    return None


def _artifact_bytes(path: Path) -> int:
    if artifact_kind(path) == "retrieval":  # its encoder graph and its index
        return retrieval_size(path)
    if path.is_dir():  # weights only (configs, id maps and training state are not the model)
        w = path / "model.safetensors"
        return w.stat().st_size if w.is_file() else artifact_bytes(path)
    return path.stat().st_size


def time_runner(runner: Backend, histories: np.ndarray, batches, budget_s: float,
                warmup: int | None = None) -> tuple[dict, dict]:  # fmt: skip
    """Latency stats and users/s of an opened backend at each batch size.

    Each size gets 8 distinct batches of real histories (padded to the backend's fixed length
    where it has one), warm-up calls, then :func:`time_calls` of ``runner.call`` within
    ``budget_s``.

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


def _rounded(metrics: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v)
            for k, v in metrics.items()}  # fmt: skip


def run_benchmark(
    models: list[tuple[str, Path | ScoresTeacher]],
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
    mask_scope: str = "full",
    ties: str = "pessimistic",
    valid: bool = True,
) -> dict:
    """Benchmark ``models`` (label, artifact) on every backend that applies to each.

    A foreign teacher (an ONNX graph recshrink did not export, a ``torch.export`` program, a
    :class:`~recshrink.teachers.protocol.ScoresTeacher` object) runs in its own runtime only,
    whatever ``backends`` says: that is how its user serves it, and the ratios are against it.

    Returns:
        ``{"machine", "settings", "models": {label: {...}}, "teacher"}`` where each model has
        ``artifact``, ``bytes``, ``params``, ``latency_us[device][backend][batch]``,
        ``throughput[device][backend][batch]``, ``memory``, ``metrics`` (through its serving
        backend, test split), ``valid`` (the same on the validation split, with ``valid``),
        ``fidelity@10`` (top-10 overlap with the teacher) and ratios to the teacher.
    """
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
                     "io": "inputs resident on the device; synchronous calls",
                     "protocol": {"split": "test", "mask_scope": mask_scope, "ties": ties}},  # fmt: skip
        "teacher": teacher,
        "models": {},
    }
    teacher_top = None
    ranks: dict[str, np.ndarray] = {}  # per-user test ranks through each model's backend
    for label, path in models:
        obj = path if isinstance(path, ScoresTeacher) else None
        if obj is None:
            path = Path(path)
            if not path.exists():
                raise RecshrinkError(f"{path}: no such model artifact")
            foreign = is_foreign(path)  # once: it may load the file
            entry: dict = {"artifact": str(path),
                           "kind": "foreign-" * foreign + artifact_kind(path),
                           "bytes": _artifact_bytes(path), "params": _params(path, foreign),
                           "latency_us": {device: {}}, "throughput": {device: {}}, "memory": {}}
            own = own_backends(path, foreign)
            # a foreign teacher and a retrieval artifact run on their one runtime, whatever
            # backends were asked for
            single = foreign or artifact_kind(path) == "retrieval"
            runs = list(own) if single else [b for b in backends if b in own]
        else:
            entry, runs = _object_entry(obj, device), [obj.runtime]
        quality_done = False
        for backend in runs:
            t0 = time.perf_counter()
            cuda = device.startswith("cuda") or backend in ("tensorrt", "torch-cudagraph")
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            with PeakRSS() as rss:
                runner = scores_backend(obj, label) if obj is not None else open_backend(
                    path, backend, device=device, threads=threads, dtype=dtype,
                    num_items=data.num_items, item_ids=data.item_ids)  # fmt: skip
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
                                    per_user=True, mask_scope=mask_scope, ties=ties)  # fmt: skip
                ranks[label] = users.ranks
                entry["metrics"] = _rounded(m)
                if valid:  # the split that chooses, through the same backend
                    entry["valid"] = _rounded(evaluate(runner.scorer, split.valid, data.item_attrs,
                                                       ks, mask_scope=mask_scope, ties=ties))
                entry["quality_backend"] = backend
                if label == teacher:
                    teacher_top = users.top
                if teacher_top is not None:
                    entry["fidelity@10"] = fidelity(users.top, teacher_top)
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
    t = ranks.get(report["teacher"])
    if t is None or not (t < 10).any():  # no teacher, or a teacher with NDCG@10 = 0
        return
    for label, r in ranks.items():
        if label == report["teacher"] or "vs_teacher" not in report["models"][label]:
            continue
        cmp = rank_retention(r, t, "ndcg", 10, resamples=1000)
        report["models"][label]["vs_teacher"]["ndcg@10_ci"] = [
            round(cmp["ratio_low"], 4), round(cmp["ratio_high"], 4)]


def best_backend(entry: dict, device: str, batch: str) -> str | None:
    """The backend with the lowest p50 at ``batch`` for a model entry."""
    lat = entry["latency_us"].get(device, {})
    cands = [(v[batch]["p50"], b) for b, v in lat.items() if batch in v]
    return min(cands)[1] if cands else None


def base_label(label: str) -> str:
    """The model an entry belongs to: ``teacher.dynamic.onnx`` -> ``teacher`` (exported files
    are benchmarked as ``<model>.onnx``, ``<model>.<mode>.onnx``,
    ``<model>.<precision>.engine``)."""
    return label.split(".")[0]


def _suffix(label: str) -> str:
    return label.partition(".")[2]


def _fastest(entries: dict[str, dict], device: str, batch: str,
             backend: str | None = None) -> tuple[float, str, str] | None:  # fmt: skip
    """``(p50, label, backend)`` of the lowest p50 at ``batch`` over ``entries`` (on ``backend``
    only, when given), or None."""
    cands = [(v[batch]["p50"], label, b) for label, e in entries.items()
             for b, v in e["latency_us"].get(device, {}).items()
             if batch in v and (backend is None or b == backend)]  # fmt: skip
    return min(cands) if cands else None


def _best_throughput(entries: dict[str, dict], device: str, batch: str) -> float | None:
    vals = [thr[batch] for e in entries.values() for thr in e["throughput"].get(device, {}).values()
            if batch in thr]  # fmt: skip
    return max(vals) if vals else None


def _ratios(report: dict, device: str) -> None:
    """Teacher-relative ratios: retention, size, p50 speed-up, throughput gain.

    Speed is compared like for like, in this run. The teacher is its own entry plus its
    exported files (entries whose label before the first "." is the teacher's label), so an
    ONNX export of the teacher is the teacher on onnxruntime.

    * ``speedup_p50@B`` / ``throughput_x@B``: the entry's fastest backend at batch ``B`` vs the
      teacher's fastest (lowest p50 over all teacher artifacts and backends); best users/s vs
      the teacher's best users/s. ``model_backend@B``, ``teacher_backend@B`` and
      ``teacher_label@B`` name what was compared.
    * ``same_backend[backend]``: on each backend the entry ran on, the same ratios against the
      teacher on that backend (the teacher artifact of the same kind, e.g. ``teacher.onnx``
      for ``student.onnx``, when it ran there, else the teacher's fastest artifact on it);
      ``teacher@B`` names that artifact. Backends the teacher did not run on are left out.
    """
    t = report["models"].get(report["teacher"])
    if not t:
        return
    teacher = report["teacher"]
    tarts = {k: e for k, e in report["models"].items() if base_label(k) == teacher}
    batches = sorted({b for e in report["models"].values()
                      for lat in e["latency_us"].get(device, {}).values() for b in lat}, key=int)
    for label, e in report["models"].items():
        r: dict = {"size": round(e["bytes"] / t["bytes"], 4)}
        if "metrics" in e and "metrics" in t:
            r["ndcg@10"] = round(e["metrics"]["ndcg@10"] / max(t["metrics"]["ndcg@10"], 1e-12), 4)
            r["f1@10"] = round(e["metrics"]["f1@10"] / max(t["metrics"]["f1@10"], 1e-12), 4)
        lat, thr = e["latency_us"].get(device, {}), e["throughput"].get(device, {})
        for b in batches:
            mine, ref = _fastest({label: e}, device, b), _fastest(tarts, device, b)
            if mine is None or ref is None:
                continue
            r[f"speedup_p50@{b}"] = round(ref[0] / mine[0], 2)
            r[f"model_backend@{b}"] = mine[2]
            r[f"teacher_backend@{b}"] = ref[2]
            r[f"teacher_label@{b}"] = ref[1]
            mt, tt = _best_throughput({label: e}, device, b), _best_throughput(tarts, device, b)
            if mt is not None and tt:
                r[f"throughput_x@{b}"] = round(mt / tt, 2)
        same: dict = {}
        for backend, blat in lat.items():
            kin = {k: v for k, v in tarts.items() if _suffix(k) == _suffix(label)
                   and backend in v["latency_us"].get(device, {})}  # fmt: skip
            pool = kin or tarts
            cell: dict = {}
            for b, stats in blat.items():
                ref = _fastest(pool, device, b, backend)
                if ref is None:
                    continue
                tlabel = ref[1]
                cell[f"speedup_p50@{b}"] = round(ref[0] / stats["p50"], 2)
                tthr = tarts[tlabel]["throughput"][device][backend].get(b)
                if tthr and b in thr.get(backend, {}):
                    cell[f"throughput_x@{b}"] = round(thr[backend][b] / tthr, 2)
                cell[f"teacher@{b}"] = tlabel
            if cell:
                same[backend] = cell
        r["same_backend"] = same
        e["vs_teacher"] = r
