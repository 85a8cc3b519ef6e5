"""Print a Markdown ablation table from distillation runs' report.json / config.json.

    python benchmarks/ablation_table.py LABEL=RUN_DIR [LABEL=REPORT.json#MODEL@MODEL_DIR ...] \\
        --teacher NDCG@10 --alone NDCG@10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(label: str, run: str, teacher: float, alone: float) -> str:
    """``run``: a model directory with its own report.json, or ``REPORT.json#MODEL@MODEL_DIR``."""
    if "#" in run:  # a model inside a recipe's report
        report, rest = run.split("#", 1)
        name, model_dir = rest.split("@", 1)
        m = json.loads(Path(report).read_text())["models"][name]
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    else:
        m = next(iter(json.loads((Path(run) / "report.json").read_text())["models"].values()))
        cfg = json.loads((Path(run) / "config.json").read_text())
    tr = cfg.get("extra", {}).get("train", {})
    mt = m["metrics"]
    nd = mt["ndcg@10"]
    return (f"| {label} | {mt['hr@10']:.4f} | **{nd:.4f}** | {mt['f1@10']:.4f} | "
            f"{mt['shift']['ndcg@10']:.4f} | {mt['stable']['ndcg@10']:.4f} | "
            f"{tr.get('valid_ndcg@10', float('nan')):.4f} | {nd / teacher:.3f} | {nd / alone:.3f} | "
            f"{tr.get('seconds', 0) / 60:.1f} min | {tr.get('epochs', '?')} ({tr.get('best_epoch', '?')}) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("--teacher", type=float, required=True)
    ap.add_argument("--alone", type=float, required=True)
    a = ap.parse_args()
    print("| losses | HR@10 | NDCG@10 | F1@10 | shift NDCG@10 | stable NDCG@10 | valid NDCG@10 | "
          "retention | vs alone | train time | epochs (best) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in a.runs:
        label, run = spec.split("=", 1)
        print(row(label, run, a.teacher, a.alone))


if __name__ == "__main__":
    main()
