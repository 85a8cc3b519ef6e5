"""YAML recipes: schema, ``--set`` overrides and validation with key paths in every error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
)  # fmt: skip

from recshrink.compress.distill import DistillConfig
from recshrink.compress.prune import PruneConfig
from recshrink.api.data import load_data, synthetic
from recshrink.export.ann_index import RetrievalConfig
from recshrink.benchmark.run import base_label
from recshrink.export.backends import BACKENDS
from recshrink.data.dataset import InteractionData
from recshrink.data.loaders import kcore_filter
from recshrink.data.synthetic import SyntheticConfig
from recshrink.errors import RecipeError, RecshrinkError
from recshrink.models import build_model, builder_names
from recshrink.train.config import TrainConfig, check_ks

FORMATS = ("synthetic", "s3rec", "pairs", "recbole", "csv")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvSpec(_Strict):
    """Column names of a CSV interaction file."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = None
    category_col: str | None = None
    sep: str = ","


class DataSpec(_Strict):
    """Where the interactions come from and how they are split.

    Relative paths are resolved against ``root``, which defaults to the ``RECSHRINK_DATA``
    environment variable, else ``./data``.
    """

    format: Literal["synthetic", "s3rec", "pairs", "recbole", "csv"] = "synthetic"
    path: str | None = None
    attributes: str | None = None
    item_path: str | None = None
    root: str | None = None
    name: str | None = None
    max_len: int = Field(50, ge=2)
    kcore: int = Field(0, ge=0)
    shift_window: int = Field(5, ge=1)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    csv: CsvSpec = Field(default_factory=CsvSpec)

    def model_post_init(self, __context: Any) -> None:
        if self.format != "synthetic" and not self.path:
            raise ValueError(f"format {self.format!r} needs a path")

    def resolve(self, rel: str | None) -> Path | None:
        """Resolve a data path against the data root."""
        if rel is None:
            return None
        p = Path(os.path.expanduser(rel))
        if p.is_absolute():
            return p
        root = self.root or os.environ.get("RECSHRINK_DATA") or "data"
        return Path(root) / p

    def load(self) -> InteractionData:
        """Load (and k-core filter) the data this spec describes.

        Raises:
            DataError: Missing or malformed files.
        """
        if self.format == "synthetic":
            data = synthetic(self.synthetic)
            return kcore_filter(data, self.kcore) if self.kcore > 1 else data
        options: dict = {}
        if self.name:
            options["name"] = self.name
        if self.format == "s3rec" and self.attributes:
            options["attributes"] = self.resolve(self.attributes)
        elif self.format == "recbole" and self.item_path:
            options["item_path"] = self.resolve(self.item_path)
        elif self.format == "csv":
            options.update(self.csv.model_dump())
        return load_data(self.resolve(self.path), self.format, kcore=self.kcore, **options)


