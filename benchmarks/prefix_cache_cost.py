"""What prefix expansion costs: the teacher cache of a scores-only teacher against a native one.

A native teacher fills the cache with one ``forward_all`` per training window (every position
at once); a teacher that gives only last-position scores (an ONNX graph, a module, RecBole's
own code) is called once per training position, on the history before it
(:func:`recshrink.compress.teacher_cache.build_prefix_cache`). This script times both on the
same model and data, the model wrapped by :func:`recshrink.teacher_from_module` for the second,
and checks they cache the same items.

    .venv/bin/python benchmarks/prefix_cache_cost.py --data ../shared/data/beauty/Beauty.txt \\
        --model sasrec_large --threads 1 [--teacher runs/beauty/teacher] [--limit 2000]

Without ``--teacher`` the model is freshly initialised: the cost of a call does not depend on
the weights. Prints one JSON object (timings, positions, calls, the ratio).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import recshrink
from recshrink.compress.teacher_cache import build_prefix_cache, build_teacher_cache
from recshrink.data.split import training_pairs
from recshrink.models.io import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="sasrec_large", help="builder or preset (no --teacher)")
    ap.add_argument("--teacher", default=None, help="a trained recshrink model directory")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--top-m", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="first N training windows only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = recshrink.load_data(args.data)
    windows = training_pairs(data.split(args.max_len).train, args.max_len)[: args.limit]
    positions = sum(len(w) - 1 for w in windows)
    if args.teacher:
        model, _ = load_model(args.teacher)
    else:
        model = recshrink.build_model(args.model, data.num_items, max_len=args.max_len)
    model.eval()
    wrapped = recshrink.teacher_from_module(model.scores, data.num_items, args.max_len)

    t0 = time.perf_counter()
    native = build_teacher_cache(model, windows, args.top_m, batch_size=args.batch)
    native_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prefix = build_prefix_cache(wrapped, windows, args.top_m, batch_size=args.batch)
    prefix_s = time.perf_counter() - t0

    same_top1 = float((native["top_ids"][:, 0] == prefix["top_ids"][:, 0]).float().mean())
    out = {
        "data": args.data, "model": args.teacher or args.model,
        "params": sum(p.numel() for p in model.parameters()),
        "windows": len(windows), "positions": positions, "top_m": args.top_m,
        "batch": args.batch, "threads": args.threads,
        "native_s": round(native_s, 1), "prefix_s": round(prefix_s, 1),
        "prefix_over_native": round(prefix_s / native_s, 2),
        "prefix_calls_per_s": round(positions / prefix_s, 1),
        "same_top1_share": round(same_top1, 4),
        "cache_mib": round(sum(v.numel() * v.element_size() for v in prefix.values()) / 2**20, 1),
        "torch": torch.__version__, "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
