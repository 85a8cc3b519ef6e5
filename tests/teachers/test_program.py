"""A ``torch.export`` program (``.pt2``) as a teacher: scores equal the eager module's; archives
that would unpickle anything, AOTInductor packages and unusable signatures are refused."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
import torch
from torch import nn
from torch.export import Dim

from recshrink.errors import RecshrinkError
from recshrink.teachers.program import is_export_program, teacher_from_program
from recshrink.teachers.protocol import teacher_from_module
from tests.cli_helpers import assert_user_error, invoke, tiny_sequences, write_s3rec
from tests.teachers.test_foreign_serving import RightPadded

N, L = 20, 6


class LeftPadded(nn.Module):
    """recshrink's contract: ``forward(seq [B, L]) -> [B, N + 1]``, mean of the history."""

    def __init__(self, n: int = N, d: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(n + 1, d, padding_idx=0)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        m = (seq > 0).float().unsqueeze(-1)  # [B, L, 1]
        u = (self.emb(seq) * m).sum(1) / m.sum(1).clamp(min=1)  # [B, D]
        return u @ self.emb.weight.T  # [B, N + 1]


def _save(module: nn.Module, path, two_inputs: bool = False, batch_dim: bool = True):
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    args = (seq, torch.tensor([4, 6])) if two_inputs else (seq,)
    shapes = tuple({0: Dim("batch")} for _ in args) if batch_dim else None
    torch.export.save(torch.export.export(module.eval(), args, dynamic_shapes=shapes), str(path))
    return path


def _hist():
    return torch.tensor([[0, 0, 0, 4, 9, 2], [7, 1, 3, 8, 5, 6], [0, 0, 0, 0, 0, 11]])


def test_a_left_padded_program_scores_like_its_module(tmp_path):
    module = LeftPadded()
    path = _save(module, tmp_path / "t.pt2")
    assert is_export_program(path)
    teacher = teacher_from_program(path, num_items=N)
    assert (teacher.max_len, teacher.runtime, teacher.arch) == (L, "torch", "pt2:t.pt2")
    with torch.no_grad():
        want = module(_hist())
    torch.testing.assert_close(teacher.scores(_hist())[:, 1:], want[:, 1:], atol=1e-6, rtol=1e-6)
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, N + 1, (17, L), generator=g)  # another batch size: a dynamic batch
    seq[torch.arange(L).expand(17, L) < torch.randint(0, L, (17, 1), generator=g)] = 0
    with torch.no_grad():
        want = module(seq)
    torch.testing.assert_close(teacher.scores(seq)[:, 1:], want[:, 1:], atol=1e-6, rtol=1e-6)
    assert len(teacher.digest()) == 16 and teacher.eval() is teacher  # eval(): a no-op
    assert {k for k, _ in teacher.named_parameters()} == {"module.emb.weight"}
    assert teacher.scores(_hist()[:, 2:]).shape == (3, N + 1)  # shorter histories padded to L


def test_a_recbole_style_program_scores_like_its_module(tmp_path):
    module = RightPadded(N)
    path = _save(module, tmp_path / "r.pt2", two_inputs=True)
    teacher = teacher_from_program(path, num_items=N)  # two inputs: right padding by default
    ref = teacher_from_module(module.eval(), N, L, padding="right", call="seq_len",
                              pad_column=False)  # fmt: skip
    torch.testing.assert_close(teacher.scores(_hist()), ref.scores(_hist()), atol=1e-6, rtol=1e-6)


def _rewrite(src, dst, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, edit(item.filename, zin.read(item.filename)))


class _Mkdir:
    def __init__(self, where: str) -> None:
        self.where = where

    def __reduce__(self):
        return os.mkdir, (self.where,)