class ModelSpec(_Strict):
    """A model to train: builder or preset name, builder arguments, training settings.

    ``load`` instead names a trained model to use as it is: a recshrink model directory or
    ``.pt``, or a RecBole checkpoint (converted to the native model). A scores-only teacher (an
    ONNX graph, a ``torch.export`` program) cannot be pruned, exported or resumed from a model
    directory: give it to ``recshrink distill --teacher`` or :func:`recshrink.distill`.
    """

    name: str | None = None
    model: str = "sasrec_large"
    args: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    load: str | None = None

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in builder_names():
            raise ValueError(f"unknown model {v!r}; allowed: {', '.join(builder_names())}")
        return v

    @field_validator("load")
    @classmethod
    def _native(cls, v: str | None) -> str | None:
        if v and Path(v).suffix.lower() in (".onnx", ".pt2"):
            raise ValueError(f"{v}: an ONNX graph or torch.export program is a scores-only "
                             "teacher, which recipes do not take yet; distil from it with "
                             "`recshrink distill --teacher` or recshrink.distill()")  # fmt: skip
        return v

    @field_validator("args")
    @classmethod
    def _buildable(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # catch bad builder arguments before any work starts (a weightless build on "meta")
        model = info.data.get("model")
        if model is None:
            return v
        try:
            with torch.device("meta"):
                build_model(model, 1, **v)
        except RecshrinkError as exc:
            raise ValueError(str(exc)) from None
        return v

    @property
    def label(self) -> str:
        return self.name or self.model


class StudentSpec(ModelSpec):
    """A student distilled from the teacher: a model spec plus distillation settings."""

    model: str = "gru_small"
    distill: DistillConfig = Field(default_factory=DistillConfig)


class EvalSpec(_Strict):
    """Evaluation protocol (also the validation protocol of every training in the recipe).

    Attributes:
        ks: Cut-offs (must include 10).
        mask_history: Exclude the items a user already interacted with from the ranking.
        mask_scope: ``"full"``: every item before the target (S3-Rec's and RecBole's
            protocol); ``"window"``: only the last ``max_len`` items the model sees.
        ties: ``"pessimistic"``: a target tied with other items ranks behind all of them;
            ``"expected"``: the expected rank under random tie-breaking.
        batch_size: Users per scoring call.
    """

    ks: tuple[int, ...] = (5, 10, 20)
    mask_history: bool = True
    mask_scope: Literal["full", "window"] = "full"
    ties: Literal["pessimistic", "expected"] = "pessimistic"
    batch_size: int = Field(1024, ge=1)

    def kwargs(self) -> dict:
        """The protocol as :func:`recshrink.train.evaluate.evaluate`'s keyword arguments."""
        return {"ks": self.ks, "mask_history": self.mask_history, "batch_size": self.batch_size,
                "mask_scope": self.mask_scope, "ties": self.ties}  # fmt: skip

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_ks(v)


class PruneSpec(_Strict):
    """A pruning stage: which model to prune, how, and how to recover."""

    name: str
    model: str  # the label of a model made earlier in the recipe
    config: PruneConfig = Field(default_factory=PruneConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10, patience=3))
    distill: DistillConfig = Field(default_factory=DistillConfig)


class QuantizeSpec(_Strict):
    """A row-wise item-table quantization stage (PyTorch side; the result exports too)."""

    name: str
    model: str
    bits: Literal[8, 4] = 8


class ExportSpec(_Strict):
    """ONNX export of models made by the recipe, validated and gated, plus ORT quantization."""

    models: list[str] | None = None  # default: every model
    k: int = Field(10, ge=1)
    min_agreement: float = Field(0.99, ge=0.0, le=1.0)
    quantize: list[Literal["dynamic", "static", "fp16"]] = Field(default_factory=list)
    tensorrt: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=list)
    slim: bool = False  # simplify each graph with onnxslim (the `slim` extra)
    # also a retrieval artifact <name>.ann (user encoder + FAISS index; the `ann` extra), e.g.
    # {index: hnsw, ef_search: 128}; {} = the index for the catalogue's size
    retrieval: dict[str, Any] | None = None

    @field_validator("retrieval")
    @classmethod
    def _retrieval(cls, v: dict | None) -> dict | None:
        if v is not None:
            try:
                RetrievalConfig(**v)
            except TypeError as exc:  # an unknown key
                raise ValueError(str(exc).replace("RetrievalConfig.__init__() ", "")) from None
        return v


