"""The trainer: single process or torchrun/DDP, early stopping, resumable checkpoints.

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank draws the same batch order and takes its own
share, gradients are averaged by DistributedDataParallel (gloo on CPU, NCCL on CUDA), and every
rank evaluates the same validation set, so early-stopping decisions agree without messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from recshrink.data.split import Split, bucket_batches, training_pairs
from recshrink.errors import RecshrinkError
from recshrink.fsutil import atomic_path
from recshrink.models.base import SeqRecModel
from recshrink.train.config import TrainConfig, without_later_defaults
from recshrink.train.evaluate import evaluate, model_scorer
from recshrink.train.losses import bce_loss, full_softmax_ce, sample_negatives, sampled_softmax_ce
from recshrink.train.optim import Optimizer, use_sparse_items

LossFn = Callable[[SeqRecModel, dict], torch.Tensor]
BatchHook = Callable[[dict, torch.Generator], dict]


@dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes:
        best_epoch: 1-based epoch of the best validation NDCG@10.
        best_valid: Validation metrics of the best epoch (of the ``valid_users`` sample when set).
        epochs: Epochs run in total (resumed ones included).
        seconds: Wall-clock training time, evaluation included, of every call that made this
            run (a resumed run adds the time before the interruption, up to its last saved epoch).
        history: One entry per evaluated epoch.
        resumed_from: Epoch the run resumed after (0 = fresh start).
        rank_digests: Under DDP, a hash of the final weights of every rank.
    """

    best_epoch: int
    best_valid: dict
    epochs: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    rank_digests: list[str] = field(default_factory=list)


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def item_popularity(train: list[np.ndarray], num_items: int) -> torch.Tensor:
    """Training-split interaction counts per item id ``[N + 1]`` (index 0 = 0)."""
    counts = np.bincount(np.concatenate(train) if train else np.zeros(0, np.int64),
                         minlength=num_items + 1).astype(np.float64)
    counts[0] = 0.0
    return torch.from_numpy(counts)


def sampling_probs(popularity: torch.Tensor) -> torch.Tensor:
    """Add-one smoothed popularity distribution ``[N + 1]`` for sampling negatives.

    The padding id 0 gets probability 0: it is never drawn as a negative.
    """
    counts = popularity.float() + 1.0
    counts[0] = 0.0
    return counts / counts.sum()


def ground_truth_loss(
    cfg: TrainConfig, popularity: torch.Tensor | None = None
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict, torch.Tensor], torch.Tensor]:
    """The next-item loss chosen by ``cfg.loss`` on already selected positions.

    Returns:
        ``fn(hs [P, D], ts [P], table [N + 1, D], batch, sel [B, L]) -> scalar``; sampled losses
        read ``batch["negatives"]``.
    """
    log_q = None
    if cfg.loss == "sampled" and cfg.negatives == "popularity":
        if popularity is None:
            raise ValueError("popularity sampling needs item popularity")
        log_q = torch.log(sampling_probs(popularity) * cfg.num_negatives)

    def gt(hs: torch.Tensor, ts: torch.Tensor, table: torch.Tensor, batch: dict,
           sel: torch.Tensor, sparse: bool = False) -> torch.Tensor:  # fmt: skip
        if cfg.loss == "ce":
            return full_softmax_ce(hs, ts, table)
        if cfg.loss == "sampled":
            lq = log_q.to(hs.device) if log_q is not None else None
            return sampled_softmax_ce(hs, ts, table, batch["negatives"], lq, sparse)
        return bce_loss(hs, ts, table, batch["negatives"][sel], sparse)

    return gt


def next_item_loss(cfg: TrainConfig, popularity: torch.Tensor | None = None) -> LossFn:
    """The ground-truth next-item loss chosen by ``cfg.loss`` at every non-padded position.

    Batches carry ``inputs``, ``targets`` and, for sampled losses, ``negatives``.
    """
    gt = ground_truth_loss(cfg, popularity)

    def loss_fn(model: SeqRecModel, batch: dict) -> torch.Tensor:
        tgt = batch["targets"]  # [B, L]
        h = model.forward_all(batch["inputs"])  # [B, L, D]
        sel = tgt > 0
        return gt(h[sel], tgt[sel], model.item_table(), batch, sel,  # h[sel]: [P, D]
                  model.sparse_items)

    return loss_fn


