"""ONNX export with top-K inside the graph, metadata, and validation against PyTorch.

The exported graph takes ``seq [batch, seq_len]`` int64 (left-padded item ids) and returns
``scores [batch, K]`` float32 and ``ids [batch, K]`` int64 (best first), optionally followed by
``all_scores [batch, N + 1]``. Batch and sequence length are dynamic (sequence length from 2 to
the model's ``max_len``); the input dims are checked after export because the exporter silently
pins them in known cases.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from recshrink.version import __version__
from recshrink.data.split import trim_padding
from recshrink.errors import RecshrinkError
from recshrink.export.fresh import run_job
from recshrink.fsutil import atomic_path
from recshrink.compare import topk_overlap
from recshrink.models.base import SeqRecModel
from recshrink.models.io import load_model, save_model
from recshrink.models.quantized import structure_steps


FOLD_LIMIT = 1024  # largest constant (elements) the exporter may fold into a new initializer


@dataclass(frozen=True)
class OnnxExportConfig:
    """How to export (validated on construction).

    Attributes:
        k: Items returned per user by the graph.
        mask_history: Exclude the history's own items from the top-K inside the graph.
        full_scores: Also output the scores of every item.
        opset: ONNX opset (>= 17).
        min_agreement: Fail the export when top-10 agreement with PyTorch is below this.
        validate_users: Test histories used for validation (0 = skip validation).
        slim: Simplify the graph with ``onnxslim`` (``pip install 'recshrink[slim]'``) after
            the export's own optimisation; metadata, dynamic dims and INT8 weights are kept.
        head: ``"topk"`` (the serving head: scores over the catalogue, history masking and
            top-K inside the graph) or ``"user"`` (the user encoder alone: histories -> user
            vectors ``[B, D]``, output ``user``, no catalogue inside; for retrieval artifacts).
    """

    k: int = 10
    mask_history: bool = True
    full_scores: bool = False
    opset: int = 18
    min_agreement: float = 0.99
    validate_users: int = 2000
    slim: bool = False
    head: str = "topk"

    def __post_init__(self) -> None:
        if self.head not in ("topk", "user"):
            raise ValueError(f"head must be 'topk' or 'user', got {self.head!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.opset < 17:
            raise ValueError(f"opset must be >= 17, got {self.opset}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if self.validate_users < 0:
            raise ValueError("validate_users must be >= 0")


class ServingHead(nn.Module):
    """The model plus in-graph history masking and top-K: what a server runs.

    Args:
        model: Any :class:`SeqRecModel`.
        k: Items per user.
        mask_history: Set the scores of the history's items to ``-inf`` before the top-K.
        full_scores: Also return all scores.
    """

    def __init__(self, model: SeqRecModel, k: int, mask_history: bool = True,
                 full_scores: bool = False) -> None:  # fmt: skip
        super().__init__()
        if not 1 <= k <= model.num_items:
            raise ValueError(f"k must be in 1..{model.num_items}, got {k}")
        self.model = model
        self.k = k
        self.mask_history = mask_history
        self.full_scores = full_scores

    def forward(self, seq: torch.Tensor):
        scores = self.model.scores(seq)  # [B, N+1]
        ranked = scores.scatter(1, seq, float("-inf")) if self.mask_history else scores
        top, ids = torch.topk(ranked, self.k, dim=-1)  # [B, K], [B, K]
        if self.full_scores:
            return top, ids, scores
        return top, ids


class UserHead(nn.Module):
    """The user encoder alone: histories ``[B, L]`` -> user vectors ``[B, D]`` (what a
    retrieval artifact serves; the item index scores them)."""

    def __init__(self, model: SeqRecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.model.encode(seq)  # [B, D]


def _input_dims(model_proto) -> list:
    return [d.dim_param or d.dim_value for d in model_proto.graph.input[0].type.tensor_type.shape.dim]


def _export_in_fresh_process(model: SeqRecModel, path: Path, cfg: OnnxExportConfig,
                              metadata: dict | None) -> Path:  # fmt: skip
    """Run the export in a fresh process (:mod:`recshrink.export.fresh`)."""
    with tempfile.TemporaryDirectory(prefix="recshrink-export-") as tmp:
        save_model(model, Path(tmp) / "model", steps=structure_steps(model))
        job = {"model": str(Path(tmp) / "model"), "path": str(path),
               "config": asdict(cfg), "metadata": metadata or {}}  # fmt: skip
        message = run_job("recshrink.export.onnx:_export_job", job, Path(tmp))
    if message:
        raise RecshrinkError(message if message.startswith("ONNX export")
                             else f"ONNX export of {model.arch} failed: {message}")  # fmt: skip
    return path


def _export_job(job: dict) -> None:
    model, _ = load_model(job["model"])
    export_onnx(model, job["path"], OnnxExportConfig(**job["config"]), job["metadata"],
                fresh_process=False)  # fmt: skip


def export_onnx(
    model: SeqRecModel,
    path: str | Path,
    config: OnnxExportConfig | None = None,
    metadata: dict | None = None,
    fresh_process: bool | None = None,
) -> Path:
    """Export ``model`` with its serving head to a single ``.onnx`` file (written atomically).

    Args:
        model: The model (exported in eval mode on CPU).
        path: Output file.
        config: Export settings.
        metadata: Extra ``metadata_props`` (values JSON-encoded unless strings).
        fresh_process: Export in a fresh process (forked by a server that has imported torch
            and the exporter once and never exports, :mod:`recshrink.export.fresh`). Default: for GRU/LSTM,
            because within one process only the first dynamo export of an RNN keeps a
            dynamic sequence length.

    Raises:
        RecshrinkError: The exporter failed or pinned a dynamic input dimension.
    """
    import onnx

    cfg = config or OnnxExportConfig()
    if fresh_process is None:
        fresh_process = model.arch in ("gru", "lstm")
    if fresh_process:
        return _export_in_fresh_process(model, Path(path), cfg, metadata)
    model = model.eval().cpu()
    if cfg.head == "user":
        head, outputs = UserHead(model), ["user"]
    else:
        head = ServingHead(model, min(cfg.k, model.num_items), cfg.mask_history, cfg.full_scores)
        outputs = ["scores", "ids"] + (["all_scores"] if cfg.full_scores else [])
    max_len = max(model.max_len, 3)
    example = torch.randint(1, model.num_items + 1, (3, max_len))
    example[0, : max_len // 2] = 0
    out = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                head, (example,), dynamo=True, opset_version=cfg.opset,
                input_names=["seq"], output_names=outputs,
                dynamic_shapes={"seq": {0: Dim("batch"), 1: Dim("seq_len", min=2, max=max_len)}},
                verbose=False, optimize=False,
            )  # fmt: skip
            # the exporter's default optimization folds constants up to 512 x 512 elements: an
            # item table under that size would be stored again transposed (fp32), and a
            # quantized table dequantized back to fp32. Fold only small constants.
            import onnxscript

            onnxscript.optimizer.optimize(prog.model, input_size_limit=FOLD_LIMIT,
                                          output_size_limit=FOLD_LIMIT)
    except Exception as exc:  # the exporter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecshrinkError(f"ONNX export of {model.arch} failed: {first[:300]}") from None
    with atomic_path(out) as tmp:
        prog.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        dims = _input_dims(proto)
        fixed_len = None
        if (model.arch in ("gru", "lstm") and len(dims) == 2 and not isinstance(dims[0], int)
                and dims[1] == max_len):  # fmt: skip
            # some exporter versions (torch 2.11) pin an RNN's length even in a fresh process:
            # keep the graph at max_len (scores do not depend on left padding) and record it,
            # so every consumer left-pads to it
            fixed_len = max_len
        elif any(isinstance(d, int) and d > 0 for d in dims):
            raise RecshrinkError(
                f"ONNX export of {model.arch} pinned the input to {dims}; expected dynamic "
                "[batch, seq_len] (export in a fresh process)"
            )
        meta = {
            "recshrink_version": __version__, "arch": model.arch,
            "num_items": str(model.num_items), "max_len": str(model.max_len), "padding_id": "0",
            **({"k": str(head.k), "mask_history": str(cfg.mask_history).lower()}
               if cfg.head == "topk" else {"dim": str(model.dim)}),
            "outputs": ",".join(outputs),
            **({"fixed_len": str(fixed_len)} if fixed_len else {}),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
        }  # fmt: skip
        for node in proto.graph.node:  # the exporter's per-node debug records (~5% of a d64 file)
            del node.metadata_props[:]
        fuse_dequantize(proto)
        if cfg.slim:
            proto = _slim(proto)
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return out


def _slim(proto):
    try:
        import onnxslim
    except ImportError:
        raise RecshrinkError("ONNX simplification needs onnxslim: pip install 'recshrink[slim]'") from None
    try:
        return onnxslim.slim(proto)
    except Exception as exc:  # onnxslim raises many types
        raise RecshrinkError(f"onnxslim failed: {str(exc).strip().splitlines()[0][:200]}") from None


def fuse_dequantize(proto) -> int:
    """Rewrite ``Cast(int8 table) * scale[R, 1]`` into ``DequantizeLinear(table, scale[R], axis=0)``.

    The row-wise INT8 item table then reaches the network the way TensorRT accepts quantized
    weights (and ONNX Runtime dequantizes it in one kernel). Returns the number of rewrites.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    done = 0
    for cast in list(graph.node):
        if cast.op_type != "Cast" or cast.input[0] not in inits:
            continue
        codes = inits[cast.input[0]]
        users = consumers.get(cast.output[0], [])
        if codes.data_type != TensorProto.INT8 or len(codes.dims) != 2 or len(users) != 1:
            continue
        mul = users[0]
        if mul.op_type != "Mul":
            continue
        other = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
        scale = inits.get(other)
        if scale is None or list(scale.dims) != [codes.dims[0], 1]:
            continue
        flat = numpy_helper.from_array(numpy_helper.to_array(scale).reshape(-1),
                                       name=other + "_rows")  # fmt: skip
        graph.initializer.append(flat)
        dq = helper.make_node("DequantizeLinear", [codes.name, flat.name], [mul.output[0]],
                              name=f"{cast.name}_dequantize", axis=0)  # fmt: skip
        idx = list(graph.node).index(cast)
        graph.node.remove(cast)
        graph.node.remove(mul)
        graph.node.insert(idx, dq)
        if len(consumers.get(other, [])) == 1:
            graph.initializer.remove(scale)
        done += 1
    return done


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session (``threads`` intra-op threads, default ORT's).

    A graph whose only quantization is weight-only ``DequantizeLinear`` (the row-wise INT8 item
    table) gets ORT's QDQ handling turned off, so the table is dequantized once when the session
    is created (constant folding) instead of on every call; graphs with ``QuantizeLinear``
    (static QDQ) keep it, since that is what fuses them into integer kernels.
    """
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    if "DequantizeLinear" in ops and "QuantizeLinear" not in ops:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def validate_onnx(
    path: str | Path,
    model: SeqRecModel,
    histories: np.ndarray,
    k: int = 10,
    batch_size: int = 256,
    mask_history: bool = True,
) -> dict:
    """Compare the ONNX graph with PyTorch on real histories.

    Returns:
        ``{"agreement@10", "max_abs_diff", "mean_abs_diff", "users", "nonfinite"}``: top-K
        overlap of the ids and differences of the returned top-K scores. A user whose graph
        scores are NaN or infinite where PyTorch's are finite (or the other way round) counts in
        ``nonfinite`` and makes ``max_abs_diff`` infinite: it is a failure, never filtered out.
    """
    sess = ort_session(path)
    fixed = graph_length(path)
    head = ServingHead(model.eval().cpu(), min(k, model.num_items), mask_history)
    agree, max_diff, sum_diff, n, bad_rows = 0.0, 0.0, 0.0, 0, 0
    for i in range(0, len(histories), batch_size):
        h = trim_for_graph(histories[i : i + batch_size], fixed)  # the graph takes L >= 2
        o_scores, o_ids = sess.run(["scores", "ids"], {"seq": h.astype(np.int64)})
        with torch.inference_mode():
            t_scores, t_ids = head(torch.from_numpy(h))
        kk = min(k, o_ids.shape[1])
        agree += topk_overlap(torch.from_numpy(o_ids[:, :kk]), t_ids[:, :kk]) * len(h)
        o, t = o_scores[:, :kk], t_scores[:, :kk].numpy()
        # -inf on both sides (masked history, tiny catalogues) agrees; anything else non-finite
        # is a failure
        same_inf = np.isneginf(o) & np.isneginf(t)
        bad = ~(np.isfinite(o) & np.isfinite(t)) & ~same_inf  # [B, k]
        bad_rows += int(bad.any(axis=1).sum())
        diff = np.abs(np.where(same_inf, 0.0, o - t))
        if bad.any():
            max_diff = float("inf")
        elif diff.size:
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.mean()) * len(h)
        n += len(h)
    return {f"agreement@{k}": round(agree / max(1, n), 6), "max_abs_diff": max_diff,
            "mean_abs_diff": sum_diff / max(1, n), "users": n, "nonfinite": bad_rows}  # fmt: skip


def scores_from_topk(top, ids, num_items: int) -> torch.Tensor:
    """Full scores ``[B, N + 1]`` from a top-K list, for :func:`recshrink.metrics.rank_scores`.

    The returned items keep their scores; every item the list did not return gets the *lowest*
    returned score of its row (its true score is at most that), and column 0 (padding) ``-inf``.
    Under ``ties="pessimistic"`` a target tied with the lowest returned score then ranks behind
    every unreturned item, so a top-K list never makes a model look better than its full scores
    would (no rank comes out lower than the full scores give it): metrics at cut-offs below K
    are exact (as long as the evaluator masks none of the returned items), metrics at K (and the
    full MRR) are a lower bound; a target at the row's lowest returned score is a miss at K even
    when no unreturned item really ties with it. A NaN among
    the returned scores stays where it is (and spreads to the fill), so
    :func:`recshrink.metrics.nonfinite_rows` still flags the row.

    Args:
        top: ``[B, K]`` returned scores, best first (array or tensor).
        ids: ``[B, K]`` returned item ids in ``[1, N]``.
        num_items: N.

    Returns:
        Float32 ``[B, N + 1]`` on the CPU.
    """
    t = torch.as_tensor(np.asarray(top, dtype=np.float32))  # [B, K]
    i = torch.as_tensor(np.asarray(ids, dtype=np.int64))  # [B, K]
    if t.dim() != 2 or t.shape != i.shape:
        raise ValueError(f"top scores and ids must both be [B, K], got {tuple(t.shape)} and "
                         f"{tuple(i.shape)}")  # fmt: skip
    if t.shape[1] == 0:
        raise ValueError("a top-K list needs K >= 1")
    low = t.min(dim=1, keepdim=True).values  # [B, 1]; NaN if the row has one
    out = low.expand(t.shape[0], num_items + 1).clone()  # [B, N+1]
    out.scatter_(1, i, t)
    out[:, 0] = float("-inf")
    return out


def onnx_scorer(path: str | Path, threads: int | None = None, session=None):
    """A score function for :func:`recshrink.train.evaluate.evaluate` that runs the ONNX file.

    Uses the graph's ``all_scores`` output when it has one (exact full ranking). A top-K-only
    graph is turned into full scores by :func:`scores_from_topk`: every item the graph did not
    return gets the lowest returned score of its row, so under pessimistic ties metrics at
    cut-offs below the graph's K are exact and metrics at K are a lower bound (a constant-score
    model is not credited with the K items the graph happened to return). ``session`` reuses
    an open ONNX Runtime session of that file.
    """
    sess = session if session is not None else ort_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    meta = onnx_metadata(path)
    num_items = int(meta.get("num_items", "0"))
    fixed = fixed_len_of(meta)

    def score(hist: torch.Tensor) -> torch.Tensor:
        h = trim_for_graph(hist.numpy(), fixed)
        if "all_scores" in names:
            return torch.from_numpy(sess.run(["all_scores"], {"seq": h})[0])
        top, ids = sess.run(["scores", "ids"], {"seq": h})
        return scores_from_topk(top, ids, num_items)

    return score


def trim_for_graph(hist: np.ndarray, fixed_len: int | None = None) -> np.ndarray:
    """Histories as the exported graph takes them: int64, sequence length >= 2, or exactly
    ``fixed_len`` (left-padded with 0 or cut to the last items) for a fixed-length graph."""
    h = np.asarray(hist)
    if fixed_len:
        h = np.pad(h, ((0, 0), (max(0, fixed_len - h.shape[1]), 0)))[:, -fixed_len:]
    else:
        h = trim_padding(h, min_len=2)
    return np.ascontiguousarray(h.astype(np.int64))


def fixed_len_of(meta: dict) -> int | None:
    """The fixed input length recorded in an artifact's metadata (``fixed_len``), or None."""
    v = meta.get("fixed_len")
    return int(v) if v else None


def graph_length(path: str | Path) -> int | None:
    """The fixed input length of an exported graph, or None if its length is dynamic."""
    return fixed_len_of(onnx_metadata(path))
