"""Students distilled from an imported RecBole teacher, next to it and to RecBole's own numbers.

Runs in recshrink's venv (no RecBole needed), after ``train_ref.py`` (the teacher) and a
recshrink recipe run with that checkpoint as ``teacher.load`` (README.md, "Students from
RecBole teachers"):

    .venv/bin/python benchmarks/recbole/students_table.py --run runs/recbole_SASRec \\
        --results benchmarks/recbole/out/ml_SASRec/results.json \\
        --data ../shared/data/ml-100k/ml-100k.inter

Every model is evaluated twice on the test split through :func:`recshrink.evaluate`: with the
history masked (recshrink's protocol, the one the recipe chose its epochs by on validation) and
without (RecBole's). The teacher is the ``.pth`` itself, read by the importer. Prints a markdown
table and writes ``<run>/recbole_students.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import recshrink  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def pick(m: dict) -> dict:
    return {k: round(float(m[k]), 4) for k in ("ndcg@10", "hr@10")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="the recipe's run directory")
    ap.add_argument("--results", type=Path, required=True, help="train_ref.py's results.json")
    ap.add_argument("--data", type=Path, required=True, help="the .inter file RecBole trained on")
    args = ap.parse_args()

    res = json.loads(args.results.read_text())
    (name, ref), = res["models"].items()
    pth = REPO / ref["checkpoint"]
    report = json.loads((args.run / "report.json").read_text())
    data = recshrink.load_data(args.data)
    models = {"teacher": pth} | {
        n: args.run / "students" / n for n, e in report["models"].items() if e["role"] == "student"}

    rows = {}
    for label, path in models.items():
        rows[label] = {
            "path": str(path),
            "params": report["models"].get(label, {}).get("params"),
            "masked": pick(recshrink.evaluate(path, data)),
            "unmasked": pick(recshrink.evaluate(path, data, mask_history=False)),
            "valid_masked": pick(recshrink.evaluate(path, data, split="valid")),
        }
    t = rows["teacher"]
    for r in rows.values():
        r["retention_masked"] = round(r["masked"]["ndcg@10"] / t["masked"]["ndcg@10"], 3)
        r["retention_unmasked"] = round(r["unmasked"]["ndcg@10"] / t["unmasked"]["ndcg@10"], 3)
    out = {"recbole_model": name, "recbole_test": ref["test_result"],
           "recbole_valid": ref["valid_result"], "checkpoint_epoch": ref["checkpoint_epoch"],
           "epochs_run": ref.get("epochs_run"), "models": rows}
    (args.run / "recbole_students.json").write_text(json.dumps(out, indent=2) + "\n")

    rt = ref["test_result"]
    print(f"{name}: RecBole's own test NDCG@10 {rt['ndcg@10']:.4f} / HR@10 {rt['hit@10']:.4f}, "
          f"checkpoint epoch {ref['checkpoint_epoch']}"
          + (f" of {ref['epochs_run']}" if ref.get("epochs_run") else ""))
    print("| model | params | valid NDCG@10 (masked) | test NDCG@10 / HR@10, masked | retention "
          "| test NDCG@10 / HR@10, not masked | retention |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        m, u = r["masked"], r["unmasked"]
        print(f"| {label} | {r['params'] or '–'} | {r['valid_masked']['ndcg@10']:.4f} | "
              f"{m['ndcg@10']:.4f} / {m['hr@10']:.4f} | {r['retention_masked']:.3f} | "
              f"{u['ndcg@10']:.4f} / {u['hr@10']:.4f} | {r['retention_unmasked']:.3f} |")


if __name__ == "__main__":
    main()
