"""An honest yardstick end to end: a model with constant scores and a model with NaN scores never
beat chance (HR@10 <= 10 / N under pessimistic ties), and the NaN rows are flagged, through
``recshrink evaluate``, through an ONNX export evaluated by the benchmark (full-score and
top-K-only graphs), and through ``recommend`` (Python and CLI).

Data: synthetic, 120 users over N = 50 items, written as an S3-Rec file and read back (the
CLI's view of it). Models: a ``gru_small`` with every weight 0 (every score 0) or NaN.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_helpers import invoke
from recshrink.benchmark.run import run_benchmark
from recshrink.data.loaders import load_s3rec
from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.export.onnx import (
    OnnxExportConfig, export_onnx, graph_length, onnx_scorer, ort_session, scores_from_topk,
    trim_for_graph,
)  # fmt: skip
from recshrink.export.runtime import Predictor, write_sidecar
from recshrink.metrics import rank_scores, ranking_metrics
from recshrink.models import build_model
from recshrink.models.io import save_model
from recshrink.train.evaluate import evaluate

MAX_LEN = 10
USERS = 120
KINDS = ("constant", "nan")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The data file, the data as the CLI reads it, its split and the two saved models."""
    tmp = tmp_path_factory.mktemp("honest")
    syn = synthetic(SyntheticConfig(users=USERS, items=50, categories=5, min_len=5, max_len=12))
    path = tmp / "data.txt"
    path.write_text("".join(f"{u} {' '.join(syn.item_ids[i - 1] for i in seq)}\n"
                            for u, seq in zip(syn.user_ids, syn.sequences)))  # fmt: skip
    ds = load_s3rec(path)
    assert ds.num_items == 50 and ds.num_users == USERS
    split = leave_one_out(ds, MAX_LEN)
    assert len(split.test.targets) == USERS
    models, dirs = {}, {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build_model("gru_small", ds.num_items, max_len=MAX_LEN).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.0 if kind == "constant" else float("nan"))
        models[kind] = model
        dirs[kind] = save_model(model, tmp / kind, item_ids=ds.item_ids)
    return {"tmp": tmp, "path": path, "ds": ds, "split": split, "models": models, "dirs": dirs}


@pytest.fixture(scope="module")
def onnx_files(world):
    """``(kind, full_scores) -> .onnx`` (exported once each, with the id-map sidecar)."""
    cache: dict = {}

    def get(kind: str, full: bool):
        if (kind, full) not in cache:
            name = f"{kind}-{'full' if full else 'top'}.onnx"
            p = export_onnx(world["models"][kind], world["tmp"] / name,
                            OnnxExportConfig(full_scores=full))  # fmt: skip
            write_sidecar(p, world["ds"].item_ids, [])
            cache[(kind, full)] = p
        return cache[(kind, full)]

    return get


def chance(world) -> float:
    return 10 / world["ds"].num_items


def constant_ranks(es, num_items: int) -> np.ndarray:
    """Pessimistic rank of every target under constant scores, by hand: a target in the history
    is masked (rank N); otherwise it ties with every other unmasked item (N - |seen| - 1)."""
    out = []
    for tgt, seen in zip(es.targets, es.seen):
        s = set(int(x) for x in seen)
        out.append(num_items if int(tgt) in s else num_items - len(s) - 1)
    return np.array(out)


# --------------------------------------------------------------------------------------------
# the top-K fill, by hand
# --------------------------------------------------------------------------------------------


