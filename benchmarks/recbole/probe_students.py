"""Latency probe: untrained student sizes against a foreign teacher, before any distillation.

Picks a student size from speed alone, so that no quality number (validation or test) goes into
the choice. Each candidate is built with random weights on the data's catalogue, exported to
ONNX and to ORT dynamic INT8 (the fastest CPU backend of the students so far), and timed at batch
1 next to the teacher in the same run, quality off. Runs in recshrink's venv:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recbole/probe_students.py \\
        --teacher benchmarks/recbole/out/foreign/CORE-beauty/CORE.onnx \\
        --data benchmarks/recbole/out/data/beauty/beauty.inter --out /tmp/probe

Prints one row per candidate: p50@1 of its fastest backend and the ratio to the teacher's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import recshrink  # noqa: E402
from recshrink.models.io import save_model  # noqa: E402

CANDIDATES = {  # name -> (builder, arguments)
    "gru_d64_h192": ("gru", {"dim": 64, "hidden": 192}),
    "gru_d64_h128": ("gru", {"dim": 64, "hidden": 128}),
    "gru_d64": ("gru", {"dim": 64}),
    "gru_d32": ("gru", {"dim": 32}),
    "cnn_small": ("cnn_small", {}),
    "sasrec_d64_l1": ("sasrec", {"dim": 64, "layers": 1, "heads": 2}),  # parallel over positions
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True, help="the teacher's ONNX file")
    ap.add_argument("--data", type=Path, required=True, help="the .inter file it was trained on")
    ap.add_argument("--out", type=Path, required=True, help="scratch folder for the candidates")
    ap.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds per model and batch size")
    args = ap.parse_args()

    data = recshrink.load_data(args.data)
    names = [n for n in args.only.split(",") if n] or list(CANDIDATES)
    models: dict[str, object] = {"teacher": args.teacher}
    torch.manual_seed(0)
    for name in names:
        builder, kw = CANDIDATES[name]
        model = recshrink.build_model(builder, data.num_items, **kw).eval()
        mdir = save_model(model, args.out / name, item_ids=list(data.item_ids),
                          data_fingerprint=data.fingerprint())
        onnx = args.out / f"{name}.onnx"
        recshrink.export(mdir, onnx, data=data)
        dyn = args.out / f"{name}.dynamic.onnx"
        recshrink.quantize(onnx, "dynamic", out=dyn, data=data)
        models[name] = onnx
        models[f"{name}.dynamic"] = dyn
    report = recshrink.benchmark(models, data, batches=(1,), threads=1, budget_s=args.budget,
                                 quality=False)
    (args.out / "probe.json").write_text(json.dumps(report, indent=1))

    def p50(label: str) -> float:  # the label's fastest backend at batch 1
        lat = report["models"][label]["latency_us"]["cpu"]
        return min(b["1"]["p50"] for b in lat.values())

    t = p50("teacher")
    print(f"teacher p50@1 {t:.0f} us")
    print("| candidate | params | p50@1 (µs) | x vs teacher |")
    print("|---|---|---|---|")
    for name in names:
        best = min(p50(name), p50(f"{name}.dynamic"))
        params = json.loads((args.out / name / "config.json").read_text())["params"]
        print(f"| {name} | {params:,} | {best:.0f} | {t / best:.2f} |")


if __name__ == "__main__":
    main()
