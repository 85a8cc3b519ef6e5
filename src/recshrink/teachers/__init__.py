"""Teachers trained elsewhere, and every model file recshrink reads, through one door.

:func:`open_model` takes a recshrink model directory or ``.pt`` (native), or a checkpoint saved
by RecBole's own ``Trainer`` (detected from the file's contents, read without running it, and
converted to the native model with the same scores; :mod:`recshrink.teachers.recbole`).
:func:`open_teacher` also takes what can only be a teacher known by its scores
(:class:`~recshrink.teachers.protocol.ScoresTeacher`): an ONNX graph (run by ONNX Runtime), a
``torch.export`` program (``.pt2``), or a RecBole checkpoint of another sequential model (run by
RecBole's own code, :mod:`recshrink.teachers.recbole_code`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from recshrink.errors import RecshrinkError
from recshrink.export.artifacts import sidecar_path
from recshrink.models.base import SeqRecModel
from recshrink.models.io import ModelMeta, load_model
from recshrink.teachers.onnx import teacher_from_onnx
from recshrink.teachers.program import teacher_from_program
from recshrink.teachers.protocol import ScoresTeacher, item_order, remapped
from recshrink.teachers.checkpoint import read_checkpoint
from recshrink.teachers.recbole import from_recbole, reorder_items
from recshrink.teachers.recbole_code import needs_recbole_code, teacher_from_recbole_code

_RECBOLE_MARK = b"recbole.config.configurator"


def is_recbole_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a ``torch.save`` file whose pickle holds RecBole's Config (read as
    bytes from the archive; nothing is unpickled)."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
        return bool(pkl) and _RECBOLE_MARK in z.read(pkl[0])


def open_model(path: str | Path) -> tuple[SeqRecModel, ModelMeta]:
    """Load any model recshrink reads: native (model directory, ``.pt``) or a RecBole
    checkpoint (SASRec and GRU4Rec become native models; their item indices are RecBole's, which
    recshrink's RecBole loader reproduces: ids in order of first appearance in the ``.inter``
    file).

    Raises:
        RecshrinkError: A missing or unreadable file, a refused pickle, an unsupported model.
    """
    if is_recbole_checkpoint(path):
        return _converted(path, read_checkpoint(path))
    return load_model(path)


def _converted(path: str | Path, obj) -> tuple[SeqRecModel, ModelMeta]:
    """A read RecBole checkpoint of SASRec or GRU4Rec as a native model, with its metadata."""
    model, info = from_recbole(obj)
    meta = ModelMeta(arch=model.arch, builder_args=dict(model.builder_args),
                     num_items=model.num_items, item_ids=[], data_fingerprint="", steps=[],
                     extra={"imported_from": str(path), "recbole": info})  # fmt: skip
    return model, meta


def foreign_item_ids(path: str | Path) -> list[str] | None:
    """The raw id of each of a foreign graph's items, in its index order, from the sidecar
    ``<name>.items.json`` beside it (a JSON list, or ``{"item_ids": [...]}`` as recshrink writes
    it); None without one.

    Raises:
        RecshrinkError: A sidecar that is not such a list.
    """
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecshrinkError(f"{side}: not valid JSON: {exc}") from None
    ids = data.get("item_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not ids:
        raise RecshrinkError(f"{side}: expected a list of raw item ids (or {{\"item_ids\": [...]}})")
    return [str(x) for x in ids]


def open_teacher(path: str | Path, num_items: int | None = None,
                 item_ids: list | None = None,
                 ) -> tuple[SeqRecModel | ScoresTeacher, ModelMeta | None]:  # fmt: skip
    """Any teacher file: an ONNX graph (:func:`~recshrink.teachers.onnx.teacher_from_onnx`,
    names and padding inferred) or a ``torch.export`` program
    (:func:`~recshrink.teachers.program.teacher_from_program`) as a scores-only teacher, else
    :func:`open_model` (a native model, or a RecBole checkpoint converted to one).

    A foreign teacher's item indices (a RecBole checkpoint's too) are the data's unless a
    sidecar ``<name>.items.json`` lists the raw id of each of its items in index order
    (:func:`foreign_item_ids`); it is then translated to the data's ids (a converted RecBole
    model's item table reordered). Without one, a RecBole model's indices are RecBole's: the
    data's when it is read from the same ``.inter`` file.

    Args:
        path: The file or model directory.
        num_items: The data's catalogue size (a foreign graph's, where its metadata lacks it).
        item_ids: The data's raw item ids (to apply a foreign graph's sidecar).

    Returns:
        ``(teacher, meta)``; ``meta`` is None for a scores-only teacher.

    Raises:
        RecshrinkError: An unreadable or refused file, or an id list that does not match the
            data (one line naming it).
    """
    suffix = Path(path).suffix.lower()
    if item_ids is not None:
        num_items = num_items or len(item_ids)
    theirs = foreign_item_ids(path) if item_ids is not None else None
    order = item_order(theirs, list(item_ids), str(sidecar_path(path))) if theirs else None
    if is_recbole_checkpoint(path):
        obj = read_checkpoint(path)  # once
        if needs_recbole_code(obj):
            if num_items is None:
                raise RecshrinkError(f"{path}: give the data's catalogue size (num_items)")
            teacher = teacher_from_recbole_code(path, num_items, obj)
            return (remapped(teacher, order) if order else teacher), None
        model, meta = _converted(path, obj)
        if order:  # its item table's rows put in the data's order
            reorder_items(model, order)
        return model, meta
    if suffix not in (".onnx", ".pt2"):
        return open_model(path)
    opener = teacher_from_onnx if suffix == ".onnx" else teacher_from_program
    teacher = opener(path, num_items=num_items)
    return (remapped(teacher, order) if order else teacher), None


__all__ = ["foreign_item_ids", "is_recbole_checkpoint", "open_model", "open_teacher"]
