"""Cost probe: RecBole teacher sizes on untrained weights, before any teacher is trained.

Picks a foreign teacher's size from cost alone (no quality number goes into the choice): for
each ``--size`` it builds the RecBole model on the dataset with random weights, times a few
training steps at ``train_batch_size`` (what an epoch will cost) and exports
``full_sort_predict`` to ONNX to time it in ONNX Runtime at batch 1, one thread (what the
student's speed-up will be measured against). Runs in the RecBole env:

    benchmarks/recbole/.venv/bin/python benchmarks/recbole/probe_teacher.py --model CORE \\
        --dataset-dir benchmarks/recbole/out/data/beauty \\
        --size "embedding_size=64 n_layers=2" --size "embedding_size=128 n_layers=2"

Prints one JSON line per size: parameters, seconds per training step, projected minutes per
epoch, and the ONNX graph's p50@1 in µs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from train_foreign import export_onnx, parse_sets, recbole_config  # noqa: E402  (same folder)


def p50_batch1(path: Path, seq: np.ndarray, lens: np.ndarray, seconds: float) -> float:
    """p50 in µs of the ONNX graph at batch 1 in ONNX Runtime, one thread (recshrink's timer)."""
    import onnxruntime as ort
    from recshrink.benchmark.latency import time_calls

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = [{"item_seq": seq[i][None], "item_seq_len": lens[i][None]} for i in range(len(seq))]
    return float(time_calls(lambda f: sess.run(None, f), feeds, budget_s=seconds)["p50"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="RecBole model name (CORE, BERT4Rec, ...)")
    ap.add_argument("--dataset-dir", type=Path, required=True, help="folder <name>/ with <name>.inter")
    ap.add_argument("--size", action="append", required=True,
                    help='space-separated RecBole overrides, e.g. "embedding_size=128 n_layers=2"')
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override applied to every size (e.g. train_batch_size=256)")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the training steps")
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of ORT timing per size")
    args = ap.parse_args()

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    ds_dir = args.dataset_dir.resolve()
    common = parse_sets(args.set)
    scratch = Path(tempfile.mkdtemp(prefix="probe_teacher_"))
    os.chdir(scratch)  # RecBole writes log/ relative to the cwd
    for size in args.size:
        overrides = {**common, **parse_sets(size.split())}
        config = Config(model=args.model, dataset=ds_dir.name, config_dict=recbole_config(
            args.model, ds_dir.name, ds_dir.parent, scratch, 1, 2020, overrides))
        init_seed(config["seed"], config["reproducibility"])
        torch.set_num_threads(args.threads)
        dataset = create_dataset(config)
        train_data, _, test_data = data_preparation(config, dataset)
        model = get_model(config["model"])(config, train_data._dataset)
        opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
        model.train()
        step_s = []
        for i, batch in enumerate(train_data):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = model.calculate_loss(batch)
            loss.backward()
            opt.step()
            step_s.append(time.perf_counter() - t0)
            if i + 1 >= args.steps + 2:
                break
        step = float(np.median(step_s[2:]))
        torch.set_num_threads(1)
        sub = next(iter(test_data))[0][torch.arange(64)]
        onnx_path = scratch / f"{args.model}.onnx"
        info = export_onnx(model.eval(), sub, onnx_path, int(dataset.item_num) - 1,
                           int(config["MAX_ITEM_LIST_LENGTH"]))
        seq = sub[model.ITEM_SEQ].numpy().astype(np.int64)
        lens = sub[model.ITEM_SEQ_LEN].numpy().astype(np.int64)
        row = {"model": args.model, "size": size, "params": sum(p.numel() for p in model.parameters()),
               "train_step_s": round(step, 3), "threads": args.threads,
               "epoch_min_projected": round(step * len(train_data) / 60, 1),
               "onnx_bytes": info.get("bytes"),
               "onnx_p50_batch1_us": round(p50_batch1(onnx_path, seq, lens, args.budget), 1)}
        print(json.dumps(row), flush=True)
    print(f"scratch: {scratch}", file=sys.stderr)


if __name__ == "__main__":
    main()
