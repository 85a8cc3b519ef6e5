"""The contract every recshrink model follows (teacher and students alike).

Input: item-id sequences ``[B, L]`` int64, left-padded with 0, most recent item last.
Output: user vectors ``[B, D]`` (``encode``), scores over all items ``[B, N + 1]`` (``scores``;
column 0 is the padding id and is always ``-inf``), and top-k ids (``recommend``).
Scores are dot products of the user vector with the item table (output tied to the input table).
"""

from __future__ import annotations

import torch
from torch import nn


class SeqRecModel(nn.Module):
    """Base class: item table, tied scoring, and the shared contract.

    Subclasses implement :meth:`forward_all` (hidden state at every position) and set
    ``arch`` and ``builder_args`` (the keyword arguments that rebuild them).

    Args:
        num_items: Number of real items N; ids run 1..N, 0 is padding.
        dim: Item-embedding and user-vector size D.
        max_len: Longest history the model reads; longer inputs keep their last ``max_len`` items.
    """

    arch: str = "base"

    def __init__(self, num_items: int, dim: int, max_len: int) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.num_items = num_items
        self.dim = dim
        self.max_len = max_len
        self.builder_args: dict = {}
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    # -- to implement ---------------------------------------------------------------------------
    def forward_all(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position: ``[B, L] -> [B, L, D]``."""
        raise NotImplementedError

    # -- shared contract ------------------------------------------------------------------------
    def item_table(self) -> torch.Tensor:
        """The output item table ``[N + 1, D]`` (row 0 = padding)."""
        return self.item_emb.weight

    @property
    def sparse_items(self) -> bool:
        """Whether the item table is training on sparse gradients (set by the trainer)."""
        return bool(getattr(self.item_emb, "sparse", False))

    def embed_items(self, seq: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``seq``: ``[B, L] -> [B, L, D]``."""
        return self.item_emb(seq)

    def _trim(self, seq: torch.Tensor) -> torch.Tensor:
        if seq.dim() != 2:
            raise ValueError(f"expected item ids of shape [B, L], got {tuple(seq.shape)}")
        return seq[:, -self.max_len :] if seq.shape[1] > self.max_len else seq

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """User vectors from histories: ``[B, L] -> [B, D]`` (state at the last position)."""
        return self.forward_all(self._trim(seq))[:, -1]  # [B, D]

    def score_vectors(self, user: torch.Tensor) -> torch.Tensor:
        """Scores of user vectors against all items: ``[B, D] -> [B, N + 1]``."""
        s = user @ self.item_table().t()  # [B, N+1]
        # column 0 (padding) is never recommended. A scatter along dim 1 exports to one
        # ScatterElements on [B, N+1] and no [N + 1] mask constant; index_fill exported to a
        # Transpose, ScatterND and Transpose, two more copies of the scores (at 1M items and
        # batch 256, 1 GiB each)
        zero = torch.zeros_like(user[:, :1], dtype=torch.long)  # [B, 1]
        return s.scatter(1, zero, float("-inf"))

    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores over all items: ``[B, L] -> [B, N + 1]``, column 0 is ``-inf``."""
        return self.score_vectors(self.encode(seq))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.scores(seq)

    def recommend(self, seq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items: returns ``(scores [B, k], ids [B, k])``, best first."""
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in 1..{self.num_items}, got {k}")
        return torch.topk(self.scores(seq), k, dim=-1)

    def num_params(self) -> int:
        """Number of weights, the item table included (a quantized table counts its
        ``rows x dim`` entries, whatever their bit width)."""
        n = sum(p.numel() for p in self.parameters())
        emb = self.item_emb
        if not isinstance(emb, nn.Embedding) and hasattr(emb, "codes"):
            n += (self.num_items + 1) * self.dim
        return n

    def config(self) -> dict:
        """Architecture name and builder arguments (enough to rebuild the model)."""
        return {"arch": self.arch, "num_items": self.num_items, **self.builder_args}


def timeline_mask(seq: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1.0 at real items, 0.0 at padding, in ``dtype`` (the model's, so fp16/bf16 weights stay
    in their precision): ``[B, L] -> [B, L, 1]``."""
    return (seq > 0).unsqueeze(-1).to(dtype)
