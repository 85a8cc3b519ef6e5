"""The training stages' entry functions: :func:`train` (a model on the ground truth) and
:func:`distill` (a teacher into a student)."""

from __future__ import annotations

from pathlib import Path

import torch

from recshrink.api._common import (
    PathLike, Result, as_model, as_split, check_compatible, configured, out_dir,
)  # fmt: skip
from recshrink.api._common import popular_items
from recshrink.compress.distill import DistillConfig, distill_fit
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.models import build_model
from recshrink.models.base import SeqRecModel
from recshrink.models.io import save_model
from recshrink.teachers.protocol import ScoresTeacher
from recshrink.train.config import TrainConfig
from recshrink.train.trainer import TrainResult, fit


def save_trained(model: SeqRecModel, out: Path, data: InteractionData, split: Split,
                 steps: list[dict], extra: dict) -> None:  # fmt: skip
    """Save a model made from ``data``: its id map, data fingerprint, steps, and the popular
    items that answer empty histories."""
    save_model(model, out, item_ids=data.item_ids, data_fingerprint=data.fingerprint(),
               steps=steps, extra={**extra, "popular": popular_items(split, data.num_items)})


def train_summary(result: TrainResult, loss: str) -> dict:
    """The ``train`` block of a model's report.json entry."""
    return {
        "seconds": result.seconds,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "loss": loss,
        "valid_ndcg@10": result.best_valid.get("ndcg@10"),
        "history": result.history,
        "resumed_from": result.resumed_from,
    }


def _build(model: SeqRecModel | str, data: InteractionData, max_len: int,
           model_args: dict | None, seed: int) -> tuple[SeqRecModel, str]:  # fmt: skip
    """A model object as it is, or built by name (seeded first); and its resume key."""
    if isinstance(model, SeqRecModel):
        if model_args:
            raise ValueError("model_args apply to a model given by name, not to a built model")
        check_compatible(model, data, "model")
        return model, f"{model.arch}|{sorted(model.builder_args.items())}|{data.fingerprint()}"
    args = {"max_len": max_len, **(model_args or {})}
    torch.manual_seed(seed)
    built = build_model(model, data.num_items, **args)
    return built, f"{model}|{sorted(args.items())}|{data.fingerprint()}"


def train(
    model: SeqRecModel | str,
    data: InteractionData,
    *,
    out: PathLike | None = None,
    max_len: int = 50,
    model_args: dict | None = None,
    split: Split | None = None,
    config: TrainConfig | None = None,
    progress: bool = False,
    desc: str = "train",
    **train_cfg,
) -> Result:
    """Train a model on the next-item ground truth (early stopping on validation NDCG@10).

    Args:
        model: A built model, or a builder/preset name (``"sasrec_large"``, ``"gru_small"``,
            see :func:`recshrink.models.builder_names`), built with ``model_args`` after seeding
            with the config's seed.
        data: The data set (:func:`recshrink.load_data` or :func:`recshrink.synthetic`).
        out: Model directory to write (``config.json`` + ``model.safetensors``; ``work/`` holds
            the resumable training state). None: nothing is kept on disk.
        max_len: History length L of a model built by name.
        model_args: Builder arguments of a model built by name (e.g. ``{"hidden": 192}``).
        split: The leave-one-out split to use (default: ``data``'s, for histories of the model's
            ``max_len``).
        config: A :class:`recshrink.train.TrainConfig`; ``**train_cfg`` override its fields.
        progress: Print a progress bar.
        desc: Its label.
        **train_cfg: :class:`recshrink.train.TrainConfig` fields, e.g. ``epochs=20, lr=1e-3``.

    Returns:
        :class:`Result`: the best model and report.json's ``train`` block.

    Example:
        >>> data = recshrink.synthetic(users=500, items=200)
        >>> teacher = recshrink.train("sasrec_base", data, max_len=30, epochs=5).model
        >>> teacher.recommend(torch.tensor([[0, 3, 17, 42]]), k=10)[1].shape   # [B, k]
        torch.Size([1, 10])
    """
    cfg = configured(config, TrainConfig(), train_cfg)
    built, key = _build(model, data, max_len, model_args, cfg.seed)
    split = as_split(data, split, built.max_len)
    with out_dir(out, "train") as where:
        result = fit(built, split, cfg, where / "work", item_attrs=data.item_attrs,
                     run_key=key, progress=progress, desc=desc)  # fmt: skip
        summary = train_summary(result, cfg.loss)
        if result.rank_digests:
            summary["rank_digests"] = result.rank_digests
        built.cpu().eval()
        save_trained(built, where, data, split, [],
                     {"train": {k: v for k, v in summary.items() if k != "history"}})
    return Result(built, Path(out) if out is not None else None, summary, [])


