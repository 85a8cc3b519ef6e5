"""An exported ONNX graph as a teacher, through ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from recshrink.errors import RecshrinkError
from recshrink.export.onnx import OnnxExportConfig, export_onnx
from recshrink.models import build_model
from recshrink.teachers.onnx import teacher_from_onnx

N, L = 25, 6


def _model():
    torch.manual_seed(0)
    return build_model("gru", N, dim=8, max_len=L).eval()


def test_an_exported_graph_scores_like_its_model(tmp_path):
    model = _model()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, OnnxExportConfig(full_scores=True))
    teacher = teacher_from_onnx(path)  # names, N and L inferred from the graph
    assert (teacher.num_items, teacher.max_len) == (N, L)
    seq = torch.tensor([[0, 0, 0, 4, 9, 2], [7, 1, 3, 3, 5, 6]])
    with torch.no_grad():
        want = model.scores(seq)[:, 1:]
    assert torch.allclose(teacher.scores(seq)[:, 1:], want, atol=1e-5)


def test_a_graph_without_catalogue_scores_is_one_line(tmp_path):
    path = tmp_path / "topk.onnx"
    export_onnx(_model(), path, OnnxExportConfig(full_scores=False))  # top-10 only
    with pytest.raises(RecshrinkError, match="no output scores the 25-item catalogue"):
        teacher_from_onnx(path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(RecshrinkError, match="not a loadable ONNX graph"):
        teacher_from_onnx(bad)
