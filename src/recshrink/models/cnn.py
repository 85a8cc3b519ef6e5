"""NextItNet-style dilated causal CNN student."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recshrink.models.base import SeqRecModel, timeline_mask


class CausalConv(nn.Module):
    """1-D causal convolution over ``[B, L, C]`` (left zero padding, dilation)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(x.transpose(1, 2), (self.pad, 0))  # [B, C, pad + L]
        return self.conv(y).transpose(1, 2)  # [B, L, C_out]


class ResidualBlock(nn.Module):
    """Two dilated causal convolutions with pre-LayerNorm and a residual connection.

    Inputs to each convolution are zeroed at padded positions, which makes the output at a real
    position independent of how much padding precedes it.
    """

    def __init__(self, dim: int, channels: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.conv1 = CausalConv(dim, channels, kernel, dilation)
        self.ln2 = nn.LayerNorm(channels)
        self.conv2 = CausalConv(channels, dim, kernel, 2 * dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.ln1(x)) * keep)  # [B, L, C]
        h = self.conv2(F.relu(self.ln2(h)) * keep)  # [B, L, D]
        return (x + self.drop(h)) * keep


class NextItNet(SeqRecModel):
    """Dilated causal CNN (Yuan et al., 2019) under the shared contract.

    Args:
        num_items: Number of items N.
        dim: Item-embedding and user-vector size D.
        channels: Inner channels of each block (default ``width``), or one per block (pruned).
        dilations: Dilation of the first convolution of each block (the second uses twice it).
        kernel: Convolution kernel size.
        max_len: Longest history.
        dropout: Dropout on embeddings and block outputs.
        width: Width W of the residual stream (default ``dim``). A wider stream is projected in
            from the item embeddings and back out to D before the final LayerNorm, like a
            GRU whose state is wider than its item table.
    """

    arch = "cnn"

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        channels: int | list[int] | None = None,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        kernel: int = 3,
        max_len: int = 50,
        dropout: float = 0.2,
        width: int | None = None,
    ) -> None:
        super().__init__(num_items, dim, max_len)
        if width is not None and width < 1:
            raise ValueError(f"width must be positive, got {width}")
        wide = width if width is not None else dim
        channels = wide if channels is None else channels
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations must be positive, got {dilations}")
        per_block = [channels] * len(dilations) if isinstance(channels, int) else list(channels)
        if len(per_block) != len(dilations) or min(per_block) < 1:
            raise ValueError(f"channels must be positive, one per block, got {channels}")
        if kernel < 2:
            raise ValueError(f"kernel must be >= 2, got {kernel}")
        self.builder_args = dict(
            dim=dim,
            channels=channels if isinstance(channels, int) else [int(c) for c in channels],
            dilations=list(dilations),
            kernel=kernel,
            max_len=max_len,
            dropout=dropout,
        )
        if width is not None:  # recorded only when set: older configs stay as they were
            self.builder_args["width"] = int(width)
        self.emb_drop = nn.Dropout(dropout)
        self.proj_in = nn.Linear(dim, wide) if wide != dim else None
        self.blocks = nn.ModuleList(
            ResidualBlock(wide, c, kernel, d, dropout) for c, d in zip(per_block, dilations)
        )
        self.proj_out = nn.Linear(wide, dim) if wide != dim else None
        self.ln_f = nn.LayerNorm(dim)

    def forward_all(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.embed_items(seq)  # [B, L, D]
        keep = timeline_mask(seq, x.dtype)  # [B, L, 1]
        x = self.emb_drop(x) * keep
        if self.proj_in is not None:
            x = self.proj_in(x) * keep  # [B, L, W]
        for block in self.blocks:
            x = block(x, keep)
        if self.proj_out is not None:
            x = self.proj_out(x)  # [B, L, D]
        return self.ln_f(x)  # [B, L, D]


def nextitnet(
    num_items: int,
    dim: int = 64,
    channels: int | list[int] | None = None,
    dilations: tuple[int, ...] = (1, 2, 4, 8),
    kernel: int = 3,
    max_len: int = 50,
    dropout: float = 0.2,
    width: int | None = None,
) -> NextItNet:
    """Build a NextItNet-style CNN student (``width``: residual-stream width, default ``dim``)."""
    return NextItNet(num_items, dim, channels, dilations, kernel, max_len, dropout, width)
