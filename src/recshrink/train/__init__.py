"""Training: configuration, losses, the trainer and evaluation."""

from recshrink.train.config import TrainConfig
from recshrink.train.evaluate import evaluate, model_scorer
from recshrink.train.trainer import TrainResult, fit, next_item_loss

__all__ = ["TrainConfig", "TrainResult", "evaluate", "fit", "model_scorer", "next_item_loss"]
