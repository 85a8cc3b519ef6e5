"""Print a Markdown table of the models in one or more recshrink report.json files.

    python benchmarks/table.py runs/beauty/report.json [more/report.json ...]
"""

from __future__ import annotations

import json
import sys


def _f(x, nd=4):
    return "–" if x is None else f"{x:.{nd}f}"


def main(paths: list[str]) -> None:
    print("| model | role | arch | params | HR@10 | NDCG@10 | HR@20 | NDCG@20 | F1@10 | MRR "
          "| shift NDCG@10 | stable NDCG@10 | retention | vs alone | agree@10 | train s | epochs |")
    print("|" + "---|" * 17)
    for p in paths:
        r = json.load(open(p))
        for name, m in r["models"].items():
            x = m["metrics"]
            tr = m.get("train") or {}
            print(f"| {name} | {m['role']} | {m['arch']} | {m['params']:,} | {_f(x['hr@10'])} "
                  f"| {_f(x['ndcg@10'])} | {_f(x['hr@20'])} | {_f(x['ndcg@20'])} "
                  f"| {_f(x['f1@10'])} | {_f(x['mrr'])} "
                  f"| {_f(x.get('shift', {}).get('ndcg@10'))} "
                  f"| {_f(x.get('stable', {}).get('ndcg@10'))} | {_f(m.get('retention'), 3)} "
                  f"| {_f(m.get('vs_baseline'), 3)} | {_f(m.get('fidelity@10', m.get('agreement@10')), 3)} "
                  f"| {_f(m.get('train_seconds'), 0)} | {tr.get('epochs', '–')} |")


if __name__ == "__main__":
    main(sys.argv[1:])
