"""An ONNX graph as a teacher, run by ONNX Runtime: any architecture's serving export."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from recshrink.errors import RecshrinkError
from recshrink.export.onnx import onnx_metadata, ort_session
from recshrink.teachers.protocol import ScoresTeacher, teacher_from_module


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) else None


def teacher_from_onnx(
    path: str | Path,
    *,
    num_items: int | None = None,
    max_len: int | None = None,
    padding: Literal["left", "right"] | None = None,
    input: str | None = None,
    lengths: str | None = None,
    output: str | None = None,
    id_offset: int = 0,
    threads: int | None = None,
) -> ScoresTeacher:
    """An ONNX graph that maps histories to scores over the catalogue, as a teacher.

    Input and output names are inferred where unambiguous: the integer input of rank 2 is the
    histories (a second integer input of rank 1, the lengths, means RecBole's ``(item_seq,
    item_seq_len)`` call); the output is the float output of rank 2 whose last dimension is the
    catalogue (``N`` or ``N + 1`` with a padding column). recshrink's own exports say ``num_items``
    and ``max_len`` in their metadata. ``padding`` defaults to ``"right"`` for a graph that takes
    lengths (RecBole's convention: the last item at ``seq_len - 1``), else ``"left"``.

    Raises:
        RecshrinkError: An unreadable graph, no usable or several candidate inputs/outputs
            (named), or sizes it cannot infer (one line).
    """
    p = Path(path)
    if not p.is_file():
        raise RecshrinkError(f"{p}: no such ONNX file")
    try:
        sess = ort_session(p, threads)
    except Exception as exc:  # ORT's own message: an invalid graph
        raise RecshrinkError(f"{p}: not a loadable ONNX graph: {str(exc)[:160]}") from None
    meta = onnx_metadata(p)
    num_items = num_items or (int(meta["num_items"]) if "num_items" in meta else None)
    ints = [i for i in sess.get_inputs() if "int" in i.type]
    seqs = [i for i in ints if len(i.shape) == 2]
    lens = [i for i in ints if len(i.shape) == 1]
    seq_in = next((i for i in sess.get_inputs() if i.name == input), None) if input else (
        seqs[0] if len(seqs) == 1 else None)
    if seq_in is None:
        names = ", ".join(i.name for i in sess.get_inputs())
        raise RecshrinkError(f"{p}: which input holds the histories? (inputs: {names}; give input=)")
    len_name = lengths or (lens[0].name if len(lens) == 1 else None)
    max_len = max_len or (int(meta["max_len"]) if "max_len" in meta else _static(seq_in.shape[1]))
    if num_items is None or max_len is None:
        raise RecshrinkError(f"{p}: give num_items= and max_len= (not in the graph's metadata "
                             "or shapes)")  # fmt: skip
    outs = [o for o in sess.get_outputs() if "float" in o.type and len(o.shape) == 2
            and _static(o.shape[1]) in (num_items, num_items + 1)]  # fmt: skip
    out = next((o for o in sess.get_outputs() if o.name == output), None) if output else (
        outs[0] if len(outs) == 1 else None)
    if out is None:
        names = ", ".join(f"{o.name} {o.type} {o.shape}" for o in sess.get_outputs())
        what = "several outputs score" if len(outs) > 1 else "no output scores"
        raise RecshrinkError(f"{p}: {what} the {num_items:,}-item catalogue (outputs: {names}; "
                             "give output=)")  # fmt: skip
    dtype = np.int32 if "int32" in seq_in.type else np.int64

    def run(seq: torch.Tensor, seq_len: torch.Tensor | None = None) -> torch.Tensor:
        feed = {seq_in.name: seq.numpy().astype(dtype)}
        if seq_len is not None:
            feed[len_name] = seq_len.numpy().astype(dtype)
        return torch.from_numpy(sess.run([out.name], feed)[0])

    pad_column = _static(out.shape[1]) == num_items + 1
    padding = padding or ("right" if len_name else "left")
    teacher = teacher_from_module(run, num_items, max_len, padding=padding,
                                  call="seq_len" if len_name else "seq", id_offset=id_offset,
                                  pad_column=pad_column)  # fmt: skip
    teacher.arch, teacher.runtime = f"onnx:{p.name}", "onnxruntime"
    return teacher


__all__ = ["teacher_from_onnx"]
