"""Serving cost against catalogue size: the exact artifact (catalogue scored in the graph, top-K in
ONNX Runtime) against the retrieval artifact (user encoder in ONNX Runtime + FAISS index) of the
same model, both through recshrink's benchmark timer (``time_runner``: 8 distinct batches per
size, warm-up, p50/p99), one thread.

Serving cost only: the model is freshly initialised (the exact graph's cost does not depend on
the weights). An index's cost and recall do: with ``--item-rank R`` (default 16) the item table
is replaced by low-rank Gaussian vectors (rank R plus 5% noise; trained item tables have a low
intrinsic dimension, which HNSW exploits), ``--item-rank 0`` keeps the i.i.d. random
initialisation, a worst case for any index. Neither is a quality number: issue 19's NDCG
comparison needs a trained student.

    .venv/bin/python benchmarks/scale_serving.py --items 10000 100000 1000000 --out runs/scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recshrink.benchmark.run import time_runner  # noqa: E402
from recshrink.export.backends import open_backend  # noqa: E402
from recshrink.export.onnx import OnnxExportConfig, export_onnx  # noqa: E402
from recshrink.export.retrieval import RetrievalConfig, export_retrieval  # noqa: E402
from recshrink.models import build_model  # noqa: E402


def histories(n_items: int, users: int, max_len: int, seed: int) -> np.ndarray:
    """Left-padded random histories of 5..max_len items: ``[users, max_len]``."""
    rng = np.random.default_rng(seed)
    out = np.zeros((users, max_len), dtype=np.int64)
    for u in range(users):
        n = int(rng.integers(5, max_len + 1))
        out[u, max_len - n:] = rng.integers(1, n_items + 1, n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--model", default="gru", help="builder (default gru: the GRU student's shape)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--index", default="auto")
    ap.add_argument("--item-rank", type=int, default=16,
                    help="item vectors of this rank (+5%% noise); 0 = the random initialisation")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reuse-index", action="store_true",
                    help="keep retrieval artifacts already in --out (their recall and build time "
                         "from their manifest) instead of rebuilding them")
    ap.add_argument("--rss-only", action="store_true",
                    help="only (re)measure serving memory of the artifacts already in --out")
    ap.add_argument("--serve-rss", type=Path, help=argparse.SUPPRESS)  # the child's mode
    args = ap.parse_args()
    if args.serve_rss:
        return serve_rss(args.serve_rss, args.items[0], args.max_len)
    if args.rss_only:
        rows = json.loads((args.out / "scale_serving.json").read_text())
        for row in rows:
            for label, path in zip(("exact", "ann"), artifact_paths(args.out, row["items"])):
                row[label]["serving_peak_rss_bytes"] = serving_peak_rss(path, row["items"],
                                                                        args.max_len)
            print(json.dumps({"items": row["items"],
                              **{k: row[k]["serving_peak_rss_bytes"] for k in ("exact", "ann")}}))
        (args.out / "scale_serving.json").write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.items:
        torch.manual_seed(0)
        model = build_model(args.model, n, dim=args.dim, max_len=args.max_len).eval()
        if args.item_rank:
            with torch.no_grad():
                w = model.item_emb.weight  # [N + 1, D]
                g = torch.Generator().manual_seed(n)
                low = torch.randn(n, args.item_rank, generator=g) @ torch.randn(
                    args.item_rank, args.dim, generator=g) / args.item_rank**0.5  # fmt: skip
                low += 0.05 * torch.randn(n, args.dim, generator=g)
                w[1:] = low * (w[1:].std() / low.std())
        hist = histories(n, 2048, args.max_len, seed=n)
        ids = [str(i) for i in range(1, n + 1)]
        exact, ann = artifact_paths(args.out, n)
        t0 = time.perf_counter()
        if not exact.is_file():  # delete the exact graphs to re-export them
            export_onnx(model, exact, OnnxExportConfig(k=10))
        exact_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if args.reuse_index and (ann / "retrieval.json").is_file():
            man = json.loads((ann / "retrieval.json").read_text())
            info = {"index": man["index"]["spec"], "recall@10": man["recall@10"],
                    "build_s": man["build_s"], "bytes": sum(man["bytes"].values()), "reused": True}
        else:
            info = export_retrieval(model, ann, histories=hist[:1000], item_ids=ids, popular=[],
                                    steps=[], config=RetrievalConfig(index=args.index,
                                                                     min_recall=0.0, threads=1))
        ann_s = time.perf_counter() - t0
        row = {"items": n, "dim": args.dim, "model": args.model, "item_rank": args.item_rank, "exact_export_s": round(exact_s, 1),
               "ann_export_s": round(ann_s, 1), "index": info}
        for label, path in (("exact", exact), ("ann", ann)):
            runner = open_backend(path, threads=1)
            lat, thr = time_runner(runner, hist, args.batches, args.budget)
            row[label] = {"p50_us": {str(b): round(lat[str(b)]["p50"], 1) for b in args.batches},
                          "p99_us": {str(b): round(lat[str(b)]["p99"], 1) for b in args.batches},
                          "users_per_s": {str(b): round(thr[str(b)], 1) for b in args.batches},
                          "bytes": (path.stat().st_size if path.is_file() else info["bytes"])}
            del runner
            row[label]["serving_peak_rss_bytes"] = serving_peak_rss(path, n, args.max_len)
        b0 = str(args.batches[0])
        row["speedup_p50@1"] = round(row["exact"]["p50_us"][b0] / row["ann"]["p50_us"][b0], 2)
        # this whole process so far (exports and index builds included)
        row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("items", "speedup_p50@1")}
                         | {"exact": row["exact"], "ann": row["ann"],
                            "index": info["index"], "recall@10": info["recall@10"],
                            "build_s": info["build_s"]}), flush=True)  # fmt: skip
        (args.out / "scale_serving.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.batches[0], args.out / "scale_serving.png")


def artifact_paths(out: Path, n_items: int) -> tuple[Path, Path]:
    """The exact graph and the retrieval artifact of the ``n_items`` catalogue in ``out``."""
    return out / f"exact_{n_items}.onnx", out / f"ann_{n_items}"


def serve_rss(path: Path, n_items: int, max_len: int) -> int:
    """The child: open ``path``, serve 8 batches of 1 and of 256, print the peak RSS."""
    hist = histories(n_items, 256, max_len, seed=n_items)
    runner = open_backend(path, threads=1)
    for _ in range(8):
        runner.run(hist[:1], 10)
        runner.run(hist, 10)
    # VmHWM: this process's own high-water mark (ru_maxrss would also carry the parent's, which
    # Linux keeps across the exec of a vfork()ed child)
    status = Path("/proc/self/status").read_text()
    print(int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:"))) * 1024)
    return 0


def serving_peak_rss(path: Path, n_items: int, max_len: int) -> int:
    """Peak resident memory (bytes) of a fresh process serving the artifact at ``path``
    (Python, torch and ONNX Runtime included), measured in a child process so that one
    artifact's memory is not another's."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--serve-rss", str(path), "--items",
                          str(n_items), "--max-len", str(max_len), "--out", "-"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], batch: int, path: Path) -> None:
    """p50 latency at ``batch`` against catalogue size, exact and retrieval, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    n = [r["items"] for r in rows]
    for label, key in (("exact (MatMul + TopK in ONNX Runtime)", "exact"),
                       ("retrieval (encoder + FAISS index)", "ann")):  # fmt: skip
        ax.plot(n, [r[key]["p50_us"][str(batch)] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue size (items)")
    ax.set_ylabel(f"p50 latency at batch {batch} (us)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