def distill(
    teacher: SeqRecModel | ScoresTeacher | PathLike,
    data: InteractionData,
    student: SeqRecModel | str = "gru_small",
    *,
    out: PathLike | None = None,
    max_len: int = 50,
    model_args: dict | None = None,
    split: Split | None = None,
    config: TrainConfig | None = None,
    kd: DistillConfig | None = None,
    cache_dir: PathLike | None = None,
    teacher_label: str | None = None,
    progress: bool = False,
    desc: str = "distill",
    **kd_cfg,
) -> Result:
    """Distil ``teacher`` into ``student`` (ground truth + KD losses; early stopping on
    validation NDCG@10).

    Args:
        teacher: A model, a scores-only teacher (:func:`recshrink.teacher_from_module`), or a
            file: a model directory, a RecBole checkpoint, an ONNX graph, a ``torch.export``
            program (:func:`recshrink.teachers.open_teacher`).
        data: The data set the teacher was trained on.
        student: A built model or a builder/preset name (``"gru_small"``, ``"cnn_wide"``).
        out: Student directory to write (None: nothing is kept on disk).
        max_len: History length L of a student built by name.
        model_args: Builder arguments of a student built by name.
        split: The leave-one-out split (default: ``data``'s for the student's ``max_len``).
        config: Training settings (:class:`recshrink.train.TrainConfig`).
        kd: Distillation settings (:class:`recshrink.compress.distill.DistillConfig`);
            ``**kd_cfg`` override its fields (``kd_weight=0.5, temperature=1.0, ...``).
        cache_dir: Where the teacher's cached top-M outputs go (default: ``out/../.teacher-cache``
            or none without ``out``).
        teacher_label: How the student's steps name the teacher (default: its path or arch).
        progress: Print a progress bar.
        desc: Its label.

    Returns:
        :class:`Result`: the best student, report.json's ``train`` block with the distillation
        summary (losses, cache reuse), and its ``distill`` step.

    Example:
        >>> student = recshrink.distill(teacher, data, "gru_small", max_len=30, epochs=5,
        ...                             kd_weight=0.5).model
    """
    tmodel, _ = as_model(teacher, data.num_items, data.item_ids)
    given = isinstance(teacher, torch.nn.Module)  # an object, not a path
    check_compatible(tmodel, data, "teacher" if given else str(teacher))
    label = teacher_label or (tmodel.arch if given else str(teacher))
    cfg = config or TrainConfig()
    kcfg = configured(kd, DistillConfig(), kd_cfg)
    built, key = _build(student, data, max_len, model_args, cfg.seed)
    split = as_split(data, split, built.max_len)
    if cache_dir is None and out is not None:
        cache_dir = Path(out).parent / ".teacher-cache"
    with out_dir(out, "distill") as where:
        result, info = distill_fit(tmodel, built, split, cfg, kcfg, where / "work",
                                   cache_dir=cache_dir, item_attrs=data.item_attrs, run_key=key,
                                   progress=progress, desc=desc)  # fmt: skip
        summary = {**train_summary(result, cfg.loss), **info}
        summary["seconds"] += info["cache_seconds"] * (not info["cache_reused"])
        step = {"type": "distill", "teacher": label, "losses": info["losses"],
                "config": dict(vars(kcfg))}  # fmt: skip
        built.cpu()
        save_trained(built, where, data, split, [step],
                     {"train": {k: v for k, v in summary.items() if k != "history"}})
    return Result(built, Path(out) if out is not None else None, summary, [step])
