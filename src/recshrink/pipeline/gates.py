"""Quality gates: a recipe's floors on validation retention."""

from __future__ import annotations

from recshrink.errors import RecshrinkError
from recshrink.recipe import Recipe


def check_gates(recipe: Recipe, report: dict) -> None:
    """Fail (a user error, exit 2) when a model made so far is under its retention floor: its
    NDCG@10 over the teacher's on the validation split (the test split only reports).

    Called after every model, so a failing gate stops the run before anything downstream.

    Raises:
        RecshrinkError: Names every model under its floor.
    """
    failed = []
    for name, floor in recipe.gates.min_retention.items():
        if name not in report["models"]:
            continue
        entry = report["models"][name]
        got = entry.get("valid_retention", 1.0 if name == recipe.teacher.label else None)
        if got is None or got < floor:
            failed.append(f"{name} validation retention {got} < {floor}")
    if failed:
        raise RecshrinkError("quality gate failed: " + "; ".join(failed) +
                             " (report.json is written; nothing downstream was skipped silently)")
