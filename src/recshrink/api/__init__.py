"""recshrink's public entry functions, one per pipeline stage (re-exported by
:mod:`recshrink`); the CLI and the recipe runner call exactly these."""

from recshrink.api._common import Result, check_compatible, popular_items
from recshrink.api.data import load_data, synthetic
from recshrink.api.evaluation import benchmark, evaluate
from recshrink.api.exports import export
from recshrink.api.imports import import_model
from recshrink.api.pruning import prune
from recshrink.api.quantization import quantize
from recshrink.api.training import distill, train

__all__ = ["Result", "benchmark", "check_compatible", "distill", "evaluate", "export",
           "import_model", "load_data", "popular_items", "prune", "quantize", "synthetic", "train"]
