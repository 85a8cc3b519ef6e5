"""Retrieval artifacts: a user encoder (ONNX) plus a FAISS item index, served by backend ann."""

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from cli_helpers import assert_user_error, invoke  # noqa: E402
from recshrink.benchmark.run import run_benchmark  # noqa: E402
from recshrink.data.split import leave_one_out  # noqa: E402
from recshrink.data.synthetic import SyntheticConfig, synthetic  # noqa: E402
from recshrink.errors import RecshrinkError  # noqa: E402
from recshrink.export.onnx import ServingHead  # noqa: E402
from recshrink.export.retrieval import (  # noqa: E402
    INDEX, MANIFEST, AnnSearcher, RetrievalConfig, export_retrieval, index_recall,
)  # fmt: skip
from recshrink.export.runtime import Predictor  # noqa: E402
from recshrink.models import build_model  # noqa: E402
from recshrink.models.io import save_model  # noqa: E402
from recshrink.train.evaluate import evaluate, model_scorer  # noqa: E402

N = 300
RAW = [str(5000 + 3 * i) for i in range(N)]


def raw(ids):
    return [int(RAW[i - 1]) for i in ids]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ann")
    data = synthetic(SyntheticConfig(users=150, items=N, categories=6, min_len=5, max_len=12))
    split = leave_one_out(data, 10)
    torch.manual_seed(0)
    model = build_model("sasrec", N, dim=16, heads=2, layers=1, max_len=10).eval()
    kw = dict(histories=split.valid.histories, item_ids=RAW, popular=[3, 1, 2], steps=[])
    info = {idx: export_retrieval(model, tmp / idx, config=RetrievalConfig(index=idx), **kw)
            for idx in ("flat", "hnsw")}  # fmt: skip
    return model, data, split, tmp, info


def test_flat_index_serves_the_exact_top_k_and_hnsw_nearly(built):
    model, _, split, tmp, info = built
    h = split.test.histories[:60]
    with torch.inference_mode():  # the exact serving head, history items excluded
        ref = ServingHead(model, 10)(torch.from_numpy(h))[1].tolist()
    histories = [raw([i for i in r if i]) for r in h]
    flat = Predictor.load(tmp / "flat", threads=1)
    assert flat.backend_name == "ann"
    rec = flat.recommend(histories, k=10)
    assert rec.ids == [raw(r) for r in ref]  # same items in the same order
    assert all(not set(r) & set(hh) for r, hh in zip(rec.ids, histories))
    got = Predictor.load(tmp / "hnsw", threads=1).recommend(histories, k=10).ids
    overlap = np.mean([len(set(a) & set(raw(b))) / 10 for a, b in zip(got, ref)])
    assert overlap >= 0.98
    assert info["flat"]["recall@10"] == 1.0 and info["flat"]["encoder_agreement@10"] == 1.0
    assert info["flat"]["index"] == "Flat,fp32"
    assert info["hnsw"]["index"] == "HNSW32,fp32 (efSearch 64)"
    # the recorded recall is the index's, recomputed on the same validation users
    ann = AnnSearcher(tmp / "hnsw", threads=1)
    with torch.no_grad():
        users = model.encode(torch.from_numpy(split.valid.histories)).numpy()
        items = model.item_table()[1:].numpy()
    assert info["hnsw"]["recall@10"] == pytest.approx(index_recall(ann.index, users, items, 10),
                                                      abs=1e-6)  # fmt: skip
    man = json.loads((tmp / "hnsw" / MANIFEST).read_text())
    assert man["num_items"] == N and man["dim"] == 16 and man["metric"] == "inner_product"
    assert man["bytes"]["index"] == (tmp / "hnsw" / INDEX).stat().st_size


def test_quality_through_the_index_goes_through_the_ranking_helper(built):
    model, data, split, tmp, _ = built
    exact = evaluate(model_scorer(model), split.test, data.item_attrs)
    flat = evaluate(AnnSearcher(tmp / "flat", threads=1).score, split.test, data.item_attrs)
    for key in ("ndcg@10", "hr@10", "ndcg@20", "f1@10", "ndcg@5"):  # cut-offs <= QUALITY_K: exact
        assert flat[key] == pytest.approx(exact[key], abs=1e-6), key
    assert flat["mrr"] <= exact["mrr"] + 1e-9  # past the fetched items: a lower bound
    # an item the index does not return ranks after every returned one: a model whose target
    # is never returned scores 0 (ties count against it)
    ann = AnnSearcher(tmp / "flat", threads=1)
    hist = torch.from_numpy(split.test.histories[:8])
    s = ann.score(hist)  # [B, N+1]
    top, ids = ann.search(hist.numpy(), 5)
    unreturned = np.ones(N + 1, bool)
    unreturned[ids[0]] = False
    unreturned[0] = False
    assert s[0, unreturned].max() <= s[0, ids[0]].min()


def test_benchmark_times_and_scores_the_ann_artifact(built, tmp_path):
    model, data, split, tmp, _ = built
    save_model(model, tmp_path / "m", item_ids=RAW)
    rep = run_benchmark([("exact", tmp_path / "m"), ("ann", tmp / "flat")], data, split,
                        batches=(1, 8), budget_s=0.05, threads=1, progress=False)  # fmt: skip
    e = rep["models"]["ann"]
    assert e["kind"] == "retrieval" and set(e["latency_us"]["cpu"]) == {"ann"}
    assert e["backend_info"]["ann"]["index"] == "Flat,fp32"
    assert e["metrics"]["ndcg@10"] == pytest.approx(rep["models"]["exact"]["metrics"]["ndcg@10"],
                                                    abs=1e-6)  # fmt: skip
    assert e["bytes"] == sum((tmp / "flat" / f).stat().st_size for f in ("encoder.onnx", INDEX))


