"""A ``torch.export`` program saved with ``torch.export.save`` as a teacher: any architecture.

``torch.export.load`` can run code from the file: it unpickles some payloads (``use_pickle``
weights and constants, legacy ``.pt`` state, custom objects), unpickles the sample inputs in
full when the weights-only reader refuses them, and gives every symbolic shape (``expr_str``)
to ``sympy.sympify``, which evaluates it as Python. The archive is read as a zip first and
refused if any of these is in it; the graph's guards (Python source too) are never compiled.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from recshrink.errors import RecshrinkError
from recshrink.teachers.protocol import ScoresTeacher, teacher_from_module

_QUOTED = re.compile(r"'[\w.+\-]*'", re.ASCII)  # Symbol('s0', ...), Float('1.5', ...)
_CHARS = re.compile(r"[\w \t+\-*/%().,<>=!&|~]*", re.ASCII)  # ASCII: Python folds full-width names
_NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)  # even one glued to a number (2exec)
_WORDS = {"positive", "integer", "nonnegative", "real", "finite", "oo", "zoo", "nan", "e"}


def _plain(expr: object) -> bool:
    """Whether sympify can only build an expression from it: symbols (``s0``), numbers,
    operators and sympy's CamelCase constructors (no builtins, no dunders, no strings)."""
    s = _QUOTED.sub("0", expr) if isinstance(expr, str) else "?"
    return bool(_CHARS.fullmatch(s)) and all(
        w in _WORDS or re.fullmatch(r"[a-z]+\d+|[A-Z][A-Za-z]*", w) for w in _NAME.findall(s))


def _exprs(node: object) -> Iterator[object]:
    """Every ``expr_str`` in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from [v] if k == "expr_str" else _exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _exprs(v)


def is_export_program(path: str | Path) -> bool:
    """Whether ``path`` is an archive ``torch.export.save`` writes (not an AOTInductor package),
    from its file names alone."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n.split("/", 1)[-1] for n in z.namelist()]
    except (zipfile.BadZipFile, OSError):
        return False
    return ("archive_format" in names and any(n.startswith("models/") for n in names)
            and not any(n.startswith("data/aotinductor/") for n in names))  # fmt: skip


def _vet(p: Path) -> None:
    """Refuse an archive that is not a plain ``torch.export.save`` one (see the module doc)."""
    try:
        z = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError):
        raise RecshrinkError(f"{p}: not a torch.export archive (not a zip file)") from None
    with z:
        parts = [n.split("/", 1) for n in z.namelist()]
        names = {q[1] for q in parts if len(q) == 2}
        if any(n.startswith("data/aotinductor/") for n in names):
            raise RecshrinkError(f"{p}: an AOTInductor package is compiled code (not loaded); "
                                 "save the teacher with torch.export.save instead")
        roots = {q[0] for q in parts}
        if len(roots) != 1 or any(len(q) < 2 for q in parts) or "archive_format" not in names:
            raise RecshrinkError(f"{p}: not a torch.export.save archive (an older format or "
                                 "another zip; save it again with torch.export.save)")  # fmt: skip
        root = roots.pop()

        def read(name: str) -> bytes:
            return z.read(f"{root}/{name}")

        models = [n[7:-5] for n in names if n.startswith("models/") and n.endswith(".json")]
        if read("archive_format") != b"pt2" or "model" not in models:
            raise RecshrinkError(f"{p}: not a torch.export.save archive (no pt2 program 'model')")
        for m in models:
            if {f"data/weights/{m}.pt", f"data/constants/{m}.pt"} & names:
                raise RecshrinkError(f"{p}: refused to load: its legacy weights are pickled; save "
                                     "it again with torch.export.save")  # fmt: skip
            try:
                for kind in ("weights", "constants"):
                    config = json.loads(read(f"data/{kind}/{m}_{kind}_config.json"))["config"]
                    pickled = [k for k, v in config.items() if v["use_pickle"]
                               or not v["path_name"].startswith(("weight_", "tensor_"))]  # fmt: skip
                    if pickled:
                        raise RecshrinkError(f"{p}: refused to load: {pickled[0]} is stored as a "
                                             "pickle (a tensor subclass or custom object); "
                                             "recshrink loads only plain tensors")  # fmt: skip
                bad = [e for e in _exprs(json.loads(read(f"models/{m}.json"))) if not _plain(e)]
                inputs = read(f"data/sample_inputs/{m}.pt")
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise RecshrinkError(f"{p}: not a readable torch.export archive: "
                                     f"{type(exc).__name__}: {str(exc)[:120]}") from None  # fmt: skip
            if bad:
                raise RecshrinkError(f"{p}: refused to load: a symbolic shape is not a plain "
                                     f"expression ({str(bad[0])[:60]!r}); sympy would run it")  # fmt: skip
            try:  # torch.export.load would retry a refused one with weights_only=False
                if inputs:
                    torch.load(io.BytesIO(inputs), map_location="cpu", weights_only=True)
            except Exception:
                raise RecshrinkError(f"{p}: refused to load: its sample inputs are not plain "
                                     "tensors (they need code to unpickle)") from None  # fmt: skip


