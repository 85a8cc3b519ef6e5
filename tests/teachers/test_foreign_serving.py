"""A foreign teacher (an ONNX graph recshrink did not export, a module from Python) evaluated,
benchmarked in its own runtime and distilled, from the API and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.export import Dim

import recshrink
from recshrink.export.backends import is_foreign, open_backend
from recshrink.teachers.protocol import teacher_from_module
from tests.cli_helpers import assert_user_error, invoke, tiny_sequences, write_s3rec

N, L = 20, 6  # tiny_sequences: 20 items


class RightPadded(nn.Module):
    """RecBole's calling convention: ``forward(item_seq, item_seq_len) -> [B, N]``, histories
    right-padded, the last item at ``item_seq_len - 1``."""

    def __init__(self, n: int, d: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(n + 1, d, padding_idx=0)
        self.mix = nn.Linear(d, d)

    def forward(self, seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        h = self.emb(seq)  # [B, L, D]
        idx = (lens - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
        last = h.gather(1, idx).squeeze(1)  # [B, D]
        mean = h.sum(1) / lens.clamp(min=1).unsqueeze(1).to(h.dtype)  # [B, D]
        return (self.mix(last) + 0.5 * mean) @ self.emb.weight[1:].T  # [B, N]


def _export(module: nn.Module, path):
    seq = torch.tensor([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    lens = torch.tensor([3, 6])
    batch = Dim("batch")
    torch.onnx.export(module.eval(), (seq, lens), str(path), dynamo=True,
                      input_names=["item_seq", "item_seq_len"], output_names=["logits"],
                      dynamic_shapes={"seq": {0: batch}, "lens": {0: batch}},
                      verbose=False)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    where = tmp_path_factory.mktemp("foreign")
    module = RightPadded(N)
    data_path = write_s3rec(where / "seqs.txt", tiny_sequences(items=N))
    return module, _export(module, where / "recbole_style.onnx"), data_path


def test_a_foreign_graph_is_served_in_its_own_runtime(foreign):
    module, path, _ = foreign
    assert is_foreign(path)
    runner = open_backend(path, num_items=N)
    assert (runner.name, runner.num_items, runner.max_len) == ("onnxruntime", N, L)
    assert runner.info["foreign"] and runner.fixed_len == L
    ref = teacher_from_module(module.eval(), N, L, padding="right", call="seq_len",
                              pad_column=False)  # fmt: skip
    seq = torch.tensor([[0, 0, 0, 4, 9, 2], [7, 1, 3, 8, 5, 6], [0, 0, 0, 0, 0, 11]])
    got = runner.scorer(seq)
    torch.testing.assert_close(got[:, 1:], ref.scores(seq)[:, 1:], atol=1e-5, rtol=1e-5)
    _, ids = runner.run(seq.numpy(), 5)
    want = ref.scores(seq).scatter(1, seq, float("-inf")).topk(5, dim=-1).indices
    assert (ids == want.numpy()).all()
    assert not set(ids[0]) & {4, 9, 2}  # the history is masked


def test_evaluate_and_benchmark_a_foreign_teacher(foreign):
    module, path, data_path = foreign
    data = recshrink.load_data(data_path)
    ref = teacher_from_module(module.eval(), N, L, padding="right", call="seq_len",
                              pad_column=False)  # fmt: skip
    through_ort = recshrink.evaluate(path, data)
    through_module = recshrink.evaluate(ref, data)
    for key in ("hr@10", "ndcg@10", "mrr", "count"):
        assert through_ort[key] == pytest.approx(through_module[key], abs=1e-6), key
    torch.manual_seed(1)
    student = recshrink.build_model("gru", N, dim=8, max_len=L).eval()
    rep = recshrink.benchmark({"teacher": path, "module": ref, "student": student}, data,
                              batches=(1, 4), budget_s=0.05)  # fmt: skip
    t, m = rep["models"]["teacher"], rep["models"]["module"]
    assert t["kind"] == "foreign-onnx" and list(t["latency_us"]["cpu"]) == ["onnxruntime"]
    assert m["kind"] == "module" and list(m["latency_us"]["cpu"]) == ["torch"]
    assert m["params"] == sum(p.numel() for p in module.parameters())
    assert t["metrics"]["ndcg@10"] == pytest.approx(through_ort["ndcg@10"], abs=1e-6)
    s = rep["models"]["student"]["vs_teacher"]
    assert s["teacher_backend@1"] == "onnxruntime" and s["teacher_label@1"] == "teacher"
    assert s["speedup_p50@1"] > 0


def test_cli_evaluates_and_distils_from_a_foreign_graph(foreign, tmp_path):
    module, path, data_path = foreign
    res = invoke("evaluate", "--model", path, "--data", data_path, "--max-len", L,
                 "--out", tmp_path / "m.json")  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "m.json").read_text())["metrics"]
    want = recshrink.evaluate(path, recshrink.load_data(data_path), max_len=L)
    assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-9) and got["count"] == 30
    res = invoke("evaluate", "--model", path, "--data", data_path, "--max-len", L,
                 "--no-mask-history", "--out", tmp_path / "u.json")  # RecBole's protocol
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "u.json").read_text())
    unmasked = recshrink.evaluate(path, recshrink.load_data(data_path), max_len=L,
                                  mask_history=False)  # fmt: skip
    assert got["metrics"]["ndcg@10"] == pytest.approx(unmasked["ndcg@10"], abs=1e-9)
    assert got["protocol"]["mask_history"] is False and unmasked["ndcg@10"] != want["ndcg@10"]
    out = tmp_path / "student"
    res = invoke("distill", "--teacher", path, "--student", "gru", "--arg", "dim=8",
                 "--data", data_path, "--max-len", L, "--epochs", "1", "--negatives", "8",
                 "--kd", "kd_tail=none", "--no-progress", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file()


def test_cli_refuses_bad_foreign_teachers_in_one_line(foreign, tmp_path):
    module, path, data_path = foreign
    other = write_s3rec(tmp_path / "other.txt", tiny_sequences(items=N + 5))
    for cmd, flag in (("evaluate", "--model"), ("distill", "--teacher")):
        out = tmp_path / f"{cmd}-out"
        extra = ("--out", out) if cmd == "distill" else ()
        assert_user_error(invoke(cmd, flag, path, "--data", other, "--max-len", L, *extra),
                          str(path), "25-item catalogue")  # fmt: skip
        assert not out.exists()
    bad = tmp_path / "topk.onnx"

    class TopOnly(RightPadded):
        def forward(self, seq, lens):
            return super().forward(seq, lens).topk(3, dim=-1).values  # [B, 3]: no catalogue

    _export(TopOnly(N), bad)
    assert_user_error(invoke("evaluate", "--model", bad, "--data", data_path, "--max-len", L),
                      str(bad), "no output scores")  # fmt: skip


def test_a_foreign_graph_on_its_own_item_indices_is_translated_by_its_id_sidecar(foreign, tmp_path):
    module, path, data_path = foreign
    data = recshrink.load_data(data_path)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(3)) + 1  # data i -> theirs
    shuffled = RightPadded(N)
    with torch.no_grad():
        shuffled.emb.weight[order] = module.emb.weight[1:]
        shuffled.mix.load_state_dict(module.mix.state_dict())
    f = _export(shuffled, tmp_path / "shuffled.onnx")
    theirs = [""] * N
    for i, j in enumerate(order.tolist()):
        theirs[j - 1] = data.item_ids[i]
    side = tmp_path / "shuffled.items.json"
    side.write_text(json.dumps(theirs))
    want = recshrink.evaluate(path, data)
    got = recshrink.evaluate(f, data)
    assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-6) and got["count"] == 30
    side.write_text(json.dumps({"item_ids": theirs}))  # recshrink's own sidecar layout
    assert recshrink.evaluate(f, data)["mrr"] == pytest.approx(want["mrr"], abs=1e-6)
    without = side.rename(tmp_path / "elsewhere.json")
    assert recshrink.evaluate(f, data)["ndcg@10"] != pytest.approx(want["ndcg@10"], abs=1e-6)
    side.write_text(json.dumps(theirs[:-1] + ["not-an-item"]))
    res = invoke("evaluate", "--model", f, "--data", data_path)
    assert_user_error(res, "shuffled.items.json", "1 of the data's item ids are not in the model's")
    assert without.is_file()