def test_defaults_by_catalogue_size():
    small = RetrievalConfig().resolve(12_101, 64)
    assert (small.index, small.codes, small.ef_search, small.hnsw_m) == ("hnsw", "fp32", 64, 32)
    assert RetrievalConfig().resolve(1_000_000, 64).ef_search == 128
    big = RetrievalConfig().resolve(5_000_000, 64)
    assert (big.index, big.codes, big.nlist, big.pq_m, big.nprobe) == ("ivfpq", "pq", 8944, 32, 139)
    assert big.spec() == "IVF8944,PQ32x8 (nprobe 139)"
    with pytest.raises(ValueError, match="index must be one of"):
        RetrievalConfig(index="annoy")
    with pytest.raises(ValueError, match="ef_search must be a positive integer"):
        RetrievalConfig(ef_search=0)
    with pytest.raises(ValueError, match="codes 'pq' go with index 'ivfpq'"):
        RetrievalConfig(index="hnsw", codes="pq")


def test_bad_artifacts_are_one_line(built, tmp_path):
    model, data, split, tmp, _ = built
    # an index of another catalogue beside this encoder
    torch.manual_seed(1)
    other = build_model("sasrec", N, dim=16, heads=2, layers=1, max_len=10).eval()
    export_retrieval(other, tmp_path / "other", histories=split.valid.histories[:20],
                     item_ids=RAW, popular=[], steps=[], config=RetrievalConfig(index="flat"))  # fmt: skip
    swapped = tmp_path / "swapped"
    shutil.copytree(tmp / "flat", swapped)
    shutil.copy(tmp_path / "other" / INDEX, swapped / INDEX)
    with pytest.raises(RecshrinkError, match="not the index built with this encoder"):
        Predictor.load(swapped)
    man = json.loads((tmp_path / "other" / MANIFEST).read_text())
    shutil.copy(tmp / "flat" / "encoder.onnx", tmp_path / "other" / "encoder.onnx")
    with pytest.raises(RecshrinkError, match="the encoder was exported for catalogue"):
        Predictor.load(tmp_path / "other")
    assert man["catalogue_fingerprint"] != json.loads((tmp / "flat" / MANIFEST).read_text())[
        "catalogue_fingerprint"]  # fmt: skip
    (swapped / INDEX).unlink()
    with pytest.raises(RecshrinkError, match="items.faiss: missing"):
        Predictor.load(swapped)
    # k outside the catalogue, and more than an IVF index probing one list returns
    with pytest.raises(ValueError, match=f"k must be in 1..{N}"):
        Predictor.load(tmp / "flat").recommend([[RAW[0]]], k=N + 1)
    export_retrieval(model, tmp_path / "ivf", histories=split.valid.histories[:20], item_ids=RAW,
                     popular=[], steps=[], config=RetrievalConfig(
                         index="ivfpq", nlist=30, nprobe=1, pq_m=4, pq_bits=4, min_recall=0.0))  # fmt: skip
    with pytest.raises(ValueError, match="more than the index returns"):
        Predictor.load(tmp_path / "ivf").recommend([[RAW[0]]], k=200)
    # the recall gate leaves nothing behind
    with pytest.raises(RecshrinkError, match="below min_recall"):
        export_retrieval(model, tmp_path / "gated", histories=split.valid.histories[:20],
                         item_ids=RAW, popular=[], steps=[], config=RetrievalConfig(
                             index="ivfpq", nlist=30, nprobe=1, pq_m=4, pq_bits=4))  # fmt: skip
    assert not any(p.name.startswith((".gated", "gated")) for p in tmp_path.iterdir())


def test_cli_export_and_errors(tmp_path):
    from cli_helpers import tiny_sequences, write_s3rec

    from recshrink.api import load_data

    data_file = write_s3rec(tmp_path / "d.txt", tiny_sequences(users=40, items=30))
    ds = load_data(data_file)
    torch.manual_seed(0)
    model = build_model("sasrec", ds.num_items, dim=8, heads=1, layers=1, max_len=8)
    save_model(model, tmp_path / "m", item_ids=ds.item_ids)
    res = invoke("export", "--model", tmp_path / "m", "--data", data_file, "--max-len", 8,
                 "--retrieval", "ann", "--index", "flat", "--out", tmp_path / "a")  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["format"] == "retrieval" and info["recall@10"] == 1.0
    assert json.loads((tmp_path / "a.export.json").read_text())["index"] == "Flat,fp32"
    rec = Predictor.load(tmp_path / "a").recommend([["101", "104"]], k=3)
    assert len(rec.ids[0]) == 3 and not {101, 104} & set(rec.ids[0])
    assert_user_error(invoke("export", "--model", tmp_path / "m", "--data", data_file,
                             "--retrieval", "ann", "--index-arg", "ef=3", "--out", tmp_path / "b"),
                      "--index-arg", "ef")  # fmt: skip
    assert not (tmp_path / "b").exists()
    (tmp_path / "a" / INDEX).unlink()
    assert_user_error(invoke("evaluate", "--model", tmp_path / "a", "--data", data_file),
                      "items.faiss: missing")  # fmt: skip
