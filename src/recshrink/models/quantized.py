"""A row-wise quantized item table: a model part that checkpoints rebuild before loading weights.

Row-wise quantization keeps each row of the item table as integer codes with a per-row scale
(INT8, symmetric) or a scale and an offset (INT4, asymmetric, two codes per byte). The table is
dequantized where it is used, so an exported graph holds the codes. How a model comes to hold
one is :func:`recshrink.compress.quantize.quantize_item_table`; this module is what loading a
saved quantized model needs (:func:`apply_structure`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recshrink.models.base import SeqRecModel

ROWWISE_PREFIX = "rowwise-int"


def rowwise_step(bits: int) -> dict:
    """The step record of a row-wise ``bits``-bit item table (stored with the model)."""
    return {"type": "quantize", "mode": f"{ROWWISE_PREFIX}{bits}", "target": "item_table"}


def quantize_rows(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row quantization of ``w [R, D]``.

    8 bits are symmetric (int8 codes in -127..127, one scale per row, offset 0): rows of an item
    table are centred near zero, and dropping the offset keeps the table at ~1 byte per weight.
    4 bits are asymmetric (16 levels between the row's min and max: the offset matters there).

    Returns:
        ``(codes, scale [R], offset [R])`` with ``w ~= codes * scale + offset``; ``codes`` is
        int8 ``[R, D]`` for 8 bits and uint8 ``[R, ceil(D / 2)]`` (two codes per byte, low nibble
        first) for 4 bits.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    w = w.detach().float()
    if bits == 8:
        scale = (w.abs().max(dim=1).values / 127.0).clamp_min(1e-12)  # [R]
        codes = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return codes, scale, torch.zeros_like(scale)
    levels = 2**bits - 1
    lo, hi = w.min(dim=1).values, w.max(dim=1).values  # [R]
    scale = ((hi - lo) / levels).clamp_min(1e-12)
    codes = torch.round((w - lo[:, None]) / scale[:, None]).clamp(0, levels).to(torch.uint8)
    if codes.shape[1] % 2:
        codes = torch.cat([codes, torch.zeros_like(codes[:, :1])], dim=1)
    codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return codes, scale, lo


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int,
                    dim: int) -> torch.Tensor:  # fmt: skip
    """Inverse of :func:`quantize_rows`: ``[R, D]`` float32 (works on gathered rows too)."""
    if bits == 4:
        low = codes & 15
        high = codes >> 4
        codes = torch.stack([low, high], dim=-1).flatten(-2)[..., :dim]  # [..., D]
    return codes.float() * scale.unsqueeze(-1) + offset.unsqueeze(-1)


class QuantizedEmbedding(nn.Module):
    """A drop-in for the item ``nn.Embedding`` holding row-wise quantized codes.

    ``weight`` dequantizes the whole table; calling the module gathers rows of that table, so an
    exported graph holds the codes and scales once (the table is dequantized for scoring
    anyway). Scales (and INT4 offsets) are float32 ``[R, 1]``: the exporter folds casts of small
    initializers into float32 copies, so float16 would store them twice.

    Args:
        num_rows: Rows R of the table (items + padding).
        dim: Embedding width D.
        bits: 8 or 4.
    """

    def __init__(self, num_rows: int, dim: int, bits: int) -> None:
        super().__init__()
        self.dim, self.bits = dim, bits
        if bits == 8:
            self.register_buffer("codes", torch.zeros(num_rows, dim, dtype=torch.int8))
        else:
            self.register_buffer("codes", torch.zeros(num_rows, (dim + 1) // 2, dtype=torch.uint8))
            self.register_buffer("offset", torch.zeros(num_rows, 1))
        self.register_buffer("scale", torch.ones(num_rows, 1))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int) -> QuantizedEmbedding:
        """Quantize the rows of ``emb``."""
        q = cls(emb.num_embeddings, emb.embedding_dim, bits)
        codes, scale, offset = quantize_rows(emb.weight, bits)
        q.codes.copy_(codes)
        q.scale.copy_(scale.unsqueeze(1))
        if bits == 4:
            q.offset.copy_(offset.unsqueeze(1))
        return q

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table ``[R, D]`` float32."""
        codes = self.codes.float()  # [R, D] (INT4: [R, ceil(D / 2)])
        if self.bits == 8:
            return codes * self.scale  # [R, D]
        # INT4: unpack with float arithmetic (exact for 0..255 and ONNX-friendly)
        high = torch.floor(codes / 16.0)
        codes = torch.stack([codes - 16.0 * high, high], dim=-1).flatten(-2)[:, : self.dim]
        return codes * self.scale + self.offset  # [R, D]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight)  # [..., D]
        return rows * (ids != 0).unsqueeze(-1).to(rows.dtype)  # padding stays exactly zero


def apply_structure(model: SeqRecModel, steps: list[dict]) -> SeqRecModel:
    """Rebuild the module structure recorded by ``steps`` (before loading saved weights)."""
    for step in steps:
        mode = step.get("mode", "")
        if step.get("type") == "quantize" and mode.startswith(ROWWISE_PREFIX):
            bits = int(mode.removeprefix(ROWWISE_PREFIX))
            model.item_emb = QuantizedEmbedding(model.num_items + 1, model.dim, bits)
    return model


def structure_steps(model: SeqRecModel) -> list[dict]:
    """Steps that :func:`apply_structure` needs to rebuild ``model``'s modules."""
    if isinstance(model.item_emb, QuantizedEmbedding):
        return [rowwise_step(model.item_emb.bits)]
    return []


__all__ = ["QuantizedEmbedding", "apply_structure", "dequantize_rows", "quantize_rows",
           "rowwise_step", "structure_steps"]  # fmt: skip
