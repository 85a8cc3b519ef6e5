"""The recipe runner: sequences the stages (data -> teacher, baselines, students -> prune ->
quantize -> export -> search -> benchmark) and caches each model behind a manifest.

Each stage is one entry function of :mod:`recshrink.api`; this package only orders them,
schedules the trainings (:mod:`recshrink.pipeline.jobs`), checks gates and writes report.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

try:
    import resource  # POSIX only
except ImportError:  # pragma: no cover - Windows
    resource = None

from recshrink.benchmark.report import plots, search_markdown, write_run_markdown
from recshrink.benchmark.run import run_benchmark
from recshrink.entries import dataset_entry, machine_entry, protocol_entry
from recshrink.errors import RecshrinkError
from recshrink.fsutil import atomic_write_text, write_json
from recshrink.models.base import SeqRecModel
from recshrink.pipeline.compress import export_stage, prune_stage, quantize_stage
from recshrink.pipeline.gates import check_gates
from recshrink.pipeline.jobs import train_parallel
from recshrink.pipeline.manifests import STAGES, Manifests
from recshrink.pipeline.search import run_search
from recshrink.pipeline.training import STAGE_OF, TrainState, finish_job, model_dirs, train_job
from recshrink.recipe import Recipe, load_recipe
from recshrink.version import __version__

__all__ = ["STAGES", "Manifests", "run", "run_recipe"]


def peak_rss() -> dict:
    """Peak resident memory so far (bytes): this process, and its finished worker processes
    (the largest one). Empty where the platform has no ``getrusage``."""
    if resource is None:
        return {}
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return {"process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale}


def run(recipe: Recipe | str | Path, out: str | Path, *, overrides: tuple[str, ...] = (),
        progress: bool = False, from_stage: str | None = None) -> dict:  # fmt: skip
    """Run a recipe end to end: validated before any work, resumable, report.json in ``out``.

    Args:
        recipe: A :class:`recshrink.recipe.Recipe` or the path of a YAML recipe.
        out: The run directory (models, exports, report.json, report.md, plots).
        overrides: ``KEY.PATH=VALUE`` overrides of a recipe file (as the CLI's ``--set``).
        progress: Print progress.
        from_stage: Redo this stage and every later one (one of :data:`STAGES`).

    Returns:
        The report (report.json's content).

    Example:
        >>> report = recshrink.run("recipes/quickstart.yaml", "runs/quickstart")
        >>> report["models"]["gru_student"]["valid_retention"]
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, tuple(overrides))
    return run_recipe(recipe, out, progress=progress, from_stage=from_stage)


def run_recipe(recipe: Recipe, out_dir: str | Path, progress: bool = True,
               from_stage: str | None = None) -> dict:  # fmt: skip
    """Run a validated recipe end to end and write ``OUT/report.json``.

    Every model directory gets a ``manifest.json``; re-running the recipe skips models whose
    manifest matches and resumes an interrupted training from its last finished epoch.
    ``from_stage`` redoes that stage and every later one.

    Returns:
        The report.
    """
    for i, name in enumerate(recipe.search.students if recipe.search else []):
        if "/" in name and not (Path(name) / "config.json").is_file():
            raise RecshrinkError(f"search.students.{i}: {name}: not a trained model directory")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = recipe.data.load()
    split = data.split(recipe.data.max_len, recipe.data.shift_window)
    report = {
        "recshrink_version": __version__,
        "recipe": recipe.name,
        "seed": recipe.seed,
        "machine": machine_entry(recipe.teacher.train.device),
        "dataset": dataset_entry(data),
        "protocol": protocol_entry(recipe.evaluate.kwargs(), data, split, recipe.data.max_len,
                                   recipe.data.shift_window),
        "teacher": recipe.teacher.label,
        "models": {},
    }
    dirs = model_dirs(recipe, out)
    jobs = [("teacher", recipe.teacher), *(("baseline", b) for b in recipe.baselines),
            *(("student", s) for s in recipe.students)]  # fmt: skip
    jobs = [(role, spec, dirs[spec.label]) for role, spec in jobs]
    made: dict[str, tuple[SeqRecModel, Path, list[dict]]] = {}
    manifests = Manifests(data.fingerprint(), from_stage, recipe.evaluate.model_dump(mode="json"))
    keys: dict[str, str] = {}
    hits: dict[str, dict | None] = {}
    for role, spec, where in jobs:
        parents = (keys[recipe.teacher.label],) if role == "student" else ()
        keys[spec.label] = manifests.key(STAGE_OF[role], spec.model_dump(mode="json"), *parents)
        hits[spec.label] = manifests.hit(STAGE_OF[role], where, keys[spec.label])
    state = TrainState()
    memory: dict[str, dict] = {}  # peak RSS after each stage (monotone: the peak up to it)
    report["peak_rss_bytes"] = memory

    def finish(role: str, spec, where: Path, trained: tuple | None) -> None:
        finish_job(recipe, role, spec, where, trained, hits[spec.label], keys[spec.label],
                   data, split, out, report, made, manifests, state)  # fmt: skip

    todo = [(role, spec, where) for role, spec, where in jobs if not hits[spec.label]]
    prunes = []
    for job in recipe.prune:  # the prune stage's keys (used again by prune_stage)
        key = manifests.key("prune", job.model_dump(mode="json"), keys[job.model])
        keys[job.name] = key
        if not manifests.hit("prune", dirs[job.name], key):
            prunes.append(("prune", job, dirs[job.name]))
    if recipe.jobs > 1 and len(todo) + len(prunes) > 1:
        train_parallel(recipe, jobs, todo, out, finish, progress, prunes)
    else:
        for role, spec, where in jobs:
            trained = None
            if not hits[spec.label]:
                t_job = time.perf_counter()
                trained = (*train_job(recipe, role, spec, where, data, split, out,
                                      state.teacher, progress),
                           time.perf_counter() - t_job)  # fmt: skip
            finish(role, spec, where, trained)
    memory["train"] = peak_rss()
    teacher = state.teacher
    prune_stage(recipe, data, split, out, report, made, state, progress, manifests, keys)
    quantize_stage(recipe, data, split, out, report, made, state, manifests, keys)
    memory["compress"] = peak_rss()
    exported = export_stage(recipe, data, split, out, report, made)
    memory["export"] = peak_rss()
    trials = _search_stage(recipe, data, split, out, report, teacher, progress, manifests, keys)
    if recipe.benchmark:
        _benchmark_stage(recipe, data, split, out, report, made, exported, trials, progress)
        memory["benchmark"] = peak_rss()
    report["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "report.json", report)
    check_gates(recipe, report)
    return report


def _search_stage(recipe: Recipe, data, split, out: Path, report: dict, teacher: SeqRecModel,
                  progress: bool, manifests: Manifests, keys: dict[str, str]) -> dict:  # fmt: skip
    """The accuracy-gated search, if the recipe has one; returns the trials the benchmark's
    plots show (``{id: {p50, ndcg@10, bytes}}``)."""
    if not recipe.search:
        return {}
    res = run_search(recipe.search, recipe, data, split, out, teacher,
                     report["models"][recipe.teacher.label], manifests,
                     keys[recipe.teacher.label], progress)  # fmt: skip
    report["search"] = res
    write_json(out / "report.json", report)
    # beside the benchmark's models (test numbers) trials show their test NDCG@10; alone, the
    # validation NDCG@10 that chose them, with the floor they were held to
    which = "test" if recipe.benchmark else "valid"
    trials = {t["id"]: {"p50": t["p50"], "ndcg@10": t[which]["ndcg@10"], "bytes": t["bytes"]}
              for t in res["trials"] if "p50" in t and res.get("objective")}  # fmt: skip
    floor = res["floor"] if res.get("metric") == "ndcg@10" and which == "valid" else None
    if not recipe.benchmark:
        atomic_write_text(out / "report.md", search_markdown(res))
        if trials:
            plots({"settings": {"device": "cpu", "batches": [recipe.search.batch]},
                   "models": {}, "trials": trials, "quality_floor": floor,
                   "quality_split": "valid"}, out, batch=str(recipe.search.batch))  # fmt: skip
    return trials


def _benchmark_stage(recipe: Recipe, data, split, out: Path, report: dict, made: dict,
                     exported: list, trials: dict, progress: bool) -> None:  # fmt: skip
    """Every model and exported file side by side; the numbers go into report.json beside each
    model, benchmark.json, report.md and the plots."""
    b, ev = recipe.benchmark, recipe.evaluate
    entries = [(name, where) for name, (_, where, _) in made.items()] + exported
    if b.models is not None:
        have = dict(entries)
        missing = [n for n in b.models if n not in have]
        if missing:
            raise RecshrinkError(f"benchmark.models: {missing[0]!r} was not made or exported by "
                                 f"this recipe; made: {', '.join(have)}")
        entries = [(n, have[n]) for n in b.models]
    bench = run_benchmark(entries, data, split, backends=tuple(b.backends), device=b.device,
                          batches=tuple(b.batches), threads=b.threads, budget_s=b.budget_s,
                          teacher=recipe.teacher.label, ks=ev.ks, progress=progress,
                          mask_scope=ev.mask_scope, ties=ev.ties, valid=b.valid)  # fmt: skip
    bench["trials"] = trials
    write_json(out / "benchmark.json", bench)
    write_run_markdown(bench, report.get("search"), out)
    plots(bench, out)
    for name, e in bench["models"].items():
        target = report["models"].get(name)
        if target is None:  # an exported file: attach to its model's export block
            base = name.split(".")[0]
            target = report["models"][base].setdefault("export", {}).setdefault("benchmark", {})
            target = target.setdefault(name, {})
        for key in ("latency_us", "throughput", "memory", "vs_teacher"):
            if key in e:
                target[key] = e[key]
    report["benchmark"] = {"settings": bench["settings"], "machine": bench["machine"]}
