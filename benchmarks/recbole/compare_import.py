"""Import RecBole's own checkpoints into recshrink and compare the scores with RecBole's.

Runs in recshrink's venv (RecBole is not needed); reads what train_ref.py wrote:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recbole/compare_import.py

For each model: the checkpoint is read with ``read_checkpoint`` (nothing in it runs) and
converted with ``from_recbole``; the fixture's right-padded histories are left-padded (recshrink's
contract) and scored; the result is compared with RecBole's ``full_sort_predict`` on columns
1..n_items-1 (column 0 is [PAD]: RecBole scores it, recshrink returns -inf).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recshrink.teachers.checkpoint import read_checkpoint  # noqa: E402
from recshrink.teachers.recbole import from_recbole  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def left_pad(item_seq: np.ndarray, lens: np.ndarray) -> torch.Tensor:
    out = np.zeros_like(item_seq)
    for i, n in enumerate(lens):
        out[i, item_seq.shape[1] - n:] = item_seq[i, :n]
    return torch.from_numpy(out).long()


def compare(name: str, ckpt: Path, fixture: Path) -> dict:
    fx = np.load(fixture)
    model, info = from_recbole(read_checkpoint(ckpt))
    ref = torch.from_numpy(fx["scores"]).double()  # [U, n_items]
    seq = left_pad(fx["item_seq"], fx["item_seq_len"])
    with torch.no_grad():
        got = model.scores(seq).double()  # [U, n_items]
    diff = (got[:, 1:] - ref[:, 1:]).abs()
    top_ref = ref[:, 1:].topk(10, dim=1).indices
    top_got = got[:, 1:].topk(10, dim=1).indices
    same_top10 = float((top_ref == top_got).all(dim=1).double().mean())
    return {
        "model": name,
        "checkpoint": str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO) else str(ckpt),
        "users": int(seq.shape[0]),
        "n_items_incl_pad": info["n_items"],
        "fixture_n_items": int(ref.shape[1]),
        "item_tokens_match": int(len(fx["item_id_tokens"])) == info["n_items"],
        "history_lens": [int(fx["item_seq_len"].min()), int(fx["item_seq_len"].max())],
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_ref_score": float(ref[:, 1:].abs().max()),
        "identical_top10_order": same_top10,
        "builder_args": info["builder_args"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = json.loads((args.out / "results.json").read_text())["models"]
    worst = 0.0
    for name, r in results.items():
        row = compare(name, REPO / r["checkpoint"], REPO / r["fixture"])
        worst = max(worst, row["max_abs_diff"])
        print(json.dumps(row), flush=True)
    verdict = "within" if worst <= args.tol else "OVER"
    print(f"worst max |diff| {worst:.3g} ({verdict} {args.tol:g})")
    raise SystemExit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