def test_archives_that_would_unpickle_are_refused_and_nothing_runs(tmp_path):
    good = _save(LeftPadded(), tmp_path / "good.pt2")

    def use_pickle(name, data):
        if name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            for v in cfg["config"].values():
                v["use_pickle"] = True
            return json.dumps(cfg).encode()
        return data

    _rewrite(good, tmp_path / "pickled.pt2", use_pickle)
    with pytest.raises(RecshrinkError, match="emb.weight is stored as a pickle"):
        teacher_from_program(tmp_path / "pickled.pt2", num_items=N)
    marker = tmp_path / "ran"

    def evil_inputs(name, data):
        if "sample_inputs" in name:
            buf = io.BytesIO()
            torch.save(((_Mkdir(str(marker)),), {}), buf)
            return buf.getvalue()
        return data

    _rewrite(good, tmp_path / "evil.pt2", evil_inputs)
    with pytest.raises(RecshrinkError, match="sample inputs are not plain tensors") as err:
        teacher_from_program(tmp_path / "evil.pt2", num_items=N)
    assert "\n" not in str(err.value) and not marker.exists()

    def evil_shape(name, data):  # sympy.sympify evaluates every symbolic shape as Python
        if name.endswith("models/model.json"):
            text = data.decode()
            at = text.index('"expr_str": "') + len('"expr_str": "')
            return (text[:at] + f"0*len(open('{marker}', 'w').name) + " + text[at:]).encode()
        return data

    _rewrite(good, tmp_path / "shape.pt2", evil_shape)
    with pytest.raises(RecshrinkError, match="a symbolic shape is not a plain expression") as err:
        teacher_from_program(tmp_path / "shape.pt2", num_items=N)
    assert "\n" not in str(err.value) and not marker.exists()
    _rewrite(good, tmp_path / "legacy.pt2", lambda n, d: d)
    with zipfile.ZipFile(tmp_path / "legacy.pt2", "a") as z:  # the pre-2.8 pickled state_dict
        z.writestr("good/data/weights/model.pt", b"")  # root: the name it was saved under
    with pytest.raises(RecshrinkError, match="legacy weights are pickled"):
        teacher_from_program(tmp_path / "legacy.pt2", num_items=N)


def test_unusable_programs_are_one_line(tmp_path):
    with pytest.raises(RecshrinkError, match="no such torch.export program"):
        teacher_from_program(tmp_path / "missing.pt2", num_items=N)
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(RecshrinkError, match="not a zip file"):
        teacher_from_program(tmp_path / "junk.pt2", num_items=N)
    aoti = tmp_path / "aoti.pt2"
    with zipfile.ZipFile(aoti, "w") as z:  # the layout an AOTInductor package has
        z.writestr("aoti/data/aotinductor/model/model.wrapper.so", b"")
        z.writestr("aoti/archive_format", "pt2")
    with pytest.raises(RecshrinkError, match="AOTInductor package is compiled code"):
        teacher_from_program(aoti, num_items=N)
    path = _save(LeftPadded(), tmp_path / "t.pt2")
    with pytest.raises(RecshrinkError, match="scores 21 columns, but the catalogue has 30 items"):
        teacher_from_program(path, num_items=30)
    static = _save(LeftPadded(), tmp_path / "static.pt2", batch_dim=False)  # batch fixed at 2
    with pytest.raises(RecshrinkError, match="batch dimension is fixed at 2; export it with a "
                       "dynamic one") as err:  # the probe (2 rows) would pass; 3 rows would not
        teacher_from_program(static, num_items=N)
    assert "\n" not in str(err.value)
    with pytest.raises(RecshrinkError, match="give num_items= .its scores have 21 columns"):
        teacher_from_program(path)


class ThreeInputs(nn.Module):
    def forward(self, seq, lens, extra):
        return torch.zeros(seq.shape[0], N + 1) + lens.unsqueeze(1) + extra.unsqueeze(1)


def test_cli_distils_from_a_program_and_refuses_a_wrong_signature(tmp_path):
    data = write_s3rec(tmp_path / "seqs.txt", tiny_sequences(items=N))
    path = _save(LeftPadded(), tmp_path / "t.pt2")
    out = tmp_path / "student"
    res = invoke("distill", "--teacher", path, "--student", "gru", "--arg", "dim=8",
                 "--data", data, "--max-len", L, "--epochs", "1", "--negatives", "8",
                 "--kd", "kd_tail=none", "--no-progress", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "report.json").read_text())["models"]
    seq = torch.ones(2, L, dtype=torch.long)
    bad = tmp_path / "three.pt2"
    torch.export.save(torch.export.export(ThreeInputs(), (seq, seq[:, 0], seq[:, 0])), str(bad))
    out2 = tmp_path / "student2"
    assert_user_error(invoke("distill", "--teacher", bad, "--data", data, "--max-len", L,
                             "--out", out2), str(bad), "takes 3 inputs")  # fmt: skip
    assert not out2.exists()
