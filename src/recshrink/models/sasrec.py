"""SASRec-style causal transformer: the "large interest model" teacher."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recshrink.models.base import SeqRecModel, timeline_mask


#: Feed-forward activations by name (``gelu`` is the exact erf form, as in BERT and RecBole).
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "swish": F.silu, "tanh": torch.tanh,
               "sigmoid": torch.sigmoid}  # fmt: skip


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
    """Position-wise feed-forward network ``D -> hidden -> D`` (GELU unless ``act`` says)."""

    def __init__(self, dim: int, hidden: int, dropout: float, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Block(nn.Module):
    """Transformer block: pre-LN (``x + f(ln(x))``) or post-LN (``ln(x + f(x))``, BERT/RecBole)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float,
                 head_dim: int | None = None, norm: str = "pre", ln_eps: float = 1e-5,
                 act: str = "gelu") -> None:  # fmt: skip
        super().__init__()
        self.post = norm == "post"
        self.ln1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = CausalSelfAttention(dim, heads, dropout, head_dim)
        self.ln2 = nn.LayerNorm(dim, eps=ln_eps)
        self.ffn = FeedForward(dim, ffn_dim, dropout, act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if self.post:
            x = self.ln1(x + self.drop(self.attn(x, mask)))
            x = self.ln2(x + self.drop(self.ffn(x)))
        else:
            x = x + self.drop(self.attn(self.ln1(x), mask))
            x = x + self.drop(self.ffn(self.ln2(x)))
        return x * keep  # zero the padded positions (timeline mask)


class SASRec(SeqRecModel):
    """SASRec (Kang & McAuley, 2018): pre-LN blocks (by default), output tied to the item table.

    Positions are counted from the end of the sequence (or from its first real item, see
    ``positions``), so a history scores the same whatever the padded length of its batch. Padded
    keys are masked out of attention (each position may always attend to itself, so no
    attention row is empty).

    The layout options after ``head_dim`` default to recshrink's own SASRec; a model converted
    from RecBole (:mod:`recshrink.teachers.recbole`) sets ``norm="post"``, ``emb_norm=True``,
    ``final_norm=False``, ``scale_items=False``, ``positions="start"`` and RecBole's
    ``ln_eps`` and ``act``. Only options that differ from the default enter ``builder_args``.

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
        norm: ``"pre"`` (LayerNorm before each sub-layer) or ``"post"`` (after each residual sum).
        emb_norm: LayerNorm on the summed item + position embeddings (before dropout).
        final_norm: LayerNorm on the output of the last block.
        ln_eps: ``eps`` of every LayerNorm.
        act: Feed-forward activation, one of :data:`ACTIVATIONS`.
        positions: ``"end"`` (position ids count back from the last column) or ``"start"``
            (position 0 at the first real item: models trained on right-padded histories).
        scale_items: Scale item embeddings by ``sqrt(dim)``.
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
        *,
        norm: str = "pre",
        emb_norm: bool = False,
        final_norm: bool = True,
        ln_eps: float = 1e-5,
        act: str = "gelu",
        positions: str = "end",
        scale_items: bool = True,
    ) -> None:
        super().__init__(num_items, dim, max_len)
        if layers < 1:
            raise ValueError("layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        if positions not in ("end", "start"):
            raise ValueError(f"positions must be 'end' or 'start', got {positions!r}")
        if not ln_eps > 0:
            raise ValueError(f"ln_eps must be > 0, got {ln_eps}")
        ffn_dim = 4 * dim if ffn_dim is None else ffn_dim
        per_heads = per_layer(heads, layers, "heads")
        per_ffn = per_layer(ffn_dim, layers, "ffn_dim")
        self.builder_args = dict(
            dim=dim, layers=layers, heads=heads, max_len=max_len, dropout=dropout, ffn_dim=ffn_dim,
            scale_positions=scale_positions,
        )
        if head_dim is not None:
            self.builder_args["head_dim"] = head_dim
        layout = dict(norm=norm, emb_norm=emb_norm, final_norm=final_norm, ln_eps=ln_eps, act=act,
                      positions=positions, scale_items=scale_items)  # fmt: skip
        self.builder_args.update({k: v for k, v in layout.items() if v != LAYOUT_DEFAULTS[k]})
        self.positions = positions
        self.item_scale = math.sqrt(dim) if scale_items else 1.0
        self.pos_scale = math.sqrt(dim) if scale_positions else 1.0
        self.pos_emb = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos_emb.weight, std=dim**-0.5)
        self.emb_ln = nn.LayerNorm(dim, eps=ln_eps) if emb_norm else nn.Identity()
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, h, f, dropout, head_dim, norm, ln_eps, act)
            for h, f in zip(per_heads, per_ffn, strict=True)
        )
        self.ln_f = nn.LayerNorm(dim, eps=ln_eps) if final_norm else nn.Identity()

    def forward_all(self, seq: torch.Tensor) -> torch.Tensor:
        b, l = seq.shape  # [B, L]
        if self.positions == "start":  # 0 at the first real item, as a right-padded model saw it
            pos = ((seq > 0).long().cumsum(1) - 1).clamp(min=0)  # [B, L]
        else:
            pos = torch.arange(self.max_len - l, self.max_len, device=seq.device)  # [L]
        x = (self.embed_items(seq) * self.item_scale
             + self.pos_emb(pos) * self.pos_scale)  # [B, L, D]  # fmt: skip
        keep = timeline_mask(seq, x.dtype)  # [B, L, 1]
        x = self.emb_drop(self.emb_ln(x)) * keep
        causal = torch.ones(l, l, dtype=torch.bool, device=seq.device).tril()  # [L, L]
        eye = torch.eye(l, dtype=torch.bool, device=seq.device)
        mask = (causal & (seq > 0)[:, None, :]) | eye  # [B, L, L]
        mask = mask.unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.ln_f(x)  # [B, L, D]


#: Defaults of :class:`SASRec`'s layout options (recshrink's own layout).
LAYOUT_DEFAULTS = dict(norm="pre", emb_norm=False, final_norm=True, ln_eps=1e-5, act="gelu",
                       positions="end", scale_items=True)  # fmt: skip


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
    **layout,
) -> SASRec:
    """Build a SASRec teacher. See :class:`SASRec` for the arguments (``layout``: its
    keyword-only layout options, :data:`LAYOUT_DEFAULTS`)."""
    return SASRec(num_items, dim, layers, heads, max_len, dropout, ffn_dim, scale_positions,
                  head_dim, **layout)  # fmt: skip


def sasrec_base(num_items: int, **overrides) -> SASRec:
    """SASRec d64, 2 layers, 2 heads (``overrides`` replace any :func:`sasrec` argument)."""
    return sasrec(num_items, **{"dim": 64, "layers": 2, "heads": 2, "dropout": 0.2, **overrides})


def sasrec_large(num_items: int, **overrides) -> SASRec:
    """SASRec d256, 2 layers, 4 heads, dropout 0.5: the default "large interest model" teacher."""
    return sasrec(num_items, **{"dim": 256, "layers": 2, "heads": 4, "dropout": 0.5, **overrides})
