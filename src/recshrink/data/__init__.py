"""Data: loaders, leave-one-out split and synthetic data with evolving interests."""

from recshrink.data.dataset import InteractionData
from recshrink.data.split import EvalSet, Split, leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic

__all__ = ["InteractionData", "EvalSet", "Split", "SyntheticConfig", "leave_one_out", "synthetic"]
