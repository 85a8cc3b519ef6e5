"""The README's Python example is the public API's contract: it runs here as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    section = README.read_text().split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's Python section has one complete script"
    return blocks[0]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(python_example(), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    kept = float(re.search(r"kept ([0-9.]+) of the teacher", out).group(1))
    assert 0.0 < kept  # a number, measured on validation through the INT8 graph
    assert re.search(r"speed-up p50@1: [0-9.]+", out)
    assert (tmp_path / "out" / "student_p50.int8.onnx").is_file()
    assert (tmp_path / "out" / "teacher" / "model.safetensors").is_file()
    ids = eval(out.strip().splitlines()[-1])  # the served top-5 raw ids
    assert len(ids) == 5 and not {"1", "7", "42"} & set(ids)  # history items excluded
