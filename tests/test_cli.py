"""The ``recshrink`` command line: user errors are one ``error:`` line with exit code 2.

Every test is tiny (30 users, a GRU of dimension 8 trained for one epoch).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import TRAIN_ARGS, assert_user_error, invoke, tiny_sequences, write_s3rec
from recshrink.models.io import load_model

RECSHRINK = Path(sys.executable).with_name("recshrink")


# --------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------


def assert_process_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECSHRINK_DEBUG", None)
    return subprocess.run([str(RECSHRINK), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def seqs() -> dict[str, list[str]]:
    return tiny_sequences()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, seqs) -> Path:
    return write_s3rec(tmp_path_factory.mktemp("data") / "tiny.txt", seqs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file) -> Path:
    out = tmp_path_factory.mktemp("train") / "gru"
    result = invoke("train", "--data", data_file, "--out", out, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------------------------
# positive paths with exact numbers
# --------------------------------------------------------------------------------------------


def test_data_stats_exact_counts(data_file, seqs):
    result = invoke("data", "stats", "--data", data_file)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["users"] == 30
    assert stats["items"] == len({i for s in seqs.values() for i in s}) == 20
    assert stats["interactions"] == sum(len(s) for s in seqs.values()) == 165
    assert stats["seq_len_max"] == 7
    assert stats["has_attributes"] is False
    assert len(stats["fingerprint"]) == 16


def test_train_writes_model_and_report(trained, data_file, seqs):
    assert {"config.json", "model.safetensors", "report.json"} <= {
        p.name for p in trained.iterdir()
    }
    assert not list(trained.glob(".*tmp*"))  # no temporary leftovers
    report = json.loads((trained / "report.json").read_text())
    entry = report["models"]["gru"]
    ndcg = entry["metrics"]["ndcg@10"]
    assert isinstance(ndcg, float) and 0.0 <= ndcg <= 1.0
    n = 20
    d = 8
    expected = (n + 1) * d + 3 * (d * d + d * d + d + d)  # embedding + one GRU layer
    assert expected == 600
    assert entry["params"] == expected
    model, meta = load_model(trained)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert meta.num_items == n and meta.arch == "gru"
    assert report["dataset"]["users"] == 30
    assert report["dataset"]["interactions"] == 165
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["num_items"] == n and cfg["builder_args"]["dim"] == d


def test_evaluate_trained_model(trained, data_file, tmp_path):
    out = tmp_path / "metrics.json"
    result = invoke("evaluate", "--model", trained, "--data", data_file, "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["metrics"]
    assert 0.0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1.0
    assert metrics["count"] == 30


def test_evaluate_against_a_reference(trained, data_file, tmp_path):
    # a model against itself: retention 1 with a zero-width interval, numbers match evaluate
    out = tmp_path / "metrics.json"
    result = invoke("evaluate", "--model", trained, "--data", data_file, "--against", trained,
                    "--resamples", "200", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    cmp = report["against"]["ndcg@10"]
    assert cmp["model"] == cmp["reference"] == pytest.approx(report["metrics"]["ndcg@10"])
    assert cmp["ratio"] == cmp["ratio_low"] == cmp["ratio_high"] == 1.0
    assert cmp["users"] == 30 and cmp["resamples"] == 200
    assert report["against"]["hr@10"]["model"] == pytest.approx(report["metrics"]["hr@10"])
    assert "retention 1.000 (95% CI 1.000-1.000" in result.output


# --------------------------------------------------------------------------------------------
# data errors
# --------------------------------------------------------------------------------------------


def test_missing_data_file(tmp_path):
    missing = tmp_path / "nope.txt"
    assert_user_error(invoke("data", "stats", "--data", missing), "nope.txt", "no such file")


def test_directory_as_data_file(tmp_path):
    assert_user_error(invoke("data", "stats", "--data", tmp_path, "--format", "s3rec"),
                      str(tmp_path), "directory")  # fmt: skip


def test_non_integer_item_id_names_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("1 2 3\n2 4 x5 6\n")
    assert_user_error(invoke("data", "stats", "--data", f), "bad.txt:2:", "'x5'", "not an integer")


def test_negative_item_id(tmp_path):
    f = tmp_path / "neg.txt"
    f.write_text("1 2 3\n\n3 4 -7\n")  # blank line 2 still counts
    assert_user_error(invoke("data", "stats", "--data", f), "neg.txt:3:", "'-7'", "negative")


def test_user_with_no_items(tmp_path):
    f = tmp_path / "lonely.txt"
    f.write_text("1 2 3\n2 3 4\n42\n")
    assert_user_error(invoke("data", "stats", "--data", f), "lonely.txt:3:", "'42'", "no items")


def test_malformed_attributes_json(tmp_path, data_file):
    attrs = tmp_path / "attrs.json"
    attrs.write_text('{"101": [1, 2],\n "102": [3,,]}\n')
    result = invoke("data", "stats", "--data", data_file, "--attributes", attrs)
    assert_user_error(result, "attrs.json:2:", "invalid JSON")


def test_recbole_header_without_item_id(tmp_path):
    f = tmp_path / "x.inter"
    f.write_text("user_id:token\titem:token\ttimestamp:float\n1\t2\t3\n")
    assert_user_error(invoke("data", "stats", "--data", f), "x.inter:1:", "'item_id'")


def test_empty_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n\n")
    assert_user_error(invoke("data", "stats", "--data", f), "empty.txt", "no interactions")


def test_kcore_leaves_nothing(data_file):
    assert_user_error(invoke("data", "stats", "--data", data_file, "--kcore", "1000"),
                      "tiny.txt", "k=1000")  # fmt: skip


def test_bad_csv_columns(data_file):
    assert_user_error(invoke("data", "stats", "--data", data_file, "--csv-columns", "user"),
                      "--csv-columns")  # fmt: skip


# --------------------------------------------------------------------------------------------
# train errors (nothing is written)
# --------------------------------------------------------------------------------------------


def test_train_bad_data_writes_nothing(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("1 2 3\n2 a\n")
    out = tmp_path / "model"
    assert_user_error(invoke("train", "--data", f, "--out", out, *TRAIN_ARGS), "bad.txt:2:")
    assert not out.exists()


def test_train_unknown_model_lists_allowed(tmp_path, data_file):
    out = tmp_path / "model"
    args = [a if a != "gru" else "grux" for a in TRAIN_ARGS]
    line = assert_user_error(invoke("train", "--data", data_file, "--out", out, *args),
                             "'grux'", "allowed")  # fmt: skip
    assert "gru" in line.split("allowed", 1)[1] and "sasrec" in line
    assert not out.exists()


def test_train_bad_builder_argument(tmp_path, data_file):
    out = tmp_path / "model"
    result = invoke("train", "--data", data_file, "--out", out, *TRAIN_ARGS, "--arg", "dim=0")
    assert_user_error(result, "dim", "gru")
    assert not out.exists()


def test_train_arg_without_equals(tmp_path, data_file):
    out = tmp_path / "model"
    result = invoke("train", "--data", data_file, "--out", out, *TRAIN_ARGS, "--arg", "dim")
    assert_user_error(result, "--arg", "'dim'", "KEY=VALUE")
    assert not out.exists()


def test_train_out_is_a_file(tmp_path, data_file):
    out = tmp_path / "taken"
    out.write_text("keep me\n")
    assert_user_error(invoke("train", "--data", data_file, "--out", out, *TRAIN_ARGS), "taken")
    assert out.read_text() == "keep me\n"
    nested = out / "model"
    assert_user_error(invoke("train", "--data", data_file, "--out", nested, *TRAIN_ARGS), "taken")


# --------------------------------------------------------------------------------------------
# evaluate errors
# --------------------------------------------------------------------------------------------


def test_evaluate_item_count_mismatch(trained, tmp_path, seqs):
    other = dict(seqs)
    other["99"] = ["201", "202", "203"]  # three new items: 23 instead of 20
    f = write_s3rec(tmp_path / "other.txt", other)
    out = tmp_path / "metrics.json"
    result = invoke("evaluate", "--model", trained, "--data", f, "--out", out)
    assert_user_error(result, str(trained), "20 items", "23")
    assert not out.exists()


def test_evaluate_missing_model_dir(tmp_path, data_file):
    missing = tmp_path / "no_model"
    assert_user_error(invoke("evaluate", "--model", missing, "--data", data_file), "no_model")


def test_evaluate_refuses_code_pickle(tmp_path, data_file):
    marker = tmp_path / "MARKER"
    control = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(Evil(control)))  # the payload really runs code when unpickled
    assert control.exists()
    evil = tmp_path / "evil.pt"
    torch.save({"config": {"arch": "gru", "num_items": 20}, "state_dict": Evil(marker)}, evil)
    result = invoke("evaluate", "--model", evil, "--data", data_file)
    assert_user_error(result, "evil.pt", "refused")
    assert not marker.exists()


def test_evaluate_corrupt_config(tmp_path, trained, data_file):
    bad = tmp_path / "bad_model"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes())
    (bad / "config.json").write_text('{"arch": "gru",\n "num_items": 20,,}\n')
    result = invoke("evaluate", "--model", bad, "--data", data_file)
    assert_user_error(result, "config.json", "not valid JSON")


def test_evaluate_junk_pt(tmp_path, data_file):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint\n")
    assert_user_error(invoke("evaluate", "--model", junk, "--data", data_file), "junk.pt")


def test_evaluate_out_is_a_directory(tmp_path, trained, data_file):
    target = tmp_path / "somedir"
    target.mkdir()
    result = invoke("evaluate", "--model", trained, "--data", data_file, "--out", target)
    assert_user_error(result, "somedir", "directory")  # refused before any metric is printed
    assert list(target.iterdir()) == []


# --------------------------------------------------------------------------------------------
# process level: the real console script
# --------------------------------------------------------------------------------------------


def test_process_missing_data_file(tmp_path):
    proc = run_cli("data", "stats", "--data", "missing.txt", cwd=tmp_path)
    assert_process_user_error(proc, "missing.txt")


def test_process_unknown_recipe_key(tmp_path):
    (tmp_path / "r.yaml").write_text("name: x\nteacher:\n  train:\n    epochz: 3\n")
    proc = run_cli("recipe", "validate", "r.yaml", cwd=tmp_path)
    assert_process_user_error(proc, "r.yaml", "teacher.train.epochz", "unknown key")


def test_process_refuses_plain_pickle(tmp_path, data_file):
    marker = tmp_path / "MARKER"
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump(Evil(marker), fh, protocol=4)  # also makes torch warn about the protocol
    proc = run_cli("evaluate", "--model", "evil.pt", "--data", data_file, cwd=tmp_path)
    assert_process_user_error(proc, "evil.pt", "refused")
    assert not marker.exists()


def test_unreadable_path_is_a_user_error(monkeypatch, data_file):
    from recshrink.recipe import DataSpec

    def denied(spec):
        raise PermissionError(13, "Permission denied", spec.path)

    monkeypatch.setattr(DataSpec, "load", denied)
    monkeypatch.delenv("RECSHRINK_DEBUG", raising=False)
    assert_user_error(invoke("data", "stats", "--data", data_file), "tiny.txt", "Permission denied")