class _Step(nn.Module):
    """The loss as a module, so that DistributedDataParallel sees one forward per step."""

    def __init__(self, model: SeqRecModel, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def state_digest(model: nn.Module) -> str:
    """A short hash of a module's state (weights and buffers)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _atomic_torch_save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _atomic_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def over_budget(t0: float, max_minutes: float | None) -> bool:
    """Whether ``max_minutes`` have passed since ``t0`` (``time.perf_counter()``)."""
    return max_minutes is not None and time.perf_counter() - t0 > 60.0 * max_minutes


def fit(
    model: SeqRecModel,
    split: Split,
    cfg: TrainConfig,
    work_dir: str | Path,
    *,
    item_attrs: list[frozenset[int]] | None = None,
    loss_fn: LossFn | None = None,
    batch_hook: BatchHook | None = None,
    run_key: str | tuple[str, ...] = "",
    progress: bool = True,
    desc: str = "train",
    dense_table: str | None = None,
) -> TrainResult:
    """Train ``model`` on ``split.train`` with early stopping on validation NDCG@10.

    The state after every epoch is written to ``work_dir/train_state.pt`` (tensors only, loaded
    with ``weights_only=True``) and the best weights to ``work_dir/best.safetensors``; calling
    ``fit`` again with the same ``run_key`` resumes after the last finished epoch and ends with
    the same weights as an uninterrupted run. On return ``model`` holds the best weights.

    Args:
        model: Model to train (moved to ``cfg.device``).
        split: Leave-one-out split.
        cfg: Training configuration.
        work_dir: Where checkpoints go.
        item_attrs: Item attributes (interest F1 in validation metrics).
        loss_fn: ``loss_fn(model, batch) -> scalar``; default :func:`next_item_loss`.
        batch_hook: ``hook(batch, generator) -> batch`` adds entries before the loss (e.g. cached
            teacher outputs); ``generator`` is the epoch's seeded random generator.
        run_key: Identifies the run (config, data, model); a state with another key is ignored.
            A tuple is the key followed by earlier forms of it (a state saved under an earlier
            form resumes, and is saved under the key from its next epoch on).
        progress: Show a progress bar (rank 0 only).
        desc: Progress-bar label.
        dense_table: Why ``loss_fn`` reads the whole item table (rules out sparse item
            gradients, :attr:`TrainConfig.item_grad`), or None.
    """
    rank, world = _dist()
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecshrinkError("device 'cuda' requested but CUDA is not available")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    state_path, best_path = work / "train_state.pt", work / "best.safetensors"
    # what identifies the run: a different time budget, thread count or device may resume it
    ident = without_later_defaults({k: v for k, v in asdict(cfg).items()
                                    if k not in ("max_minutes", "threads", "device",
                                                 "eval_batch_size")})  # fmt: skip
    keys = [hashlib.sha256((k + json.dumps(ident, sort_keys=True, default=str) +
                            str(world)).encode()).hexdigest()[:16]
            for k in ((run_key,) if isinstance(run_key, str) else run_key)]  # fmt: skip
    key = keys[0]

    model.to(device)
    seqs = training_pairs(split.train, model.max_len)
    if not seqs:
        raise RecshrinkError("no user has 2 or more training items: nothing to train on")
    popularity = item_popularity(split.train, model.num_items)
    loss_fn = loss_fn or next_item_loss(cfg, popularity)
    probs = sampling_probs(popularity) if cfg.negatives == "popularity" else None
    core = _Step(model, loss_fn)  # a loss that is an nn.Module trains its own parameters too
    if cfg.loss == "ce":
        dense_table = "loss: ce"
    sparse = use_sparse_items(cfg.item_grad, model.num_items, weight_decay=cfg.weight_decay,
                              world=world, dense_table=dense_table)  # fmt: skip
    opt = Optimizer(core, model, lr=cfg.lr, weight_decay=cfg.weight_decay, sparse_items=sparse)

    start, best, best_epoch, bad, history = 0, -1.0, 0, 0, []
    stale = 0  # evaluations without improvement since the best one or the last lr decay
    before = 0.0  # seconds spent by earlier calls of a resumed run
    budget_stop = None  # the max_minutes a finished run stopped on
    best_valid: dict = {}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(cfg.seed)
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("key") in keys:
            model.load_state_dict(state["model"])
            if isinstance(loss_fn, nn.Module):
                loss_fn.load_state_dict(state["aux"])
            opt.load_state_dict(state["optim"])
            start, best, best_epoch, bad = (
                int(state["epoch"]), float(state["best"]), int(state["best_epoch"]),
                int(state["bad"]),
            )  # fmt: skip
            stale = int(state.get("stale", bad))
            history = json.loads(state["history"])
            best_valid = json.loads(state["best_valid"])
            before = float(state.get("elapsed", 0.0))
            budget_stop = state.get("budget_stop")
            torch.set_rng_state(state["rng"])
            if best_path.exists():
                best_state = {k: v.to(device) for k, v in load_file(str(best_path)).items()}
    resumed_from = start

    step: nn.Module = core
    owns_group = world > 1 and not dist.is_initialized()
    if world > 1:
        if owns_group:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        step = nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None
        )

    t0 = time.perf_counter()
    # a run that ended on its time budget stays ended when called again with the same budget
    done = bad >= cfg.patience or start >= cfg.epochs or (
        budget_stop is not None and float(budget_stop) == float(cfg.max_minutes or -1))
    hide = None if progress and rank == 0 else True  # None: tqdm turns itself off without a TTY
    bar = tqdm(total=cfg.epochs, initial=start, desc=desc, disable=hide,
               leave=False, dynamic_ncols=True)  # fmt: skip
    valid_set = split.valid.sample(cfg.valid_users, cfg.seed)  # the users each epoch ranks
    epoch = start
    while not done:
        epoch += 1
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        batches = bucket_batches(seqs, cfg.batch_size, rng, rank, world)
        model.train()
        t_epoch, total, count = time.perf_counter(), 0.0, 0
        for batch in batches:
            if cfg.loss == "sampled":
                batch["negatives"] = sample_negatives(model.num_items, cfg.num_negatives, gen, probs)
            elif cfg.loss == "bce":
                tgt = batch["targets"]
                batch["negatives"] = sample_negatives(
                    model.num_items, tgt.numel(), gen, probs
                ).view_as(tgt)
            if batch_hook is not None:
                batch = batch_hook(batch, gen)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = step(batch)
            opt.zero_grad()
            loss.backward()
            if cfg.grad_clip > 0:
                opt.clip_grad_norm(cfg.grad_clip)
            opt.step()
            total += float(loss.detach())
            count += 1
            if world == 1 and over_budget(t0, cfg.max_minutes):  # mid-epoch (the ranks of a
                break  # multi-process run stop together, at the epoch's end)
        entry = {"epoch": epoch, "loss": round(total / max(1, count), 5),
                 "seconds": round(time.perf_counter() - t_epoch, 2)}  # fmt: skip
        if count < len(batches):
            entry["batches"] = f"{count}/{len(batches)}"  # stopped by the budget mid-epoch
        out_of_time = over_budget(t0, cfg.max_minutes)
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time:
            valid = evaluate(model_scorer(model, device), valid_set, item_attrs, cfg.ks,
                             cfg.mask_history, cfg.eval_batch_size, mask_scope=cfg.mask_scope,
                             ties=cfg.ties)  # fmt: skip
            ndcg = valid["ndcg@10"]
            entry["valid_ndcg@10"] = round(ndcg, 5)
            if ndcg > best:
                best, best_epoch, bad, stale, best_valid = ndcg, epoch, 0, 0, valid
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if rank == 0:
                    _atomic_safetensors(best_state, best_path)
            else:
                bad, stale = bad + 1, stale + 1
                if cfg.lr_decay < 1.0 and stale >= cfg.lr_patience:
                    for group in opt.param_groups:  # the rate lives in the optimizer's state
                        group["lr"] = max(group["lr"] * cfg.lr_decay, cfg.min_lr)
                    stale = 0
        if cfg.lr_decay < 1.0:
            entry["lr"] = opt.param_groups[0]["lr"]
        history.append(entry)
        done = bad >= cfg.patience or epoch >= cfg.epochs or out_of_time
        if rank == 0:
            _atomic_torch_save(
                {
                    "key": key, "model": model.state_dict(), "optim": opt.state_dict(),
                    "aux": loss_fn.state_dict() if isinstance(loss_fn, nn.Module) else {},
                    "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad": bad,
                    "stale": stale,
                    "history": json.dumps(history), "best_valid": json.dumps(best_valid),
                    "rng": torch.get_rng_state(),
                    "elapsed": before + time.perf_counter() - t0,
                    **({"budget_stop": float(cfg.max_minutes)} if out_of_time else {}),
                },
                state_path,
            )  # fmt: skip
        bar.update(1)
        bar.set_postfix(loss=entry["loss"], ndcg10=f"{best:.4f}", best_ep=best_epoch)
    bar.close()
    opt.close(model)

    model.load_state_dict(best_state)
    digests: list[str] = []
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, state_digest(model))
        digests = [str(d) for d in gathered]
        if owns_group:
            # every rank passes this barrier before any exits. No destroy_process_group: with
            # gloo on CPU (torch 2.13) it hung one rank in 7-14 runs of the two-process test,
            # and exiting without the barrier aborted one in 24; barrier alone: 0 in 48
            dist.barrier()
    return TrainResult(
        best_epoch=best_epoch,
        best_valid=best_valid,
        epochs=epoch,
        seconds=round(before + time.perf_counter() - t0, 2),
        history=history,
        resumed_from=resumed_from,
        rank_digests=digests,
    )
