import pytest
import torch

from recshrink.compress.quantize import RowwiseConfig
from recshrink.models import build_model
from recshrink.models.quantized import (
    QuantizedEmbedding, apply_structure, dequantize_rows, quantize_rows, structure_steps,
)  # fmt: skip


def test_quantize_rows_by_hand():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0], [-1.0, -1.0, 1.0, 1.0]])
    codes, scale, offset = quantize_rows(w, 8)  # symmetric: scale = max|w| / 127
    assert codes.dtype == torch.int8 and codes.tolist() == [[0, 42, 85, 127], [-127, -127, 127, 127]]
    assert torch.allclose(scale, torch.tensor([3 / 127, 1 / 127])) and offset.tolist() == [0, 0]
    assert torch.allclose(dequantize_rows(codes, scale, offset, 8, 4), w, atol=3 / 127 / 2 + 1e-6)
    codes4, scale4, offset = quantize_rows(w, 4)
    assert codes4.shape == (2, 2)
    assert codes4[0].tolist() == [0 | (5 << 4), 10 | (15 << 4)]
    assert torch.allclose(scale4, torch.tensor([0.2, 2 / 15]))
    assert torch.allclose(dequantize_rows(codes4, scale4, offset, 4, 4), w, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
def test_error_bound_and_odd_width(bits):
    w = torch.randn(50, 7)
    codes, scale, offset = quantize_rows(w, bits)
    back = dequantize_rows(codes, scale, offset, bits, 7)
    assert back.shape == w.shape
    assert torch.all((back - w).abs() <= scale[:, None] / 2 + 1e-6)
    # gather-then-dequantize equals dequantize-then-gather
    ids = torch.tensor([[3, 0, 49]])
    emb = QuantizedEmbedding.from_embedding(torch.nn.Embedding.from_pretrained(w), bits)
    got = emb(ids)
    assert torch.allclose(got[0, [0, 2]], emb.weight[[3, 49]]) and torch.all(got[0, 1] == 0)
    assert torch.allclose(emb.weight, back, atol=1e-6)


def test_structure_steps_rebuild_the_quantized_table():
    model = build_model("gru", 30, dim=8)
    assert structure_steps(model) == []
    model.item_emb = QuantizedEmbedding.from_embedding(model.item_emb, 4)
    steps = structure_steps(model)
    assert steps == [RowwiseConfig(bits=4).step()]
    fresh = apply_structure(build_model("gru", 30, dim=8), steps)
    assert isinstance(fresh.item_emb, QuantizedEmbedding) and fresh.item_emb.bits == 4
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(fresh.item_emb.weight, model.item_emb.weight)
