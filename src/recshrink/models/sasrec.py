"""SASRec-style causal transformer: the "large interest model" teacher."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recshrink.models.base import SeqRecModel, timeline_mask


def per_layer(value: int | list[int], layers: int, name: str) -> list[int]:
    """One value per layer from an int (shared) or a list (one per layer, e.g. after pruning)."""
    vals = [value] * layers if isinstance(value, int) else [int(v) for v in value]
    if len(vals) != layers:
        raise ValueError(f"{name} has {len(vals)} entries for {layers} layers")
    if min(vals) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return vals


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q/k/v projections (so heads can be pruned).

    Args:
        dim: Model width D.
        heads: Number of heads.
        dropout: Attention-probability dropout (``dropout_p`` of
            :func:`torch.nn.functional.scaled_dot_product_attention`, training only).
        head_dim: Width of each head (default ``dim // heads``; ``dim`` must then be divisible
            by ``heads``). Pruned models keep the original head width with fewer heads.
    """

    def __init__(self, dim: int, heads: int, dropout: float, head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim {dim} is not divisible by heads {heads}")
            head_dim = dim // heads
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape  # [B, L, D]
        # heads and head_dim are read from the weights so that pruned projections keep working
        hd = self.q.out_features // self.heads
        v_hd = self.v.out_features // self.heads
        q = self.q(x).view(b, l, self.heads, hd).transpose(1, 2)  # [B, H, L, hd]
        k = self.k(x).view(b, l, self.heads, hd).transpose(1, 2)  # [B, H, L, hd]
        v = self.v(x).view(b, l, self.heads, v_hd).transpose(1, 2)  # [B, H, L, v_hd]
        # mask: True = may attend; every row keeps at least its diagonal, so none is empty
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(hd),
        )  # [B, H, L, v_hd]
        y = y.transpose(1, 2).reshape(b, l, self.heads * v_hd)  # [B, L, H*hd]
        return self.out(y)


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``D -> hidden -> D`` with GELU."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float,
                 head_dim: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout, head_dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x * keep  # zero the padded positions (timeline mask)


class SASRec(SeqRecModel):
    """SASRec (Kang & McAuley, 2018) with pre-LN blocks and an output tied to the item table.

    Positions are counted from the end of the sequence, so a history scores the same whatever
    the padded length of its batch. Padded keys are masked out of attention (each position may
    always attend to itself, so no attention row is empty).

    Args:
        num_items: Number of items N.
        dim: Width D.
        layers: Number of transformer blocks.
        heads: Attention heads per block, or a list with one entry per block (pruned models).
        max_len: Longest history.
        dropout: Dropout on embeddings, attention and block outputs.
        ffn_dim: Feed-forward hidden size (default ``4 * dim``), or one per block.
        scale_positions: Scale position embeddings by ``sqrt(dim)`` like the item embeddings,
            so that order and identity enter on the same scale. Off by default: on Beauty it
            trailed the unscaled teacher at every epoch measured (docs/benchmarks.md).
        head_dim: Width of each attention head (default ``dim // heads``).
    """

    arch = "sasrec"

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        layers: int = 2,
        heads: int | list[int] = 2,
        max_len: int = 50,
        dropout: float = 0.2,
        ffn_dim: int | list[int] | None = None,
        scale_positions: bool = False,
        head_dim: int | None = None,
    ) -> None:
        super().__init__(num_items, dim, max_len)
        if layers < 1:
            raise ValueError("layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        ffn_dim = 4 * dim if ffn_dim is None else ffn_dim
        per_heads = per_layer(heads, layers, "heads")
        per_ffn = per_layer(ffn_dim, layers, "ffn_dim")
        self.builder_args = dict(
            dim=dim, layers=layers, heads=heads, max_len=max_len, dropout=dropout, ffn_dim=ffn_dim,
            scale_positions=scale_positions,
        )
        if head_dim is not None:
            self.builder_args["head_dim"] = head_dim
        self.pos_scale = math.sqrt(dim) if scale_positions else 1.0
        self.pos_emb = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos_emb.weight, std=dim**-0.5)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, h, f, dropout, head_dim) for h, f in zip(per_heads, per_ffn, strict=True)
        )
        self.ln_f = nn.LayerNorm(dim)

    def forward_all(self, seq: torch.Tensor) -> torch.Tensor:
        b, l = seq.shape  # [B, L]
        pos = torch.arange(self.max_len - l, self.max_len, device=seq.device)  # [L]
        x = (self.embed_items(seq) * math.sqrt(self.dim)
             + self.pos_emb(pos) * self.pos_scale)  # [B, L, D]  # fmt: skip
        keep = timeline_mask(seq, x.dtype)  # [B, L, 1]
        x = self.emb_drop(x) * keep
        causal = torch.ones(l, l, dtype=torch.bool, device=seq.device).tril()  # [L, L]
        eye = torch.eye(l, dtype=torch.bool, device=seq.device)
        mask = (causal & (seq > 0)[:, None, :]) | eye  # [B, L, L]
        mask = mask.unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.ln_f(x)  # [B, L, D]


def sasrec(
    num_items: int,
    dim: int = 64,
    layers: int = 2,
    heads: int | list[int] = 2,
    max_len: int = 50,
    dropout: float = 0.2,
    ffn_dim: int | list[int] | None = None,
    scale_positions: bool = False,
    head_dim: int | None = None,
) -> SASRec:
    """Build a SASRec teacher. See :class:`SASRec` for the arguments."""
    return SASRec(num_items, dim, layers, heads, max_len, dropout, ffn_dim, scale_positions,
                  head_dim)  # fmt: skip


def sasrec_base(num_items: int, **overrides) -> SASRec:
    """SASRec d64, 2 layers, 2 heads (``overrides`` replace any :func:`sasrec` argument)."""
    return sasrec(num_items, **{"dim": 64, "layers": 2, "heads": 2, "dropout": 0.2, **overrides})


def sasrec_large(num_items: int, **overrides) -> SASRec:
    """SASRec d256, 2 layers, 4 heads, dropout 0.5: the default "large interest model" teacher."""
    return sasrec(num_items, **{"dim": 256, "layers": 2, "heads": 4, "dropout": 0.5, **overrides})
