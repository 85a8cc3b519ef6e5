"""The evaluation entry functions: :func:`evaluate` (ranking quality of one model, the one
ranking helper behind it) and :func:`benchmark` (models side by side through their serving
backends)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from recshrink.api._common import PathLike, as_split, check_compatible
from recshrink.export.artifacts import artifact_kind
from recshrink.export.backends import open_backend
from recshrink.benchmark.run import run_benchmark
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.models.base import SeqRecModel
from recshrink.models.io import save_model
from recshrink.teachers import open_teacher
from recshrink.teachers.protocol import ScoresTeacher
from recshrink.train.evaluate import PerUser, evaluate as evaluate_scores, model_scorer


def evaluate(
    model: SeqRecModel | ScoresTeacher | PathLike,
    data: InteractionData,
    *,
    split: Literal["test", "valid"] = "test",
    splits: Split | None = None,
    max_len: int | None = None,
    ks: tuple[int, ...] = (5, 10, 20),
    mask_history: bool = True,
    mask_scope: Literal["full", "window"] = "full",
    ties: Literal["pessimistic", "expected"] = "pessimistic",
    batch_size: int = 1024,
    per_user: bool = False,
    device: str = "cpu",
) -> dict | tuple[dict, PerUser]:
    """Full-ranking HR/NDCG/MRR/Precision/Recall/F1@K of a model on a leave-one-out split.

    Every score goes through :func:`recshrink.metrics.rank_scores`: history items masked (the
    whole history by default), a target tied with other items ranks behind them, rows with NaN
    or infinite scores are misses (``nonfinite_users``). Quality is also reported separately for
    users whose interest shifts and users whose interest stays (``shift`` / ``stable``).

    Args:
        model: A model, a model directory, a RecBole checkpoint, an exported artifact
            (``.onnx`` through ONNX Runtime, ``.pt2`` through AOTInductor, ``.engine`` through
            TensorRT), or a foreign teacher (a scores-only teacher object, an ONNX graph or
            ``torch.export`` program recshrink did not export).
        data: The data set.
        split: ``"test"`` (report) or ``"valid"`` (choose).
        splits: The leave-one-out split (default: built from ``data`` for the model's length).
        max_len: History length for an exported artifact's split (default 50).
        ks: Cut-offs (must include 10).
        mask_history: Exclude history items from the ranking.
        mask_scope: ``"full"`` (every item before the target) or ``"window"`` (the last
            ``max_len``).
        ties: ``"pessimistic"`` or ``"expected"`` (random tie-breaking's expected rank).
        batch_size: Users per scoring call.
        per_user: Also return every user's rank and top items.
        device: Device of an exported artifact's backend.

    Returns:
        The ``metrics`` block of report.json (``hr@10``, ``ndcg@10``, ``mrr``, ``f1@10``,
        ``count``, ``nonfinite_users``, ``shift``/``stable``), and the per-user ranks if asked.

    Example:
        >>> recshrink.evaluate(student, data, split="valid")["ndcg@10"]
        0.0519...
    """
    obj = isinstance(model, (SeqRecModel, ScoresTeacher))
    if obj or artifact_kind(Path(model)) == "checkpoint":
        m = model if obj else open_teacher(model, data.num_items, data.item_ids)[0]
        check_compatible(m, data, "model" if obj else str(model))
        score_fn = m.scores if isinstance(m, ScoresTeacher) else model_scorer(m)
        length = m.max_len
    else:
        runner = open_backend(Path(model), device=device, num_items=data.num_items,
                              item_ids=data.item_ids)  # fmt: skip
        check_compatible(runner, data, str(model))
        score_fn, length = runner.scorer, max_len or runner.max_len
    sp = splits if splits is not None else as_split(data, None, max_len or length)
    es = sp.test if split == "test" else sp.valid
    return evaluate_scores(score_fn, es, data.item_attrs, ks=ks, mask_history=mask_history,
                           batch_size=batch_size, per_user=per_user, mask_scope=mask_scope,
                           ties=ties)  # fmt: skip


def benchmark(
    models: dict[str, SeqRecModel | ScoresTeacher | PathLike]
    | list[PathLike | tuple[str, PathLike]],
    data: InteractionData,
    *,
    backends: tuple[str, ...] = ("torch", "onnxruntime"),
    device: str = "cpu",
    batches: tuple[int, ...] = (1, 16, 256),
    threads: int | None = None,
    budget_s: float = 2.0,
    dtype: str = "fp32",
    teacher: str | None = None,
    quality: bool = True,
    split: Split | None = None,
    max_len: int = 50,
    ks: tuple[int, ...] = (5, 10, 20),
    mask_scope: Literal["full", "window"] = "full",
    ties: Literal["pessimistic", "expected"] = "pessimistic",
    progress: bool = False,
) -> dict:
    """Latency (p50/p90/p99), throughput, memory, size and quality of models side by side,
    each on every backend that applies to its artifact, with ratios to the teacher's fastest
    backend measured in the same run.

    Args:
        models: ``{label: model, model directory or artifact}``, or a list of paths / ``(label,
            path)`` pairs. The first is the teacher unless ``teacher`` names another. A foreign
            teacher (a scores-only teacher object, an ONNX graph or ``torch.export`` program
            recshrink did not export) is timed in its own runtime only.
        data: The data set (test histories are timed; quality on both splits).
        backends: Any of ``torch``, ``torch-compile``, ``torch-cudagraph``, ``onnxruntime``,
            ``aoti``, ``tensorrt``.
        device: ``"cpu"`` or ``"cuda"``.
        batches: Batch sizes.
        threads: CPU threads for torch and ONNX Runtime.
        budget_s: Seconds of timed calls per model, backend and batch size.
        dtype: Weights of the PyTorch backends.
        teacher: Label of the reference model.
        quality: Also measure ranking quality through each backend.
        split: The leave-one-out split (default: built from ``data`` with ``max_len``).
        ks, mask_scope, ties: The evaluation protocol.
        progress: Print progress.

    Returns:
        The benchmark's dict (benchmark.json: ``machine``, ``settings``, ``models`` with
        ``latency_us``, ``throughput``, ``memory``, ``metrics``, ``valid``, ``vs_teacher``).

    Example:
        >>> rep = recshrink.benchmark({"teacher": "out/teacher", "student": "out/student.onnx"},
        ...                           data, batches=(1, 256))
        >>> rep["models"]["student"]["vs_teacher"]["speedup_p50@1"]
    """
    items = models.items() if isinstance(models, dict) else [
        m if isinstance(m, tuple) else (Path(m).stem if Path(m).suffix else Path(m).name, m)
        for m in models]  # fmt: skip
    sp = split if split is not None else as_split(data, None, max_len)
    with tempfile.TemporaryDirectory(prefix="recshrink-bench-") as tmp:
        pairs = []
        for label, m in items:
            if isinstance(m, SeqRecModel):  # served from a model directory like any other
                where = Path(tmp) / label
                save_model(m, where, item_ids=data.item_ids, data_fingerprint=data.fingerprint())
                m = where
            pairs.append((label, m if isinstance(m, ScoresTeacher) else Path(m)))
        return run_benchmark(pairs, data, sp, backends=tuple(backends), device=device,
                             batches=tuple(batches), threads=threads, budget_s=budget_s,
                             dtype=dtype, teacher=teacher, quality=quality, ks=ks,
                             progress=progress, mask_scope=mask_scope, ties=ties)  # fmt: skip
