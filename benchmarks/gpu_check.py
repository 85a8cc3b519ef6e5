"""One-go GPU check (at most ~5 minutes on an H100/H200): export, validate and time a teacher
and its students on CUDA, writing the results as JSON and Markdown.

Two halves:

1. Here, on the CPU machine, pack what the GPU machine needs (model directories and real test
   histories; the GPU machine cannot see ``../shared``)::

       python benchmarks/gpu_check.py prepare --teacher runs/beauty/teacher \\
           --student runs/beauty/students/gru_student --student runs/beauty/students/cnn_student \\
           --data ../shared/data/beauty/Beauty.txt

   (``make gpu-payload`` runs this on ``make bench``'s models and fetches the wheels too.)

   It writes ``gpu_payload/`` (git-ignored, about 25 MB for Beauty).

2. On the GPU machine, from the repository root (recshrink itself on ``PYTHONPATH=src``)::

       python benchmarks/gpu_check.py run --out $OUT

   For each model: ONNX export validated against PyTorch (ONNX Runtime CPU), top-10 agreement
   of the CUDA backends with PyTorch CPU, then p50/p90/p99 latency and users/s at batch 1 and
   1024 for eager fp32, eager fp16, CUDA-graph fp16 (and bf16 for students),
   ``torch.compile`` (students) and an AOTInductor package (students), and TensorRT where it is
   installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
PAYLOAD = ROOT / "gpu_payload"


def prepare(args) -> None:
    from recshrink.data.loaders import load_data
    from recshrink.data.split import leave_one_out

    shutil.rmtree(PAYLOAD, ignore_errors=True)
    PAYLOAD.mkdir()
    pairs = [("teacher", args.teacher)]
    for src in args.student:
        arch = json.loads((Path(src) / "config.json").read_text())["arch"]
        pairs.append((f"student_{arch}", src))
    for name, src in pairs:
        dst = PAYLOAD / name
        dst.mkdir(exist_ok=True)
        for f in ("config.json", "items.json", "model.safetensors"):
            shutil.copyfile(Path(src) / f, dst / f)
    fmt = "recbole" if args.data.endswith(".inter") else "s3rec"
    data = load_data(fmt, Path(args.data))
    split = leave_one_out(data, 50)
    np.save(PAYLOAD / "test_histories.npy", split.test.histories.astype(np.int32))
    print(f"wrote {PAYLOAD} ({sum(f.stat().st_size for f in PAYLOAD.rglob('*') if f.is_file()):,} B)")


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]))


def run(args) -> None:
    import torch

    from recshrink.benchmark.backends import open_runner
    from recshrink.benchmark.run import time_runner
    from recshrink.export.onnx import (
        OnnxExportConfig, ServingHead, export_onnx, graph_length, validate_onnx,
    )  # fmt: skip
    from recshrink.models.io import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    payload = Path(args.payload)
    hist = np.load(payload / "test_histories.npy").astype(np.int64)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    results: dict = {"device": dev, "torch": torch.__version__,
                     "cuda": torch.version.cuda, "models": {}, "notes": []}  # fmt: skip
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
        results["notes"].append("tensorrt is not installed on this machine: no engine timed")
    batches = [1, 1024]
    check = hist[: args.check_users]
    names = sorted(p.name for p in payload.iterdir() if (p / "config.json").is_file())
    for name in names:
        path = payload / name
        model, _ = load_model(path)
        entry: dict = {"arch": model.arch, "params": model.num_params(), "backends": {}}
        # ONNX export validated against PyTorch (ORT CPU on this image)
        t0 = time.perf_counter()
        onnx_path = out / f"{name}.onnx"
        try:
            export_onnx(model, onnx_path, OnnxExportConfig())
            entry["onnx"] = {**validate_onnx(onnx_path, model, check[:2048]),
                             "bytes": onnx_path.stat().st_size,
                             "fixed_len": graph_length(onnx_path),
                             "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        except Exception as exc:  # record and go on
            entry["onnx"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, "onnx", json.dumps(entry["onnx"]), flush=True)
        with torch.inference_mode():
            ref = ServingHead(model.eval(), 10)(torch.from_numpy(check))[1].numpy()
        configs = [("torch", "fp32"), ("torch", "fp16"), ("torch-cudagraph", "fp16")]
        if name.startswith("student"):
            configs += [("torch-cudagraph", "bf16"), ("torch-compile", "fp16")]
        for backend, dtype in configs:
            t0 = time.perf_counter()
            try:
                runner = open_runner(path, backend, device=args.device, dtype=dtype)
                lat, thr = time_runner(runner, hist, batches, args.budget, warmup=13)
                ids = []
                for i in range(0, len(check), 256):
                    x = check[i : i + 256]
                    if runner.fixed_len:
                        x = x[:, -runner.fixed_len :]
                    x = np.ascontiguousarray(x)
                    ids.append(runner.call(runner.prepare(x))[1].cpu().numpy())
                entry["backends"][f"{backend}-{dtype}"] = {
                    "latency_us": lat, "users_per_s": thr,
                    "agreement@10_vs_cpu_fp32": round(_agreement(np.concatenate(ids), ref), 4),
                    "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            except Exception as exc:  # record and go on: one backend must not sink the run
                entry["backends"][f"{backend}-{dtype}"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(name, backend, dtype, json.dumps(entry["backends"][f"{backend}-{dtype}"])[:300],
                  flush=True)  # fmt: skip
        if name.startswith("student") and time.perf_counter() - t_start < args.aoti_before_s:
            from recshrink.export.runtime import export_aoti

            t0 = time.perf_counter()
            try:
                pkg = export_aoti(model.half().to(args.device), out / f"{name}.pt2", k=10, device=args.device)
                runner = open_runner(pkg, "aoti", device=args.device)
                lat, thr = time_runner(runner, hist, batches, args.budget, warmup=13)
                entry["backends"]["aoti-fp16"] = {"latency_us": lat, "users_per_s": thr,
                                                  "compile_seconds": round(time.perf_counter() - t0, 1)}
            except Exception as exc:
                entry["backends"]["aoti-fp16"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        if has_trt:
            from recshrink.export.tensorrt import TensorRTConfig, build_engine

            try:
                eng = build_engine(onnx_path, out / f"{name}.engine",
                                   TensorRTConfig(precision="fp16", opt_batch=256, max_batch=1024))
                runner = open_runner(eng, "tensorrt", device="cuda")
                lat, thr = time_runner(runner, hist, batches, args.budget, warmup=13)
                entry["backends"]["tensorrt-fp16"] = {"latency_us": lat, "users_per_s": thr}
            except Exception as exc:
                entry["backends"]["tensorrt-fp16"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        if args.profile and name.startswith("student"):
            _profile(path, hist, out / f"{name}_profile.txt", args.device)
        results["models"][name] = entry
        (out / "gpu_results.json").write_text(json.dumps(results, indent=2))
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "gpu_results.json").write_text(json.dumps(results, indent=2))
    lines = [f"# GPU check on {dev} (torch {torch.__version__}, CUDA {torch.version.cuda})", "",
             "| model | backend | p50@1 µs | p99@1 µs | p50@1024 µs | users/s@1024 | agreement@10 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in results["models"].items():
        for b, r in e["backends"].items():
            if "error" in r:
                lines.append(f"| {name} | {b} | error: {r['error'][:80]} | | | | |")
                continue
            lat, thr = r["latency_us"], r["users_per_s"]
            lines.append(f"| {name} | {b} | {lat['1']['p50']:.0f} | {lat['1']['p99']:.0f} | "
                         f"{lat['1024']['p50']:.0f} | {thr['1024']:,.0f} | "
                         f"{r.get('agreement@10_vs_cpu_fp32', '')} |")  # fmt: skip
    (out / "gpu_results.md").write_text("\n".join(lines + [""] + results["notes"]) + "\n")
    print("\n".join(lines))


def _profile(path: Path, hist: np.ndarray, dest: Path, device: str) -> None:
    """Kernel-time table of eager fp16 calls at batch 1 and 1024 (where the time goes)."""
    import torch

    from recshrink.benchmark.backends import open_runner

    try:
        runner = open_runner(path, "torch", device=device, dtype="fp16")
        lines = []
        for b in (1, 1024):
            x = runner.prepare(np.ascontiguousarray(hist[:b, -50:]))
            for _ in range(3):
                runner.call(x)
            acts = [torch.profiler.ProfilerActivity.CPU]
            if device.startswith("cuda"):
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=acts) as prof:
                for _ in range(10):
                    runner.call(x)
                    if runner.sync:
                        runner.sync()
            key = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
            lines += [f"## batch {b}, 10 calls", prof.key_averages().table(sort_by=key, row_limit=20)]
        dest.write_text("\n".join(lines))
    except Exception as exc:  # diagnostics only
        dest.write_text(f"profile failed: {type(exc).__name__}: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True, action="append", help="repeat for each student")
    p.add_argument("--data", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per point")
    r.add_argument("--payload", default=str(PAYLOAD))
    r.add_argument("--profile", action="store_true", help="write each student's kernel-time table")
    r.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    r.add_argument("--check-users", type=int, default=4096)
    r.add_argument("--aoti-before-s", type=float, default=220.0,
                   help="build the AOTInductor package only if this many seconds have not passed")
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    main()
