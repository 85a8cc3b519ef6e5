"""The blocks of report.json: where numbers were measured (``machine``), on what (``dataset``),
how (``protocol``), and each model's entry."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.models.base import SeqRecModel
from recshrink.models.io import artifact_bytes
from recshrink.train.evaluate import MIN_GROUP_CASES, shift_groups
from recshrink.version import __version__


def dataset_entry(data: InteractionData) -> dict:
    """The ``dataset`` block of report.json."""
    return {**data.stats(), "fingerprint": data.fingerprint(), "source": data.source}


def machine_entry(device: str = "cpu") -> dict:
    """Where numbers were measured."""
    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def rounded(obj):
    """Floats (at any depth of dicts) rounded to 6 digits, as report.json stores them."""
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    return obj


def model_entry(
    model: SeqRecModel,
    role: str,
    artifact: Path,
    metrics: dict,
    *,
    train: dict | None = None,
    extra: dict | None = None,
    valid: dict | None = None,
) -> dict:
    """One model's block in report.json: ``metrics`` are on the test split, ``valid`` on the
    validation split (what gates and choices read)."""
    entry = {
        "arch": model.arch,
        "role": role,
        "builder_args": dict(model.builder_args),
        "params": model.num_params(),
        "size_bytes": artifact_bytes(artifact),
        "artifact": str(artifact),
        "train_seconds": (train or {}).get("seconds"),
        "metrics": rounded(metrics),
    }
    if valid is not None:
        entry["valid"] = rounded(valid)
    if train:
        entry["train"] = rounded(train)
    entry.update(extra or {})
    return entry


def _attr_names(data: InteractionData, ids: list[int]) -> list[str]:
    names = data.attr_names or []
    return [names[i] if 0 <= i < len(names) else str(i) for i in ids]


def protocol_entry(eval_kwargs: dict, data: InteractionData, split: Split, max_len: int,
                   shift_window: int) -> dict:  # fmt: skip
    """The ``protocol`` block of report.json: how every number in the report was measured.

    Args:
        eval_kwargs: The evaluation protocol (``ks``, ``mask_history``, ``mask_scope``,
            ``ties``), e.g. a recipe's ``EvalSpec.kwargs()``.
    """
    shift = int((split.test.shift & split.test.known).sum())
    stable = int((~split.test.shift & split.test.known).sum())
    out = {"split": "leave-one-out", "ranking": "full", "max_len": max_len,
           "mask_history": eval_kwargs["mask_history"], "mask_scope": eval_kwargs["mask_scope"],
           "ties": eval_kwargs["ties"],
           "nonfinite": "rows with NaN or +inf scores are misses (nonfinite_users)",
           "ks": list(eval_kwargs["ks"]), "users": {"valid": len(split.valid), "test": len(split.test)},
           "selection": "models, settings and search trials are chosen on the valid split; "
                        "the test split is scored once for the reported models",
           "shift_window": shift_window, "shift_cases": shift, "stable_cases": stable,
           "shift_source": "ground truth" if data.shift is not None else
                           "item attributes" if data.item_attrs is not None else "none"}  # fmt: skip
    if data.item_attrs is not None:
        out["attrs_dropped"] = {"rule": "attributes on more than half the items",
                                "ids": split.dropped_attrs,
                                "names": _attr_names(data, split.dropped_attrs)}  # fmt: skip
    if out["shift_source"] != "none" and not shift_groups(split.test):
        out["shift_split"] = (f"too few cases to mean anything ({shift} shift, {stable} stable; "
                              f"each needs {MIN_GROUP_CASES}): shift/stable quality is not "
                              "reported")  # fmt: skip
    return out


def single_model_report(label: str, model: SeqRecModel, path: Path, data: InteractionData,
                        metrics: dict, summary: dict, role: str, device: str = "cpu",
                        extra: dict | None = None) -> dict:  # fmt: skip
    """The report.json of one trained model (``recshrink train`` / ``distill`` write it)."""
    return {
        "recshrink_version": __version__, "machine": machine_entry(device),
        "dataset": dataset_entry(data), "teacher": label if role == "teacher" else None,
        "models": {label: model_entry(model, role, path, metrics, train=summary, extra=extra)},
    }  # fmt: skip


def comparison_entry(model: SeqRecModel | None, path: Path, metrics: dict, parent_metrics: dict,
                     agreement: float, extra: dict | None = None) -> dict:  # fmt: skip
    """A compressed model against its parent (``recshrink prune`` / ``quantize`` reports): size,
    metrics, NDCG@10 retention and top-10 agreement."""
    entry = {"params": model.num_params() if model is not None else None,
             "size_bytes": artifact_bytes(path), "artifact": str(path),
             "metrics": metrics, "agreement@10": agreement,
             "retention": round(metrics["ndcg@10"] / max(parent_metrics["ndcg@10"], 1e-12), 4)}
    entry.update(extra or {})
    return entry
