"""Training jobs in worker processes: the teacher beside the baselines, students as soon as the
teacher is scored, prunings as soon as their parent is trained."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from recshrink.api import prune
from recshrink.models.io import load_model
from recshrink.pipeline.training import model_dirs, train_job
from recshrink.recipe import Recipe

_ORDER = {"teacher": 0, "student": 1, "baseline": 2, "prune": 3}


def _worker_init(stop) -> None:
    """In a training worker: exit when the recipe's process dies or sets ``stop`` (an error or
    an interrupt there), so no orphan keeps writing checkpoints that a re-run resumes from."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent or stop.is_set():
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _worker_train(recipe: Recipe, role: str, label: str, where: str, out: str,
                  threads: int) -> tuple[dict, float]:  # fmt: skip
    """A training worker's job: one model into ``where``; returns its summary and seconds."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    dirs = model_dirs(recipe, Path(out))
    data = recipe.data.load()
    split = data.split(recipe.data.max_len, recipe.data.shift_window)
    if role == "prune":  # the pruning and its recoveries; the pipeline's prune stage resumes them
        job = next(j for j in recipe.prune if j.name == label)
        train = job.train if job.train.threads else dataclasses.replace(job.train, threads=threads)
        res = prune(dirs[job.model], data, out=where, config=job.config, train=train,
                    kd=job.distill, split=split, parent_label=job.model,
                    cache_dir=Path(out) / "cache")  # fmt: skip
        return res.summary, time.perf_counter() - t0
    specs = {s.label: s for s in [recipe.teacher, *recipe.baselines, *recipe.students]}
    spec = specs[label]
    if spec.train.threads is None:
        spec = spec.model_copy(update={"train": dataclasses.replace(spec.train, threads=threads)})
    teacher = load_model(dirs[recipe.teacher.label])[0] if role == "student" else None
    _, summary = train_job(recipe, role, spec, Path(where), data, split, Path(out), teacher,
                           progress=False)  # fmt: skip
    return summary, time.perf_counter() - t0


def _label(job: tuple) -> str:
    return job[1].name if job[0] == "prune" else job[1].label


def train_parallel(recipe: Recipe, jobs: list, todo: list, out: Path, finish,
                   progress: bool, prunes: list | None = None) -> None:  # fmt: skip
    """Train ``todo`` in ``recipe.jobs`` worker processes, scoring results in recipe order.

    The teacher and the baselines start at once, the students as soon as the teacher is scored,
    each of ``prunes`` (prune jobs without a matching manifest) as soon as its parent is trained;
    a free worker takes the teacher first, then a student, a baseline, a pruning. Each worker
    uses the spec's ``train.threads`` or an equal share of the CPU cores. Prunings are only run
    here (their work directories filled); the prune stage then resumes and scores them.
    """
    prunes = prunes or []
    workers = min(recipe.jobs, len(todo) + len(prunes))
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue = sorted(todo + prunes, key=lambda j: _ORDER[j[0]])  # stable: recipe order in a role
    done: dict[str, tuple[dict, float]] = {}
    running: dict = {}
    pending = {_label(j) for j in queue}
    teacher_ready = not any(role == "teacher" for role, _, _ in todo)

    def ready(job: tuple) -> bool:
        if job[0] == "student":
            return teacher_ready
        if job[0] == "prune":  # its parent trained, here or earlier
            return job[1].model not in pending or job[1].model in done
        return True

    def say(msg: str) -> None:
        if progress:
            print(f"[jobs] {msg}", file=sys.stderr, flush=True)

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(stop,))  # fmt: skip
    try:
        nxt = 0
        while nxt < len(jobs) or running or queue:
            while len(running) < workers:  # first keep the workers busy
                job = next((j for j in queue if ready(j)), None)
                if job is None:
                    break
                queue.remove(job)
                threads_of = job[1].train.threads or threads
                say(f"{_label(job)}: {job[0]} started ({threads_of} thread(s))")
                fut = pool.submit(_worker_train, recipe, job[0], _label(job), str(job[2]),
                                  str(out), threads_of)  # fmt: skip
                running[fut] = job
            if nxt < len(jobs):  # then score finished models, in recipe order
                role, spec, where = jobs[nxt]
                if spec.label in done or spec.label not in pending:
                    trained = None
                    if spec.label in done:
                        summary, seconds = done[spec.label]
                        trained = (load_model(where)[0], summary, seconds)
                    finish(role, spec, where, trained)
                    teacher_ready = teacher_ready or role == "teacher"
                    nxt += 1
                    continue
            if not running:
                raise RuntimeError("job scheduler stalled")  # a bug, not a user error
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                summary, seconds = fut.result()  # a worker's error is raised here
                say(f"{_label(job)}: {job[0]} done in {seconds / 60:.1f} min")
                done[_label(job)] = (summary, seconds)
    except BaseException:  # an error or an interrupt: no worker keeps training
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
