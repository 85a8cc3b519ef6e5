"""Quantization of the item table: row-wise INT8 / INT4 with a per-row scale and offset.

The item table is the largest tensor of a sequential recommender (12k x 256 floats = 12 MB for
Beauty's teacher, over 90% of a d64 student). Row-wise asymmetric quantization keeps it as
unsigned integers (INT4 packs two codes per byte) and dequantizes rows where they are used:
input embeddings gather-then-dequantize, scoring dequantizes the table. Both survive ONNX export,
so the exported file shrinks too.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
import torch.nn.functional as F
from torch import nn

from recshrink.models.base import SeqRecModel


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RowwiseConfig:
    """Row-wise item-table quantization.

    Attributes:
        bits: 8 or 4 bits per weight.
    """

    bits: Literal[8, 4] = 8

    def step(self) -> dict:
        """The step record stored with the model."""
        return {"type": "quantize", "mode": f"rowwise-int{self.bits}", "target": "item_table"}


def quantize_rows(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric per-row quantization of ``w [R, D]``.

    Returns:
        ``(codes, scale [R], offset [R])`` with ``w ~= codes * scale + offset``; ``codes`` is
        uint8 ``[R, D]`` for 8 bits and ``[R, ceil(D / 2)]`` (two codes per byte, low nibble
        first) for 4 bits.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    w = w.detach().float()
    levels = 2**bits - 1
    lo, hi = w.min(dim=1).values, w.max(dim=1).values  # [R]
    scale = ((hi - lo) / levels).clamp_min(1e-12)
    codes = torch.round((w - lo[:, None]) / scale[:, None]).clamp(0, levels).to(torch.uint8)
    if bits == 4:
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
    exported graph holds the codes, scales and offsets once (the table is dequantized for
    scoring anyway). Scales and offsets are float32 ``[R, 1]``: the exporter folds casts of
    small initializers into float32 copies, so float16 would store them twice.
    """

    def __init__(self, num_rows: int, dim: int, bits: int) -> None:
        super().__init__()
        self.dim, self.bits = dim, bits
        width = dim if bits == 8 else (dim + 1) // 2
        self.register_buffer("codes", torch.zeros(num_rows, width, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(num_rows, 1))
        self.register_buffer("offset", torch.zeros(num_rows, 1))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int) -> QuantizedEmbedding:
        q = cls(emb.num_embeddings, emb.embedding_dim, bits)
        codes, scale, offset = quantize_rows(emb.weight, bits)
        q.codes.copy_(codes)
        q.scale.copy_(scale.unsqueeze(1))
        q.offset.copy_(offset.unsqueeze(1))
        return q

    @property
    def weight(self) -> torch.Tensor:
        codes = self.codes.float()  # [R, D] (INT4: [R, ceil(D / 2)])
        if self.bits == 4:  # unpack with float arithmetic: exact for 0..255 and ONNX-friendly
            high = torch.floor(codes / 16.0)
            codes = torch.stack([codes - 16.0 * high, high], dim=-1).flatten(-2)[:, : self.dim]
        return codes * self.scale + self.offset  # [R, D]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight)  # [..., D]
        return rows * (ids != 0).unsqueeze(-1).to(rows.dtype)  # padding stays exactly zero


def quantize_item_table(model: SeqRecModel, config: RowwiseConfig | None = None) -> SeqRecModel:
    """Replace the model's item table by a row-wise quantized one (in place; returns the model)."""
    cfg = config or RowwiseConfig()
    if isinstance(model.item_emb, QuantizedEmbedding):
        raise ValueError("the item table is already quantized")
    model.item_emb = QuantizedEmbedding.from_embedding(model.item_emb, cfg.bits)
    return model


def apply_structure(model: SeqRecModel, steps: list[dict]) -> SeqRecModel:
    """Rebuild the module structure recorded by ``steps`` (before loading saved weights)."""
    for step in steps:
        mode = step.get("mode", "")
        if step.get("type") == "quantize" and mode.startswith("rowwise-int"):
            bits = int(mode.removeprefix("rowwise-int"))
            model.item_emb = QuantizedEmbedding(model.num_items + 1, model.dim, bits)
    return model


def structure_steps(model: SeqRecModel) -> list[dict]:
    """Steps that :func:`apply_structure` needs to rebuild ``model``'s modules."""
    if isinstance(model.item_emb, QuantizedEmbedding):
        return [RowwiseConfig(bits=model.item_emb.bits).step()]
    return []
