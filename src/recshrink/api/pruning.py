"""The prune stage's entry function: structured pruning (or sparsity) with recovery."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from recshrink.api._common import (
    PathLike, Result, as_model, as_split, check_compatible, configured, out_dir,
)  # fmt: skip
from recshrink.api.training import save_trained
from recshrink.compress.distill import DistillConfig, distill_fit
from recshrink.compress.prune import PruneConfig
from recshrink.compress.prune import prune as prune_structure
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split, bucket_batches, training_pairs
from recshrink.models.base import SeqRecModel
from recshrink.train.config import TrainConfig, config_json
from recshrink.train.trainer import fit, next_item_loss, state_digest


def prune(
    model: SeqRecModel | PathLike,
    data: InteractionData,
    *,
    out: PathLike | None = None,
    config: PruneConfig | None = None,
    train: TrainConfig | None = None,
    kd: DistillConfig | None = None,
    split: Split | None = None,
    steps: list[dict] | None = None,
    parent_label: str | None = None,
    cache_dir: PathLike | None = None,
    progress: bool = False,
    **prune_cfg,
) -> Result:
    """Prune ``model`` (a copy) with recovery after each step.

    Recovery is ``config.recover``: distillation from the unpruned model (``kd``, default ground
    truth 0.5 + top-M logit KD 0.5, item table kept), fine-tuning on the ground truth, or none.
    Each recovery is a resumable training run under ``out/work/step<N>``.

    Args:
        model: A trained model or a model directory.
        data: The data it was trained on.
        out: Pruned model directory (None: nothing is kept on disk).
        config: A :class:`recshrink.compress.prune.PruneConfig`; ``**prune_cfg`` override its
            fields (``ratio=0.5, importance="taylor", steps=1, recover="distill"``).
        train: Recovery training settings (default: 10 epochs, patience 3).
        kd: Recovery distillation settings.
        split: The leave-one-out split (default: ``data``'s for the model's ``max_len``).
        steps: The parent's recorded steps (default: read from its directory, or none).
        parent_label: How the pruned model's step names its parent (default: the path or arch).
        cache_dir: Where the teacher cache of distillation recovery goes.
        progress: Print progress bars.

    Returns:
        :class:`Result`: the pruned model and report.json's ``prune`` block (per-step sizes,
        params, recovery epochs and seconds).

    Example:
        >>> small = recshrink.prune(student, data, ratio=0.5, train=TrainConfig(epochs=3)).model
    """
    parent, meta = as_model(model)
    check_compatible(parent, data, str(model) if meta is not None else "model")
    if steps is None:
        steps = [{k: v for k, v in st.items() if k != "config"} if st.get("type") == "distill"
                 else st for st in (meta.steps if meta else [])]  # fmt: skip
    label = parent_label or (str(model) if meta is not None else parent.arch)
    cfg = configured(config, PruneConfig(), prune_cfg)
    train_cfg = train or TrainConfig(epochs=10, patience=3)
    split = as_split(data, split, parent.max_len)
    if cache_dir is None and out is not None:
        cache_dir = Path(out).parent / ".teacher-cache"
    t0 = time.perf_counter()
    recoveries: list[dict] = []
    digest = f"{state_digest(parent)}|{{}}|{data.fingerprint()}"
    key = f"prune|{digest.format(config_json(cfg))}"
    legacy = f"prune|{digest.format(cfg)}"  # the repr key of runs made before 0.1.0's API
    # recovery trains an already trained model: never re-initialise its item table
    rcfg = dataclasses.replace(kd or DistillConfig(), init_items="none")

    with out_dir(out, "prune") as where:
        def recover(pruned: SeqRecModel, original: SeqRecModel, step: int) -> None:
            work = where / "work" / f"step{step}"
            run_key = (f"{key}|{step}", f"{legacy}|{step}")
            if cfg.recover == "distill":
                result, _ = distill_fit(original, pruned, split, train_cfg, rcfg, work,
                                        cache_dir=cache_dir, item_attrs=data.item_attrs,
                                        run_key=run_key, progress=progress,
                                        desc=f"recover {step}/{cfg.steps}")  # fmt: skip
            else:
                result = fit(pruned, split, train_cfg, work, item_attrs=data.item_attrs,
                             run_key=run_key, progress=progress,
                             desc=f"recover {step}/{cfg.steps}")  # fmt: skip
            pruned.cpu().eval()
            recoveries.append({"step": step, "epochs": result.epochs,
                               "best_epoch": result.best_epoch,
                               "seconds": round(result.seconds, 2),
                               "valid_ndcg@10": result.best_valid.get("ndcg@10")})  # fmt: skip

        def batches() -> list[dict]:
            windows = training_pairs(split.train, parent.max_len)
            rng = np.random.default_rng(train_cfg.seed)
            return bucket_batches(windows, train_cfg.batch_size, rng)[: cfg.taylor_batches]

        loss = next_item_loss(TrainConfig(loss="ce"))
        pruned, summary = prune_structure(parent, cfg,
                                          recover=None if cfg.recover == "none" else recover,
                                          taylor_batches=batches, loss_fn=loss)  # fmt: skip
        summary["recovery"] = recoveries
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        all_steps = [*steps, {**cfg.step(), "parent": label}]
        save_trained(pruned, where, data, split, all_steps, {"parent": label, "prune": summary})
    return Result(pruned, Path(out) if out is not None else None, summary, all_steps)
