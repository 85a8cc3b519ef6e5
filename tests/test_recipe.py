"""Recipes: schema, ``--set`` overrides, seeds, and one-line errors naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import assert_user_error, invoke
from recshrink.errors import RecipeError
from recshrink.recipe import apply_overrides, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------------------------
# valid recipes
# --------------------------------------------------------------------------------------------


def test_every_shipped_recipe_loads():
    files = sorted((ROOT / "recipes").glob("*.yaml"))
    assert len(files) >= 1
    for f in files:
        r = load_recipe(f)
        assert r.teacher.label not in [b.label for b in r.baselines]


def test_validate_quickstart_exits_zero():
    result = invoke("recipe", "validate", QUICKSTART)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "quickstart" in result.output


def test_set_override_is_applied():
    raw = {"teacher": {"model": "gru", "train": {"epochs": 20}}}
    r = parse_recipe(raw, "x", ("teacher.train.epochs=3",))
    assert r.teacher.train.epochs == 3
    r = load_recipe(QUICKSTART, ("teacher.train.epochs=3", "baselines.1.train.lr=0.5"))
    assert r.teacher.train.epochs == 3
    assert r.baselines[1].train.lr == 0.5
    assert r.baselines[0].train.epochs == 18  # untouched (the value in quickstart.yaml)


def test_set_via_cli_validate():
    result = invoke("recipe", "validate", QUICKSTART, "--set", "baselines.0.model=lstm_small")
    assert result.exit_code == 0, result.output


def test_apply_overrides_parses_yaml_values():
    raw = apply_overrides({}, ["a.b=[1, 2]", "a.c=true", "d=x"])
    assert raw == {"a": {"b": [1, 2], "c": True}, "d": "x"}


def test_recipe_seed_propagates_unless_set():
    raw = {
        "seed": 7,
        "teacher": {"model": "gru"},
        "baselines": [
            {"name": "fixed", "model": "gru", "train": {"seed": 1}},
            {"name": "free", "model": "gru", "train": {"epochs": 2}},
        ],
    }
    r = parse_recipe(raw)
    assert r.seed == 7
    assert r.teacher.train.seed == 7
    assert r.baselines[0].train.seed == 1
    assert r.baselines[1].train.seed == 7
    assert r.baselines[1].train.epochs == 2


def test_seed_override_propagates():
    r = load_recipe(QUICKSTART, ("seed=9",))
    assert r.seed == 9
    assert r.teacher.train.seed == 9
    assert [b.train.seed for b in r.baselines] == [9, 9]


def test_recipe_seed_reaches_default_teacher():
    r = parse_recipe({"seed": 5})
    assert r.teacher.model == "sasrec_large"
    assert r.teacher.train.seed == 5


def test_empty_recipe_uses_defaults():
    r = parse_recipe(None)
    assert r.data.format == "synthetic" and r.teacher.train.seed == 0


# --------------------------------------------------------------------------------------------
# invalid recipes: one line, exit 2, key path or line in the message
# --------------------------------------------------------------------------------------------


def test_missing_recipe_file(tmp_path):
    assert_user_error(invoke("recipe", "validate", tmp_path / "nope.yaml"), "nope.yaml")


def test_directory_as_recipe(tmp_path):
    assert_user_error(invoke("recipe", "validate", tmp_path), str(tmp_path), "directory")


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "name: x\nseed: 1\nteacher: model: gru\n")
    assert_user_error(invoke("recipe", "validate", p), "r.yaml:3:", "invalid YAML")


def test_recipe_not_a_mapping(tmp_path):
    p = write(tmp_path, "- a\n- b\n")
    assert_user_error(invoke("recipe", "validate", p), "r.yaml", "mapping")


def test_unknown_key_path(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  train:\n    epochz: 3\n")
    assert_user_error(invoke("recipe", "validate", p), "r.yaml", "teacher.train.epochz",
                      "unknown key")  # fmt: skip


def test_unknown_top_level_key(tmp_path):
    p = write(tmp_path, "name: x\nteachr: {}\n")
    assert_user_error(invoke("recipe", "validate", p), "teachr", "unknown key")


def test_wrong_type(tmp_path):
    p = write(tmp_path, "teacher:\n  train:\n    epochs: abc\n")
    assert_user_error(invoke("recipe", "validate", p), "teacher.train.epochs", "integer")


def test_unknown_model_lists_allowed(tmp_path):
    p = write(tmp_path, "teacher: {model: gru}\nbaselines:\n  - {name: b, model: transformerz}\n")
    line = assert_user_error(invoke("recipe", "validate", p), "baselines.0.model",
                             "'transformerz'", "allowed")  # fmt: skip
    for name in ("gru", "sasrec_large", "cnn_small"):
        assert name in line


def test_unknown_loss_literal(tmp_path):
    p = write(tmp_path, "teacher:\n  train: {loss: xent}\n")
    assert_user_error(invoke("recipe", "validate", p), "teacher.train.loss", "'sampled'")


def test_set_without_equals():
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set", "teacher.train.epochs"),
                      "--set", "teacher.train.epochs", "KEY.PATH=VALUE")  # fmt: skip


def test_set_empty_key():
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set", "=3"), "--set", "empty key")


def test_set_list_index_out_of_range():
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set", "baselines.5.model=x"),
                      "baselines.5")  # fmt: skip


def test_set_through_a_scalar():
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set", "name.x=1"),
                      "name.x", "not a mapping")  # fmt: skip


def test_set_bad_value_names_key():
    result = invoke("recipe", "validate", QUICKSTART, "--set", "teacher.train.epochs=abc")
    assert_user_error(result, "quickstart.yaml", "teacher.train.epochs")


def test_duplicate_model_names(tmp_path):
    p = write(tmp_path, "teacher: {model: gru}\nbaselines: [{model: gru}]\n")
    assert_user_error(invoke("recipe", "validate", p), "unique", "gru")


def test_data_format_needs_path(tmp_path):
    p = write(tmp_path, "data: {format: s3rec}\n")
    assert_user_error(invoke("recipe", "validate", p), "data", "needs a path")


def test_bad_builder_args_caught_before_run(tmp_path):
    p = write(tmp_path, "teacher: {model: gru, args: {dim: 8}}\n"
                        "baselines: [{name: b, model: gru, args: {dim: 0}}]\n")  # fmt: skip
    out = tmp_path / "run"
    assert_user_error(invoke("run", p, "--out", out, "--no-progress"), "baselines.0.args", "dim")
    assert not out.exists()
    p2 = write(tmp_path, "teacher: {model: gru, args: {colour: red}}\n", "r2.yaml")
    assert_user_error(invoke("recipe", "validate", p2), "teacher.args", "colour")


def test_eval_ks_without_10_caught_before_run(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", QUICKSTART, "--out", out, "--set", "evaluate.ks=[5]", "--no-progress")
    assert_user_error(result, "evaluate.ks", "10")
    assert not out.exists()
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set", "evaluate.ks=[0, 10]"),
                      "evaluate.ks")  # fmt: skip


def test_run_out_is_a_file(tmp_path):
    out = tmp_path / "taken"
    out.write_text("x")
    assert_user_error(invoke("run", QUICKSTART, "--out", out, "--no-progress"), "taken")
    assert out.read_text() == "x"


@pytest.mark.parametrize("text", ["teacher: [1, 2]\n", "teacher: {train: 3}\n"])
def test_parse_recipe_raises_recipe_error(text, tmp_path):
    with pytest.raises(RecipeError, match=r"^.*r\.yaml: teacher"):
        load_recipe(write(tmp_path, text))


def test_a_scores_only_teacher_in_a_recipe_is_refused_before_any_work(tmp_path):
    with pytest.raises(RecipeError, match=r"r\.yaml: teacher\.load: .*t\.onnx: an ONNX graph or "
                                          r"torch\.export program is a scores-only teacher"):
        load_recipe(write(tmp_path, "teacher: {load: t.onnx}\n"))


def test_export_retrieval_settings_checked_before_any_work():
    ok = invoke("recipe", "validate", QUICKSTART, "--set", "export.retrieval={index: hnsw, ef_search: 128}")
    assert ok.exit_code == 0, ok.output
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set", "export.retrieval={ef: 3}"),
                      "export.retrieval", "'ef'")  # fmt: skip
    assert_user_error(invoke("recipe", "validate", QUICKSTART, "--set",
                             "export.retrieval={index: annoy}"), "export.retrieval", "annoy")  # fmt: skip


def test_benchmark_models_must_be_made_and_include_the_teacher(tmp_path):
    base = "teacher: {name: t, model: gru}\nstudents:\n  - {name: s, model: gru_tiny}\n"
    p = write(tmp_path, base + "benchmark: {models: [t, s.ann, x.onnx]}\n")
    assert_user_error(invoke("recipe", "validate", p), "benchmark.models", "'x.onnx'", "known: s, t")
    p = write(tmp_path, base + "benchmark: {models: [s.onnx, s.ann]}\n")
    assert_user_error(invoke("recipe", "validate", p), "benchmark.models", "needs the teacher ('t')")
    ok = write(tmp_path, base + "benchmark: {models: [t.onnx, s.ann], valid: false}\n")
    result = invoke("recipe", "validate", ok)
    assert result.exit_code == 0, result.output
    from recshrink.recipe import load_recipe
    b = load_recipe(ok).benchmark
    assert b.models == ["t.onnx", "s.ann"] and b.valid is False
