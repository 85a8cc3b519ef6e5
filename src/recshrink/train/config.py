"""Training configuration."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass


def check_ks(v: tuple[int, ...]) -> tuple[int, ...]:
    """Validate metric cut-offs: positive, including 10 (models are compared by NDCG@10)."""
    if not v or min(v) < 1:
        raise ValueError("ks must be a non-empty list of positive integers")
    if 10 not in v:
        raise ValueError("ks must include 10 (early stopping and reports use NDCG@10)")
    return tuple(sorted(set(v)))


# Options added after runs were made, at the value that reproduces the earlier behaviour: left
# out of resume and manifest keys, so runs made before the option existed still resume.
LATER_DEFAULTS = {"kd_tail": "plain", "lr_decay": 1.0, "lr_patience": 2, "min_lr": 0.0,
                  "item_grad": "auto", "valid_users": None, "cache_search": "exact"}


def without_later_defaults(obj):
    """``obj`` (JSON-like, e.g. a recipe spec) without :data:`LATER_DEFAULTS` options at their
    default, at any depth (for resume and manifest keys)."""
    if isinstance(obj, dict):
        return {k: without_later_defaults(v) for k, v in obj.items()
                if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}  # fmt: skip
    if isinstance(obj, (list, tuple)):
        return [without_later_defaults(v) for v in obj]
    return obj


def plain(obj):
    """``obj`` as JSON-like data: configs (pydantic dataclasses and models) as dicts, at any
    depth."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    elif hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def config_json(obj) -> str:
    """Canonical JSON of a config (or JSON-like data holding configs), for resume, cache and
    manifest keys: sorted keys, :data:`LATER_DEFAULTS` options at their default left out."""
    return json.dumps(without_later_defaults(plain(obj)), sort_keys=True, default=str)


@dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    """How to train a model (validated on construction).

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Users per batch (each contributes every position of its sequence).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss: ``"ce"`` full softmax, ``"sampled"`` sampled softmax with shared negatives,
            ``"bce"`` binary cross-entropy with one negative per position.
        num_negatives: Shared negatives per batch for ``"sampled"``.
        negatives: ``"uniform"`` or ``"popularity"`` sampling (popularity applies logQ correction).
        patience: Stop after this many evaluations without a better validation NDCG@10.
        eval_every: Evaluate on validation every this many epochs.
        eval_batch_size: Users per scoring call in evaluation.
        grad_clip: Clip the gradient norm to this value (0 = off).
        seed: Random seed (weights, batches, negatives, dropout).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        threads: Torch CPU threads (None = torch's default).
        ks: Metric cut-offs.
        mask_history: Exclude history items when ranking.
        mask_scope: ``"full"``: mask every item before the target; ``"window"``: only the
            last ``max_len`` the model sees.
        ties: ``"pessimistic"`` (a tied target ranks behind its ties) or ``"expected"``.
        max_minutes: Wall-clock budget (None = none): checked after every training step (at
            epoch ends only in a multi-process run); the epoch it runs out in is validated on
            the steps it made, and the run stops.
        lr_decay: Multiply the learning rate by this after ``lr_patience`` evaluations in a row
            without a better validation NDCG@10 (reduce on plateau; 1 = constant rate). The
            count restarts after each decay; early stopping still counts from the best epoch.
        lr_patience: Evaluations without improvement before each decay.
        min_lr: No decay takes the learning rate below this (ReduceLROnPlateau's ``min_lr``).
        item_grad: The item table's gradients: ``"dense"`` (AdamW over every row),
            ``"sparse"`` (only the rows a batch touched, updated by SparseAdam) or ``"auto"``
            (sparse from 100,000 items where the loss allows it; see
            :mod:`recshrink.train.optim`).
        valid_users: Validate each epoch on a fixed random sample of this many validation users
            (drawn once from ``seed``; None = all of them). The sample picks the best epoch,
            stops early and decays the rate; the final validation and test reports rank every
            user. Full ranking over 1M items costs about 30 ms a user on a 2-core CPU.
    """

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["ce", "sampled", "bce"] = "sampled"
    num_negatives: int = Field(1024, ge=1)
    negatives: Literal["uniform", "popularity"] = "uniform"
    patience: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    grad_clip: float = Field(0.0, ge=0)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    ks: tuple[int, ...] = (5, 10, 20)
    mask_history: bool = True
    mask_scope: Literal["full", "window"] = "full"
    ties: Literal["pessimistic", "expected"] = "pessimistic"
    max_minutes: float | None = Field(None, gt=0)
    lr_decay: float = Field(1.0, gt=0, le=1)
    lr_patience: int = Field(2, ge=1)
    min_lr: float = Field(0.0, ge=0)
    item_grad: Literal["auto", "dense", "sparse"] = "auto"
    valid_users: int | None = Field(None, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {v!r}")
        return v

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_ks(v)