def test_scores_from_topk_fills_with_the_lowest_returned_score():
    top = np.array([[3.0, 1.0], [2.0, np.nan]], dtype=np.float32)
    ids = np.array([[2, 4], [1, 3]])
    full = scores_from_topk(top, ids, 5)
    inf = float("-inf")
    np.testing.assert_array_equal(full[0].numpy(), [inf, 1.0, 3.0, 1.0, 1.0, 1.0])
    assert full[1, 0] == inf and full[1, 1] == 2.0 and torch.isnan(full[1, 2:]).all()
    ranked = rank_scores(full, torch.tensor([4, 1]), None)
    # item 4 scored 1.0 (the lowest returned): behind item 2 and the 3 unreturned items 1, 3, 5
    assert ranked.ranks.tolist() == [4, 5] and ranked.nonfinite.tolist() == [False, True]
    assert rank_scores(full, torch.tensor([2, 1]), None).ranks.tolist() == [0, 5]
    with pytest.raises(ValueError, match="both be"):
        scores_from_topk(top, ids[:, :1], 5)


# --------------------------------------------------------------------------------------------
# recshrink evaluate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_cli_evaluate_is_at_or_below_chance_and_flags_nan_rows(world, kind):
    out = world["tmp"] / f"eval-{kind}.json"
    result = invoke("evaluate", "--model", world["dirs"][kind], "--data", world["path"],
                    "--max-len", MAX_LEN, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())["metrics"]
    n = world["ds"].num_items
    assert m["count"] == USERS
    assert m["hr@10"] <= chance(world) and m["hr@10"] == 0.0 and m["hr@20"] == 0.0
    assert "hr@10=0.0000" in result.stdout
    warning = f"warning: {USERS} of {USERS} users had NaN or infinite scores (counted as misses)"
    if kind == "nan":
        assert m["nonfinite_users"] == USERS
        assert m["mrr"] == pytest.approx(1 / (n + 1))  # every row a miss at rank N
        assert warning in result.stderr
    else:
        assert m["nonfinite_users"] == 0 and "NaN" not in result.stderr
        # the CLI's split (max_len 10) has the same users and full histories as ours
        want = ranking_metrics(constant_ranks(world["split"].test, n))["mrr"]
        assert m["mrr"] == pytest.approx(want)


# --------------------------------------------------------------------------------------------
# an ONNX export evaluated by the benchmark
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full", [True, False], ids=["all_scores", "topk_only"])
@pytest.mark.parametrize("kind", KINDS)
def test_benchmark_of_an_onnx_export_is_honest(world, onnx_files, kind, full):
    path = onnx_files(kind, full)
    report = run_benchmark([("m.onnx", path)], world["ds"], world["split"],
                           backends=("onnxruntime",), batches=(1,), budget_s=0.05)  # fmt: skip
    m = report["models"]["m.onnx"]["metrics"]
    n = world["ds"].num_items
    assert report["models"]["m.onnx"]["quality_backend"] == "onnxruntime"
    assert m["count"] == USERS and m["hr@10"] <= chance(world) and m["hr@10"] == 0.0
    if kind == "nan":  # NaN stays in the returned top-K scores too, so the row is flagged
        assert m["nonfinite_users"] == USERS
        assert m["mrr"] == pytest.approx(1 / (n + 1), abs=1e-6)
    else:
        assert m["nonfinite_users"] == 0
        # top-K-only: the unreturned items take the returned (constant) score, so the ranks are
        # those of the full scores, exactly
        want = ranking_metrics(constant_ranks(world["split"].test, n))["mrr"]
        assert m["mrr"] == pytest.approx(want, abs=1e-6)


def test_topk_only_graph_would_credit_a_constant_model_with_the_old_fill(world, onnx_files):
    """The teeth of the fill: giving unreturned items -inf (the old fill) credits every target
    among the 10 items a constant graph happened to return; the honest fill credits none."""
    path = onnx_files("constant", False)
    es = world["split"].test
    hist = torch.from_numpy(es.histories)
    targets = torch.from_numpy(es.targets)
    honest = onnx_scorer(path)(hist)  # [U, N+1]
    seq = trim_for_graph(es.histories, graph_length(path))
    top, ids = ort_session(path).run(["scores", "ids"], {"seq": seq})
    old = torch.full_like(honest, float("-inf"))
    old.scatter_(1, torch.from_numpy(ids), torch.from_numpy(top))
    in_top = (torch.from_numpy(ids) == targets.unsqueeze(1)).any(1)  # [U]
    old_hr = float((rank_scores(old, targets, hist).ranks < 10).double().mean())
    assert int(in_top.sum()) > 0 and old_hr == pytest.approx(float(in_top.double().mean()))
    assert old_hr > 0.0
    assert float((rank_scores(honest, targets, hist).ranks < 10).double().mean()) == 0.0
    # through evaluate (full-history masking), the same
    assert evaluate(onnx_scorer(path), es)["hr@10"] == 0.0