def teacher_from_program(
    path: str | Path,
    *,
    num_items: int | None = None,
    max_len: int | None = None,
    padding: Literal["left", "right"] | None = None,
    id_offset: int = 0,
) -> ScoresTeacher:
    """A program saved with ``torch.export.save`` that maps histories to catalogue scores.

    The call is inferred from its inputs: histories ``[B, L]`` alone, or with lengths ``[B]``
    (RecBole's ``forward(item_seq, item_seq_len)``). Its first output is the scores, ``[B, N]``
    or ``[B, N + 1]`` with a padding column. It must be exported with a dynamic batch dimension
    (``dynamic_shapes={"seq": {0: torch.export.Dim("batch")}}``), in eval mode: the graph runs
    as exported (``train()``/``eval()`` change nothing).

    Args:
        path: The ``.pt2`` file.
        num_items: Catalogue size N (required; the output gives N or N + 1).
        max_len: History length; default: the program's static ``L``.
        padding: ``"left"`` (recshrink's) or ``"right"`` (RecBole's) histories; default: right
            for the ``(histories, lengths)`` call, else left.
        id_offset: Added to every non-padding item id before the call.

    Raises:
        RecshrinkError: A missing, unsafe (would unpickle or run code), AOTInductor or unloadable
            archive; inputs or outputs that do not fit, or sizes it cannot infer (one line).
    """
    p = Path(path)
    if not p.is_file():
        raise RecshrinkError(f"{p}: no such torch.export program file")
    _vet(p)
    try:
        ep = torch.export.load(p)
    except Exception as exc:  # torch's own message: an archive it cannot deserialize
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RecshrinkError(f"{p}: torch.export.load failed: {type(exc).__name__}: "
                             f"{first[:160]}") from None  # fmt: skip
    nodes = {n.name: n for n in ep.graph.nodes}
    ins = [nodes[n].meta.get("val") for n in ep.graph_signature.user_inputs]
    fits = [isinstance(v, torch.Tensor) and v.dim() == 2 - i and not v.is_floating_point()
            for i, v in enumerate(ins)]  # fmt: skip
    if len(ins) not in (1, 2) or not all(fits):
        shapes = ", ".join(str(tuple(getattr(v, "shape", ()))) for v in ins)
        raise RecshrinkError(f"{p}: takes {len(ins)} input{'s' * (len(ins) != 1)} ({shapes}); "
                             "expected integer histories [B, L], optionally lengths [B]")
    batch, length = ins[0].shape
    if isinstance(batch, int):
        raise RecshrinkError(f"{p}: its batch dimension is fixed at {batch}; export it with a "
                             "dynamic one (dynamic_shapes: {0: torch.export.Dim('batch')} for "
                             "each input)")  # fmt: skip
    static_len = length if isinstance(length, int) else None
    if max_len and static_len and max_len != static_len:
        raise RecshrinkError(f"{p}: reads histories of length {static_len}, not max_len={max_len}")
    max_len = max_len or static_len
    if max_len is None:
        raise RecshrinkError(f"{p}: give max_len= (the history length is dynamic)")
    outs = ep.graph_signature.user_outputs
    out = nodes[outs[0]].meta.get("val") if outs and outs[0] in nodes else None
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and isinstance(out.shape[1], int)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RecshrinkError(f"{p}: its first output is {shape}; expected scores [B, N] or "
                             "[B, N + 1] over the catalogue")  # fmt: skip
    cols = out.shape[1]
    if num_items is None:
        raise RecshrinkError(f"{p}: give num_items= (its scores have {cols} columns: N = {cols}, "
                             f"or {cols - 1} with a padding column)")  # fmt: skip
    if cols not in (num_items, num_items + 1):
        raise RecshrinkError(f"{p}: scores {cols} columns, but the catalogue has {num_items:,} "
                             f"items (expected {num_items}, or {num_items + 1} with padding)")
    gm = ep.module(check_guards=False)  # guards would be compiled from the file's source text
    gm.train = lambda mode=True: gm  # the graph is fixed as exported; eval() is a no-op
    dtypes = [v.dtype for v in ins]

    def run(seq: torch.Tensor, seq_len: torch.Tensor | None = None) -> torch.Tensor:
        args = (seq,) if seq_len is None else (seq, seq_len)
        return gm(*(a.to(t) for a, t in zip(args, dtypes)))

    call = "seq" if len(ins) == 1 else "seq_len"
    padding = padding or ("left" if call == "seq" else "right")
    try:
        teacher = teacher_from_module(run, num_items, max_len, padding=padding, call=call,
                                      id_offset=id_offset, pad_column=cols == num_items + 1)
    except RecshrinkError as exc:  # the probe failed: say which file
        raise RecshrinkError(f"{p}: {str(exc).removeprefix('teacher module: ')}") from None
    teacher.module = gm  # its parameters identify the teacher (digest)
    teacher.arch = f"pt2:{p.name}"
    return teacher


__all__ = ["is_export_program", "teacher_from_program"]