class BenchmarkSpec(_Strict):
    """Benchmark stage: every model directory and exported file, side by side.

    ``models`` limits it to the named entries (a model's label, or an exported file's, e.g.
    ``student.onnx``, ``student.ann``); the teacher or one of its exports must be among them,
    for the ratios. ``valid: false`` skips scoring the validation split through each backend
    (the test split is always scored): at a 1M-item catalogue each full-ranking pass over
    every user costs minutes.
    """

    backends: list[str] = Field(default_factory=lambda: ["torch", "onnxruntime"])
    device: str = "cpu"
    batches: list[int] = Field(default_factory=lambda: [1, 16, 256])
    budget_s: float = Field(1.0, gt=0)
    threads: int | None = Field(None, ge=1)
    models: list[str] | None = None
    valid: bool = True

    @field_validator("backends")
    @classmethod
    def _backends(cls, v: list[str]) -> list[str]:
        bad = [b for b in v if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown backend {bad[0]!r}; allowed: {', '.join(BACKENDS)}")
        return v


class GateSpec(_Strict):
    """Quality gates: the run fails (exit 2) when a model falls under its floor."""

    min_retention: dict[str, float] = Field(default_factory=dict)


class SearchSpec(BaseModel):
    """The ``search:`` block of a recipe."""

    model_config = ConfigDict(extra="forbid")

    students: list[str] = Field(default_factory=lambda: ["gru_tiny", "gru_small"])
    prune_ratios: list[float] = Field(default_factory=lambda: [0.0, 0.5])
    quantize: list[Literal["none", "int8", "int4", "dynamic"]] = Field(
        default_factory=lambda: ["none", "int8"])
    objective: Literal["latency", "size"] = "latency"
    batch: int = Field(1, ge=1)
    metric: Literal["ndcg@10", "f1@10"] = "ndcg@10"
    max_drop: float = Field(0.05, ge=0.0, lt=1.0)
    max_trials: int = Field(12, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    threads: int | None = Field(None, ge=1)
    budget_s: float = Field(0.5, gt=0)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    prune_train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10, patience=3))

    def model_post_init(self, __context) -> None:
        for i, s in enumerate(self.students):
            if s not in builder_names() and "/" not in s:
                raise ValueError(f"students.{i}: {s!r} is neither a model builder "
                                 f"({', '.join(builder_names())}) nor a trained student's "
                                 "directory (a path with a /)")
        for i, r in enumerate(self.prune_ratios):
            if not 0.0 <= r < 1.0:
                raise ValueError(f"prune_ratios.{i}: {r} is not in [0, 1)")


class Recipe(_Strict):
    """A whole recipe. Stages run in order: data, teacher, baselines, students (distillation),
    prune, quantize, export, benchmark, report; gates are checked at the end."""

    name: str = "recipe"
    seed: int = 0
    jobs: int = Field(1, ge=1, description="trainings run at once (worker processes) in the "
                      "teacher, baselines and students stages; each gets an equal share of the "
                      "CPU cores unless its train.threads says otherwise")
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: ModelSpec = Field(default_factory=ModelSpec)
    baselines: list[ModelSpec] = Field(default_factory=list)
    students: list[StudentSpec] = Field(default_factory=list)
    prune: list[PruneSpec] = Field(default_factory=list)
    quantize: list[QuantizeSpec] = Field(default_factory=list)
    export: ExportSpec | None = None
    benchmark: BenchmarkSpec | None = None
    search: SearchSpec | None = None
    gates: GateSpec = Field(default_factory=GateSpec)
    evaluate: EvalSpec = Field(default_factory=EvalSpec)

    def model_post_init(self, __context: Any) -> None:
        labels = [self.teacher.label] + [b.label for b in self.baselines + self.students]
        known = set(labels)
        for section, jobs in (("prune", self.prune), ("quantize", self.quantize)):
            for i, job in enumerate(jobs):
                if job.model not in known:
                    raise ValueError(f"{section}.{i}.model: {job.model!r} is not a model made "
                                     f"earlier; known: {', '.join(sorted(known))}")
                known.add(job.name)
                labels.append(job.name)
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        for where, names in (("export.models", (self.export.models or []) if self.export else []),
                             ("gates.min_retention", list(self.gates.min_retention))):
            for name in names:
                if name not in known:
                    raise ValueError(f"{where}: {name!r} is not a model of this recipe; "
                                     f"known: {', '.join(sorted(known))}")
        picked = self.benchmark.models if self.benchmark else None
        for name in picked or []:  # a model's label or an exported file's, <label>.<kind>
            if base_label(name) not in known:
                raise ValueError(f"benchmark.models: {name!r} is not a model of this recipe or "
                                 f"an export of one; known: {', '.join(sorted(known))}")
        if picked is not None and self.teacher.label not in map(base_label, picked):
            raise ValueError(f"benchmark.models: needs the teacher ({self.teacher.label!r}) or "
                             f"one of its exports, for the ratios")


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw recipe dict.

    A numeric path component indexes a list (``baselines.0.train.epochs=3``).
    """
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"--set {item!r}: empty key")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"--set {key}: {where} is not an index of the list")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise RecipeError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError(f"--set {key}: {last} is not an index of the list")
            node[int(last)] = parse_value(value)
        elif isinstance(node, dict):
            node[last] = parse_value(value)
        else:
            raise RecipeError(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping")
    return raw


def _inject_seed(raw: dict) -> None:
    """Use the recipe's ``seed`` for every model whose ``train.seed`` is not given."""
    seed = raw.get("seed", 0)
    if "teacher" not in raw:
        raw["teacher"] = {}  # the default teacher gets the recipe seed too
    specs = [raw.get("teacher")]
    specs += list(raw.get("baselines") or []) + list(raw.get("students") or [])
    specs += list(raw.get("prune") or [])
    for spec in specs:
        if isinstance(spec, dict):
            train = spec.setdefault("train", {})
            if isinstance(train, dict):
                train.setdefault("seed", seed)