# --------------------------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------------------------


def raw_histories(world) -> list[list[int]]:
    ids = world["ds"].item_ids
    return [[int(ids[i - 1]) for i in h if i] for h in world["split"].test.histories]


def hr10_through_recommend(world, rec) -> tuple[float, int]:
    """HR@10 from what ``recommend`` returned (k = 11): the returned scores go into a score
    matrix (unreturned items at the row's lowest returned score; a row with no answer all NaN)
    ranked by :func:`rank_scores`. Returns ``(hr@10, flagged rows)``."""
    ds, es = world["ds"], world["split"].test
    index = {raw: i + 1 for i, raw in enumerate(ds.item_ids)}
    n, k = ds.num_items, rec.scores.shape[1]
    top = np.asarray(rec.scores, dtype=np.float32).copy()
    ids = np.ones((len(rec.ids), k), dtype=np.int64)
    for r, row in enumerate(rec.ids):
        if row:
            ids[r] = [index[str(x)] for x in row]
        else:
            top[r] = np.nan  # no answer
    full = scores_from_topk(top, ids, n)
    ranked = rank_scores(full, torch.from_numpy(es.targets), torch.from_numpy(es.histories))
    return float((ranked.ranks < 10).double().mean()), int(ranked.nonfinite.sum())


@pytest.mark.parametrize("artifact", ["dir", "onnx"])
@pytest.mark.parametrize("kind", KINDS)
def test_recommend_is_at_or_below_chance_and_flags_nan_rows(world, onnx_files, kind, artifact):
    # an .onnx export answers k = 11 > its graph K = 10 from all_scores
    path = world["dirs"][kind] if artifact == "dir" else onnx_files(kind, True)
    rec = Predictor.load(path).recommend(raw_histories(world), k=11)
    hr, flagged = hr10_through_recommend(world, rec)
    assert hr <= chance(world) and hr == 0.0
    if kind == "nan":
        assert rec.nonfinite == USERS and flagged == USERS
        assert all(row == [] for row in rec.ids)  # no fake answer
    else:
        assert rec.nonfinite == 0 and flagged == 0
        assert all(len(row) == 11 for row in rec.ids)
        assert np.all(rec.scores == 0.0)


def test_recommend_flags_nan_through_a_topk_only_graph(world, onnx_files):
    rec = Predictor.load(onnx_files("nan", False)).recommend(raw_histories(world)[:7], k=10)
    assert rec.nonfinite == 7 and rec.ids == [[]] * 7
    # an empty history is answered by popularity (NaN scores by design), never flagged
    rec = Predictor.load(onnx_files("nan", False)).recommend([[], raw_histories(world)[0]], k=3)
    assert rec.empty == 1 and rec.nonfinite == 1 and len(rec.ids[0]) == 3 and rec.ids[1] == []


@pytest.mark.parametrize("kind", KINDS)
def test_cli_recommend_warns_on_nan_rows(world, kind):
    hists = [" ".join(map(str, h)) for h in raw_histories(world)[:3]]
    result = invoke("recommend", "--model", world["dirs"][kind],
                    *[a for h in hists for a in ("--history", h)])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(ln) for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 3
    warning = "warning: 3 of 3 histories had NaN or infinite scores (no items returned)"
    if kind == "nan":
        assert all(ln["items"] == [] for ln in lines) and warning in result.stderr
    else:
        assert all(len(ln["items"]) == 10 for ln in lines) and "warning" not in result.stderr
