"""Checkpoints: safetensors weights plus JSON config. Nothing is ever unpickled with code.

A model directory holds ``config.json`` (architecture, builder arguments, data fingerprint,
recshrink version, the compression steps that made it), ``items.json`` (raw item ids: entry
``i - 1`` is the raw id of internal id ``i``) and ``model.safetensors``.
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recshrink.version import __version__
from recshrink.errors import RecshrinkError
from recshrink.fsutil import atomic_path, atomic_write_text
from recshrink.models import build_model
from recshrink.models.base import SeqRecModel
from recshrink.models.quantized import apply_structure

CONFIG = "config.json"
ITEMS = "items.json"
WEIGHTS = "model.safetensors"


@dataclass
class ModelMeta:
    """Everything a checkpoint says about its model besides the weights.

    Attributes:
        arch: Architecture name (a builder name).
        builder_args: Keyword arguments of the builder.
        num_items: Catalogue size N.
        item_ids: Raw item ids (may be empty for a bare ``.pt``).
        data_fingerprint: Fingerprint of the data the model was trained on.
        steps: Compression steps applied, oldest first.
        extra: Free-form fields (training summary, parent model, ...).
    """

    arch: str
    builder_args: dict
    num_items: int
    item_ids: list[str] = field(default_factory=list)
    data_fingerprint: str = ""
    steps: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _state_for_save(model: SeqRecModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model(
    model: SeqRecModel,
    out_dir: str | Path,
    *,
    item_ids: list[str] | None = None,
    data_fingerprint: str = "",
    steps: list[dict] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` into ``out_dir``, each file under a temporary name renamed into place.

    Returns:
        The model directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "format": "recshrink-model",
        "recshrink_version": __version__,
        "arch": model.arch,
        "num_items": model.num_items,
        "builder_args": dict(model.builder_args),
        "params": model.num_params(),
        "data_fingerprint": data_fingerprint,
        "steps": list(steps or []),
        "extra": dict(extra or {}),
    }
    # config.json goes last: a directory without it is not a model
    (out / CONFIG).unlink(missing_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(_state_for_save(model), str(tmp), metadata={"arch": model.arch})
    atomic_write_text(out / ITEMS, json.dumps(list(item_ids or [])) + "\n")
    atomic_write_text(out / CONFIG, json.dumps(cfg, indent=2, default=str) + "\n")
    return out


def _build(arch: str, num_items: int, builder_args: dict, where: str) -> SeqRecModel:
    try:
        return build_model(arch, num_items, **builder_args)
    except RecshrinkError as exc:
        raise RecshrinkError(f"{where}: {exc}") from None


def _load_state(model: SeqRecModel, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "unknown mismatch"
        raise RecshrinkError(f"{where}: weights do not match the config: {detail[:300]}") from None


def load_model(path: str | Path) -> tuple[SeqRecModel, ModelMeta]:
    """Load a model directory, or a ``.pt``/``.pth`` file through ``torch.load(weights_only=True)``.

    A ``.pt`` file must hold ``{"config": {"arch": ..., "num_items": ..., "builder_args": {...}},
    "state_dict": {...}}`` or a bare state dict with a ``config.json`` beside it. A file that would
    need unpickling arbitrary objects is refused.

    Raises:
        RecshrinkError: Missing/unreadable files, refused pickles, mismatched weights.
    """
    p = Path(path)
    if not p.exists():
        raise RecshrinkError(f"{p}: no such model file or directory")
    if p.is_dir():
        cfg_path, w_path = p / CONFIG, p / WEIGHTS
        if not cfg_path.is_file():
            raise RecshrinkError(f"{p}: not a model directory (no {CONFIG})")
        cfg = _read_config(cfg_path)
        if not w_path.is_file():
            raise RecshrinkError(f"{p}: no {WEIGHTS}")
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError) as exc:
            raise RecshrinkError(f"{w_path}: not a readable safetensors file: {exc}") from None
        items_path = p / ITEMS
        item_ids = []
        if items_path.is_file():
            try:
                item_ids = [str(x) for x in json.loads(items_path.read_text())]
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RecshrinkError(f"{items_path}: not valid JSON: {exc}") from None
    elif p.suffix in (".pt", ".pth", ".bin"):
        try:
            with warnings.catch_warnings():  # a refused pickle is reported as one line, below
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0]
            raise RecshrinkError(
                f"{p}: refused to load: the file needs code to unpickle ({first[:160]}); "
                "recshrink loads only tensors (save a state_dict, or use safetensors + JSON)"
            ) from None
        except Exception as exc:  # corrupt zip, truncated file, ...
            raise RecshrinkError(f"{p}: not a readable PyTorch file: {exc}") from None
        if isinstance(obj, dict) and "state_dict" in obj and "config" in obj:
            cfg, state = obj["config"], obj["state_dict"]
        elif isinstance(obj, dict) and (p.parent / CONFIG).is_file():
            cfg, state = _read_config(p.parent / CONFIG), obj
        else:
            raise RecshrinkError(
                f"{p}: a .pt file must hold {{'config': ..., 'state_dict': ...}} "
                f"or sit next to a {CONFIG}"
            )
        item_ids = [str(x) for x in cfg.get("item_ids", [])] if isinstance(cfg, dict) else []
    else:
        raise RecshrinkError(f"{p}: unknown model format (expected a model directory or .pt)")
    if not isinstance(cfg, dict) or "arch" not in cfg or "num_items" not in cfg:
        raise RecshrinkError(f"{p}: model config needs 'arch' and 'num_items'")
    args = cfg.get("builder_args", {})
    if not isinstance(args, dict):
        raise RecshrinkError(f"{p}: model config 'builder_args' must be a mapping")
    try:
        num_items = int(cfg["num_items"])
    except (TypeError, ValueError):
        raise RecshrinkError(f"{p}: model config 'num_items' must be an integer") from None
    args = dict(args)
    model = _build(str(cfg["arch"]), num_items, args, str(p))
    steps = cfg.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(x, dict) for x in steps):
        raise RecshrinkError(f"{p}: model config 'steps' must be a list of mappings")
    if steps:
        apply_structure(model, steps)
    _load_state(model, state, str(p))
    model.eval()
    meta = ModelMeta(
        arch=str(cfg["arch"]),
        builder_args=args,
        num_items=num_items,
        item_ids=item_ids,
        data_fingerprint=str(cfg.get("data_fingerprint", "")),
        steps=steps,
        extra=dict(cfg.get("extra", {})),
    )
    return model, meta


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecshrinkError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise RecshrinkError(f"{path}: expected a JSON object")
    return cfg


def artifact_bytes(path: str | Path) -> int:
    """Size on disk of a file, or of a model directory's model files (config, id map, weights;
    not its training state or reports), or of all files in another directory."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if (p / WEIGHTS).is_file():
        return sum((p / f).stat().st_size for f in (CONFIG, ITEMS, WEIGHTS) if (p / f).is_file())
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
