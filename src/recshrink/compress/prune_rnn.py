"""Our Torch-Pruning pruner for the hidden size of GRU/LSTM layers.

Torch-Pruning has no GRU pruner and its LSTM pruner fails, so :class:`RNNHiddenPruner` is
registered with its dependency graph as a customized pruner (see
:mod:`recshrink.compress.prune`).
"""

from __future__ import annotations

import torch
from torch import nn


def rnn_gates(layer: nn.RNNBase) -> int:
    """Gate blocks per hidden unit: 4 for an LSTM, 3 for a GRU."""
    return 4 if isinstance(layer, nn.LSTM) else 3


class RNNHiddenPruner:
    """Torch-Pruning pruning function for the hidden size of ``nn.GRU``/``nn.LSTM`` (any layers).

    Out-channels are the hidden units, pruned in every layer at once (PyTorch RNNs share one
    hidden size): the gate rows of ``weight_ih``/``weight_hh``/biases, the columns of
    ``weight_hh`` and of the next layer's ``weight_ih``. In-channels are the input features of
    the first layer. Bidirectional and ``proj_size`` RNNs are refused.
    """

    TARGET_MODULES = (nn.GRU, nn.LSTM)

    def __new__(cls):  # a real BasePruningFunc subclass, created lazily (torch_pruning import)
        import torch_pruning as tp

        class _Pruner(tp.pruner.function.BasePruningFunc):
            TARGET_MODULES = cls.TARGET_MODULES

            def check(self, layer, idxs, to_output):
                if layer.bidirectional or getattr(layer, "proj_size", 0):
                    raise ValueError("bidirectional or projected RNNs cannot be pruned")

            def prune_out_channels(self, layer: nn.RNNBase, idxs: list[int]) -> nn.RNNBase:
                self.check(layer, idxs, True)
                h = layer.hidden_size
                keep = torch.tensor(sorted(set(range(h)) - set(int(i) for i in idxs)))
                rows = torch.cat([g * h + keep for g in range(rnn_gates(layer))])
                for l in range(layer.num_layers):
                    w_ih = getattr(layer, f"weight_ih_l{l}").data[rows]  # [G*H', in]
                    if l > 0:
                        w_ih = w_ih[:, keep]
                    w_hh = getattr(layer, f"weight_hh_l{l}").data[rows][:, keep]  # [G*H', H']
                    setattr(layer, f"weight_ih_l{l}", nn.Parameter(w_ih.contiguous()))
                    setattr(layer, f"weight_hh_l{l}", nn.Parameter(w_hh.contiguous()))
                    if layer.bias:
                        for b in ("ih", "hh"):
                            old = getattr(layer, f"bias_{b}_l{l}").data
                            setattr(layer, f"bias_{b}_l{l}", nn.Parameter(old[rows].contiguous()))
                layer.hidden_size = len(keep)
                layer._init_flat_weights()
                return layer

            def prune_in_channels(self, layer: nn.RNNBase, idxs: list[int]) -> nn.RNNBase:
                self.check(layer, idxs, False)
                keep = torch.tensor(sorted(set(range(layer.input_size)) - set(int(i) for i in idxs)))
                w = layer.weight_ih_l0.data[:, keep]
                layer.weight_ih_l0 = nn.Parameter(w.contiguous())
                layer.input_size = len(keep)
                layer._init_flat_weights()
                return layer

            def get_out_channels(self, layer: nn.RNNBase) -> int:
                return layer.hidden_size

            def get_in_channels(self, layer: nn.RNNBase) -> int:
                return layer.input_size

        return _Pruner()


__all__ = ["RNNHiddenPruner", "rnn_gates"]
