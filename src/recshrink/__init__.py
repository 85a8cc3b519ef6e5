"""recshrink: compress large sequential interest models into small, fast recommenders.

The public API, one entry function per pipeline stage::

    import recshrink

    data = recshrink.load_data("Beauty.txt", attributes="Beauty_item2attributes.json")
    teacher = recshrink.train("sasrec_large", data, out="runs/teacher", epochs=70).model
    student = recshrink.distill(teacher, data, "gru_small", out="runs/student").model
    recshrink.export(student, "runs/student.onnx", data=data)
    print(recshrink.evaluate("runs/student.onnx", data)["ndcg@10"])

The CLI and YAML recipes (:func:`run`) are thin layers over these functions.
"""

from recshrink.api import (
    Result, benchmark, check_compatible, distill, evaluate, export, import_model, load_data,
    popular_items,
    prune, quantize, synthetic, train,
)  # fmt: skip
from recshrink.compress.distill import DistillConfig
from recshrink.compress.prune import PruneConfig
from recshrink.compress.quantize import OnnxQuantConfig
from recshrink.data.dataset import Dataset
from recshrink.data.split import Split
from recshrink.export.onnx import OnnxExportConfig
from recshrink.export.runtime import Predictor
from recshrink.models import build_model, builder_names
from recshrink.pipeline import run
from recshrink.recipe import load_recipe
from recshrink.teachers.onnx import teacher_from_onnx
from recshrink.teachers.protocol import ScoresTeacher, teacher_from_module
from recshrink.train.config import TrainConfig
from recshrink.version import __version__

__all__ = [
    "Dataset", "DistillConfig", "OnnxExportConfig", "OnnxQuantConfig", "Predictor",
    "PruneConfig", "Result", "ScoresTeacher", "Split", "TrainConfig", "__version__", "benchmark",
    "build_model", "builder_names", "check_compatible", "distill", "evaluate", "export",
    "import_model", "load_data", "load_recipe", "popular_items", "prune", "quantize", "run",
    "synthetic", "teacher_from_module", "teacher_from_onnx", "train",
]  # fmt: skip