_PROTOCOL_KEYS = ("mask_history", "mask_scope", "ties")


def _inject_protocol(raw: dict) -> None:
    """Every training of the recipe validates with the recipe's ``evaluate`` protocol (history
    masking and tie policy), unless its ``train`` block sets its own."""
    ev = raw.get("evaluate") if isinstance(raw.get("evaluate"), dict) else {}
    proto = {k: ev[k] for k in _PROTOCOL_KEYS if k in ev}
    if not proto:
        return
    specs = [raw.get("teacher")] + list(raw.get("baselines") or []) + list(raw.get("students") or [])
    trains = [s.setdefault("train", {}) for s in specs + list(raw.get("prune") or [])
              if isinstance(s, dict)]  # fmt: skip
    search = raw.get("search")
    if isinstance(search, dict):  # blocks it gives (absent ones keep their own defaults)
        trains += [search.get("train"), search.get("prune_train")]
    for train in trains:
        if isinstance(train, dict):
            for k, v in proto.items():
                train.setdefault(k, v)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: ``source: key.path: message`` for the first error (and a count of the rest)."""
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(x) for x in first["loc"] if x not in ("function-after", "tagged-union"))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key"
    more = f" (and {len(errs) - 1} more errors)" if len(errs) > 1 else ""
    return f"{source}: {loc or '<root>'}: {msg}{more}"


def parse_recipe(raw: Any, source: str = "<recipe>", overrides: tuple[str, ...] = ()) -> Recipe:
    """Validate a raw recipe mapping (after applying overrides).

    Raises:
        RecipeError: The first invalid key, as ``source: key.path: message``.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides))
    _inject_seed(raw)
    _inject_protocol(raw)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source)) from None


def load_recipe(path: str | Path, overrides: tuple[str, ...] = ()) -> Recipe:
    """Read and validate a YAML recipe file.

    Raises:
        RecipeError: Missing file, YAML syntax error (with its line), or an invalid key.
    """
    p = Path(path)
    if p.is_dir():
        raise RecipeError(f"{p}: is a directory, expected a recipe file")
    if not p.is_file():
        raise RecipeError(f"{p}: no such recipe file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{p}{line}: invalid YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{p}: not a text file: {exc}") from None
    return parse_recipe(raw, str(p), overrides)
