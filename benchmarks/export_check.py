"""Export every Beauty model to ONNX and check the Predictor against PyTorch on all test users.

    python benchmarks/export_check.py --data ../shared/data/beauty/Beauty.txt \\
        --model teacher=runs/beauty/teacher_ffn4x --model gru=runs/beauty/gru_kd ... --out runs/beauty/export_check

For each model: ONNX export (validated inside on 2,000 users), TensorRT compatibility, file size,
then `Predictor.load(file).recommend(raw histories, 10)` against the PyTorch model's top-10 (history
excluded) for every test user: the share of users with the same top-10 set, and mean overlap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from recshrink.data.loaders import load_data
    from recshrink.data.split import leave_one_out
    from recshrink.export.onnx import ServingHead
    from recshrink.export.runtime import Predictor
    from recshrink.models.io import load_model
    from recshrink.api import popular_items
    from recshrink.api.exports import export_checked

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", action="append", required=True, help="LABEL=DIR")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data("s3rec", Path(args.data))
    split = leave_one_out(data, 50)
    hist = split.test.histories
    raw = [[data.item_ids[i - 1] for i in h if i] for h in hist]
    popular = popular_items(split, data.num_items)
    results = {}
    for spec in args.model:
        label, path = spec.split("=", 1)
        model, meta = load_model(path)
        t0 = time.perf_counter()
        info = export_checked(model, out / f"{label}.onnx", split, steps=meta.steps,
                              item_ids=data.item_ids, popular=popular)  # fmt: skip
        pred = Predictor.load(out / f"{label}.onnx")
        head = ServingHead(model.eval(), 10)
        same, overlap = 0, 0.0
        for i in range(0, len(hist), 1024):
            with torch.inference_mode():
                ref = head(torch.from_numpy(hist[i : i + 1024]))[1].numpy()
            got = pred.recommend(raw[i : i + 1024], 10).ids
            for r, g in zip(ref.tolist(), got):
                rs = {data.item_ids[j - 1] for j in r}
                gs = {str(x) for x in g}
                same += rs == gs
                overlap += len(rs & gs) / 10
        results[label] = {**info, "users": len(hist), "same_top10_users": round(same / len(hist), 4),
                          "mean_overlap@10": round(overlap / len(hist), 4),
                          "steps": [s.get("type") + (f":{s.get('mode')}" if s.get("mode") else "")
                                    for s in meta.steps],
                          "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        print(label, json.dumps(results[label]), flush=True)
    (out / "export_check.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
