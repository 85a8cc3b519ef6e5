"""GRU and LSTM students (GRU4Rec-style) under the shared contract."""

from __future__ import annotations

import torch
from torch import nn

from recshrink.models.base import SeqRecModel


def left_to_right_index(seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices that move left padding to the right, and back.

    Returns:
        ``(to_right, to_left)``, both ``[B, L]``: ``seq.gather(1, to_right)`` is right-padded,
        and ``x_right.gather(1, to_left)`` restores the original left-padded alignment.
    """
    l = seq.shape[1]
    n_pad = (seq == 0).sum(dim=1, keepdim=True)  # [B, 1]
    ar = torch.arange(l, device=seq.device).unsqueeze(0)  # [1, L]
    right = ar + n_pad  # wrap around without a modulo (exports to ONNX with dynamic L)
    left = ar - n_pad
    return torch.where(right >= l, right - l, right), torch.where(left < 0, left + l, left)


class RNNRec(SeqRecModel):
    """A GRU or LSTM over the item sequence.

    The recurrent layers run over the history with its padding moved to the end, so the state
    starts from zero at the first real item and does not depend on the padded length.

    Args:
        num_items: Number of items N.
        cell: ``"gru"`` or ``"lstm"``.
        dim: Item-embedding and user-vector size D.
        hidden: Recurrent hidden size (default ``dim``); projected back to D when different.
        layers: Number of recurrent layers.
        max_len: Longest history.
        dropout: Dropout on embeddings and between layers.
        project: Project the hidden state to D with a linear layer (default: when
            ``hidden != dim``; pruned models keep theirs).
        bias: Biases in the recurrent layers (RecBole's GRU4Rec has none).
        proj_bias: Bias in the projection.
    """

    def __init__(
        self,
        num_items: int,
        cell: str = "gru",
        dim: int = 64,
        hidden: int | None = None,
        layers: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        project: bool | None = None,
        *,
        bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__(num_items, dim, max_len)
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        hidden = dim if hidden is None else hidden
        project = hidden != dim if project is None else project
        if hidden != dim and not project:
            raise ValueError(f"hidden {hidden} != dim {dim} needs project=True")
        self.arch = cell
        self.builder_args = dict(
            dim=dim, hidden=hidden, layers=layers, max_len=max_len, dropout=dropout
        )
        if project and hidden == dim:
            self.builder_args["project"] = True
        if not bias:
            self.builder_args["bias"] = False
        if project and not proj_bias:
            self.builder_args["proj_bias"] = False
        rnn_cls = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            dim, hidden, num_layers=layers, bias=bias, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.emb_drop = nn.Dropout(dropout)
        self.out_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, dim, bias=proj_bias) if project else nn.Identity()

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """User vectors: the state at the last item, ``[B, L] -> [B, D]``.

        Equal to ``forward_all(seq)[:, -1]``, without moving every position back to the left or
        projecting any but the last (fewer operators in an exported graph: at batch 1 ONNX
        Runtime's per-operator cost is much of a small student's latency).
        """
        h, to_left = self._states(self._trim(seq))  # [B, L, H] right-padded, [B, L]
        last = to_left[:, -1:]  # [B, 1] where the last item's state sits
        h = h.gather(1, last.unsqueeze(-1).expand(-1, -1, h.shape[-1])).squeeze(1)  # [B, H]
        return self.proj(self.out_drop(h))  # [B, D]

    def _states(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrent states over the right-padded history ``[B, L, H]``, and the gather
        index that moves them back to the left-padded alignment ``[B, L]``."""
        to_right, to_left = left_to_right_index(seq)  # [B, L]
        x = self.emb_drop(self.embed_items(seq.gather(1, to_right)))  # [B, L, D] right-padded
        h, _ = self.rnn(x)  # [B, L, H]
        return h, to_left

    def forward_all(self, seq: torch.Tensor) -> torch.Tensor:
        h, to_left = self._states(seq)  # [B, L, H] right-padded
        h = h.gather(1, to_left.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [B, L, H] left-padded
        return self.proj(self.out_drop(h))  # [B, L, D]


def gru(
    num_items: int,
    dim: int = 64,
    hidden: int | None = None,
    layers: int = 1,
    max_len: int = 50,
    dropout: float = 0.2,
    project: bool | None = None,
    **layout,
) -> RNNRec:
    """Build a GRU student (``layout``: ``bias``, ``proj_bias``)."""
    return RNNRec(num_items, "gru", dim, hidden, layers, max_len, dropout, project, **layout)


def lstm(
    num_items: int,
    dim: int = 64,
    hidden: int | None = None,
    layers: int = 1,
    max_len: int = 50,
    dropout: float = 0.2,
    project: bool | None = None,
    **layout,
) -> RNNRec:
    """Build an LSTM student (``layout``: ``bias``, ``proj_bias``)."""
    return RNNRec(num_items, "lstm", dim, hidden, layers, max_len, dropout, project, **layout)
