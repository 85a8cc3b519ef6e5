"""What a model artifact is, and the files that sit beside it.

Kinds (:func:`artifact_kind`, the one suffix dispatch): ``.onnx`` -> ``"onnx"``,
``.engine``/``.plan`` -> ``"engine"`` (TensorRT), ``.pt2`` -> ``"pt2"`` (AOTInductor), a
directory holding ``retrieval.json`` -> ``"retrieval"`` (user encoder plus item index,
:mod:`recshrink.export.retrieval`), anything else (a model directory, ``.pt``) ->
``"checkpoint"``.

Sidecars: ``<name>.items.json`` holds the raw item ids and the most popular items of an
exported artifact (:func:`write_sidecar`, :func:`read_id_map`); ``<name>.meta.json`` holds
the metadata of an engine or AOTInductor package (:func:`meta_path`, :func:`read_meta`;
ONNX files carry theirs inside).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from recshrink.errors import RecshrinkError
from recshrink.fsutil import atomic_write_text

KINDS = ("onnx", "engine", "pt2", "retrieval", "checkpoint")
RETRIEVAL_MANIFEST = "retrieval.json"  # marks a retrieval artifact directory
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin")  # besides model directories


def artifact_kind(path: str | Path) -> str:
    """``"onnx"``, ``"engine"``, ``"pt2"``, ``"retrieval"`` or ``"checkpoint"``, from the file
    suffix (a retrieval artifact: the directory's manifest)."""
    if (Path(path) / RETRIEVAL_MANIFEST).is_file():
        return "retrieval"
    s = Path(path).suffix.lower()
    if s == ".onnx":
        return "onnx"
    if s in (".engine", ".plan"):
        return "engine"
    if s == ".pt2":
        return "pt2"
    return "checkpoint"


def sidecar_path(artifact: str | Path) -> Path:
    """``model.onnx`` -> ``model.items.json``."""
    p = Path(artifact)
    return p.with_name(p.stem + ".items.json")


def meta_path(artifact: str | Path) -> Path:
    """``model.engine`` -> ``model.meta.json``."""
    p = Path(artifact)
    return p.with_name(p.stem + ".meta.json")


def read_meta(artifact: str | Path) -> dict:
    """The ``<name>.meta.json`` written next to an engine or AOTInductor package.

    Raises:
        RecshrinkError: The file is missing or not a JSON object.
    """
    p = meta_path(artifact)
    if not p.is_file():
        raise RecshrinkError(f"{p}: missing (the build writes it next to {Path(artifact).name})")
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecshrinkError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise RecshrinkError(f"{p}: expected a JSON object")
    return meta


def id_map_fingerprint(item_ids: Sequence[str]) -> str:
    """A short hash of the raw-id order (stored in exported metadata)."""
    return hashlib.sha256("\n".join(map(str, item_ids)).encode()).hexdigest()[:16]


def write_sidecar(artifact: str | Path, item_ids: Sequence[str], popular: Sequence[int]) -> Path:
    """Write the raw item ids and the most popular model ids next to an exported artifact."""
    path = sidecar_path(artifact)
    atomic_write_text(path, json.dumps({"item_ids": [str(x) for x in item_ids],
                                        "popular": [int(x) for x in popular],
                                        "fingerprint": id_map_fingerprint(item_ids)}) + "\n")  # fmt: skip
    return path


def read_id_map(artifact: str | Path, fingerprint: str | None = None) -> tuple[list, list]:
    """``(item_ids, popular)`` from the sidecar of an exported artifact (empty lists if none).

    Args:
        artifact: The exported file.
        fingerprint: The artifact's recorded ``id_map_fingerprint``; a sidecar of another id
            map is refused.

    Raises:
        RecshrinkError: The sidecar is unreadable or belongs to another id map.
    """
    side = sidecar_path(artifact)
    item_ids, popular = [], []
    if side.is_file():
        try:
            data = json.loads(side.read_text())
            item_ids, popular = data.get("item_ids", []), data.get("popular", [])
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise RecshrinkError(f"{side}: not a valid id map: {exc}") from None
    if item_ids and fingerprint and fingerprint != id_map_fingerprint(item_ids):
        raise RecshrinkError(f"{side}: id map does not match the model it sits beside")
    return item_ids, popular
