"""``recshrink prune / quantize / export / recommend``: numbers on success, one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import TRAIN_ARGS, assert_user_error, invoke, tiny_sequences, write_s3rec
from recshrink.models.io import load_model


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_s3rec(tmp_path_factory.mktemp("data") / "tiny.txt", tiny_sequences(40, 24))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file) -> Path:
    out = tmp_path_factory.mktemp("train") / "gru"
    args = [a if a != "dim=8" else "dim=16" for a in TRAIN_ARGS]
    result = invoke("train", "--data", data_file, "--out", out, *args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, data_file) -> Path:
    out = tmp_path_factory.mktemp("exp") / "gru.onnx"
    result = invoke("export", "--model", trained, "--data", data_file, "--out", out, "-k", "5")
    assert result.exit_code == 0, result.output
    return out


def test_prune_cli_halves_the_hidden_size(tmp_path, trained, data_file):
    out = tmp_path / "pruned"
    result = invoke("prune", "--model", trained, "--data", data_file, "--out", out, "--ratio", "0.5",
                    "--importance", "magnitude", "--recover", "finetune", "--epochs", "1",
                    "--negatives", "8", "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    model, meta = load_model(out)
    assert model.rnn.hidden_size == 8 and model.proj.weight.shape == (16, 8)
    assert meta.steps[-1]["type"] == "prune" and meta.steps[-1]["ratio"] == 0.5
    report = json.loads((out / "report.json").read_text())
    parent_params = report["parent"]["params"]
    assert parent_params == 25 * 16 + 3 * (16 * 16 * 2 + 32)
    assert report["pruned"]["params"] == 25 * 16 + 3 * (16 * 8 + 8 * 8 + 16) + 16 * 8 + 16
    assert 0.0 <= report["pruned"]["agreement@10"] <= 1.0


def test_rowwise_quantize_cli(tmp_path, trained, data_file):
    out = tmp_path / "q8"
    result = invoke("quantize", "--model", trained, "--data", data_file, "--mode", "rowwise-int8",
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["quantized"]["steps"][-1]["mode"] == "rowwise-int8"
    assert report["quantized"]["agreement@10"] >= 0.9
    model, meta = load_model(out)
    assert model.item_emb.codes.dtype.is_signed and meta.steps[-1]["mode"] == "rowwise-int8"


def test_export_then_recommend(exported, trained, tmp_path):
    info = json.loads(exported.with_name("gru.export.json").read_text())
    assert info["export_agreement@10"] == 1.0 and info["trt_compatible"] is True
    result = invoke("recommend", "--model", exported, "--history", "101 108 115", "-k", "3")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.splitlines()[0])
    assert len(line["items"]) == 3 and not {101, 108, 115} & set(line["items"])
    same = invoke("recommend", "--model", trained, "--history", "101 108 115", "-k", "3")
    assert json.loads(same.stdout.splitlines()[0])["items"] == line["items"]


def test_quantize_onnx_cli(exported, data_file, tmp_path):
    out = tmp_path / "fp16.onnx"
    result = invoke("quantize", "--model", exported, "--data", data_file, "--mode", "fp16",
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    rep = json.loads(out.with_name("fp16.report.json").read_text())
    assert rep["step"] == {"type": "quantize", "mode": "fp16"}
    assert rep["size_ratio"] < 0.9 and rep["agreement@10"] >= 0.9  # tiny graph: overhead dominates
    assert out.with_name("fp16.items.json").is_file()


@pytest.mark.parametrize("args,needles", [
    (["recommend", "--model", "{exp}", "--history", "101 x", "-k", "3"], ["'x' is not an integer"]),
    (["recommend", "--model", "{exp}", "--history", "101", "-k", "0"], ["k must be in"]),
    (["recommend", "--model", "{exp}", "--history", "101", "-k", "999"], ["k must be in"]),
    (["recommend", "--model", "{exp}", "--history", "-4", "-k", "3"], ["non-negative"]),
    (["recommend", "--model", "{tmp}/none.onnx", "--history", "1"], ["no such"]),
    (["quantize", "--model", "{exp}", "--data", "{data}", "--mode", "dynamic", "--out", "{tmp}/x.txt"],
     [".onnx file"]),
    (["quantize", "--model", "{exp}", "--data", "{data}", "--mode", "rowwise-int8", "--out", "{tmp}/d"],
     ["model directory"]),
    (["prune", "--model", "{trained}", "--data", "{data}", "--out", "{tmp}/p", "--ratio", "1.5"],
     ["ratio"]),
    (["prune", "--model", "{trained}", "--data", "{data}", "--out", "{tmp}/p", "--layer", "rnn"],
     ["--layer", "KEY=VALUE"]),
    (["export", "--model", "{trained}", "--data", "{data}", "--out", "{tmp}/m.txt"], [".onnx"]),
    (["export", "--model", "{trained}", "--data", "{data}", "--format", "tensorrt",
      "--out", "{tmp}/m.engine"], ["exported .onnx"]),
])  # fmt: skip
def test_bad_input_is_one_line(args, needles, exported, trained, data_file, tmp_path):
    subst = {"{exp}": str(exported), "{trained}": str(trained), "{data}": str(data_file),
             "{tmp}": str(tmp_path)}  # fmt: skip
    real = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        real.append(a)
    assert_user_error(invoke(*real), *needles)
    assert not (tmp_path / "p").exists() and not (tmp_path / "d").exists()
