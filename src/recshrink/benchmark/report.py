"""The benchmark report: JSON, a Markdown page a person reads first, and two plots."""

from __future__ import annotations

from pathlib import Path

from recshrink.fsutil import atomic_path, atomic_write_text, write_json


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or an empty cell when it was not measured."""
    return "" if value is None else format(value, spec)


def teacher_fastest(report: dict, batch: str) -> tuple[float, str, str] | None:
    """``(p50, label, backend)``: the teacher's fastest measurement at ``batch`` over its own
    entry and its exported files (labels whose part before the first "." is the teacher's)."""
    dev = report["settings"]["device"]
    cands = [(v[batch]["p50"], label, b) for label, e in report["models"].items()
             if label.split(".")[0] == report["teacher"]
             for b, v in e["latency_us"].get(dev, {}).items() if batch in v]  # fmt: skip
    return min(cands) if cands else None


def markdown(report: dict) -> str:
    """``report.md``: one row per model and backend, latency by batch size, then speed-ups
    against the teacher's fastest backend and against the teacher on the same backend."""
    dev = report["settings"]["device"]
    m = report["machine"]
    top = str(max(report["settings"]["batches"]))
    ref1 = teacher_fastest(report, "1")
    lines = [
        f"# Benchmark ({dev})", "",
        f"Machine: {m.get('gpu') or m.get('processor')} · {m.get('platform')} · torch "
        f"{m.get('torch')} · threads: {m.get('threads')}. Teacher: `{report['teacher']}`. "
        f"Inputs: {report['settings']['inputs']}; {report['settings']['io']}.", "",
        "| model | backend | size | NDCG@10 | F1@10 | retention (95% CI) | fidelity@10 | "
        "p50@1 (µs) | "
        f"p99@1 (µs) | users/s@{top} | speed-up p50@1 vs teacher's fastest |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for label, e in report["models"].items():
        met = e.get("metrics", {})
        ret = e.get("vs_teacher", {}).get("ndcg@10")
        ci = e.get("vs_teacher", {}).get("ndcg@10_ci")
        ret_cell = "" if ret is None else f"{ret:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
        for backend, lat in e["latency_us"].get(dev, {}).items():
            one = lat.get("1", {})
            thr = e["throughput"][dev][backend].get(top)
            up = ref1[0] / one["p50"] if ref1 and one.get("p50") else None
            lines.append(
                f"| {label} | {backend} | {_fmt_bytes(e['bytes'])} | "
                f"{_num(met.get('ndcg@10'), '.4f')} | {_num(met.get('f1@10'), '.4f')} | "
                f"{ret_cell} | {e.get('fidelity@10', '')} | "
                f"{_num(one.get('p50'), '.0f')} | {_num(one.get('p99'), '.0f')} | "
                f"{_num(thr, ',.0f')} | {_num(up, '.2f')} |"
            )  # fmt: skip
    if ref1:
        lines += ["", f"Speed-up p50@1 vs teacher's fastest: the row's p50 at batch 1 against "
                      f"the teacher's fastest in this run, `{ref1[1]}` on {ref1[2]} "
                      f"({ref1[0]:.0f} µs)."]  # fmt: skip
    batches = report["settings"]["batches"]
    lines += ["", "## p50 latency (µs) by batch size", "",
              "| model | backend | " + " | ".join(f"B={b}" for b in batches) + " |",
              "|---|---|" + "---|" * len(batches)]  # fmt: skip
    for label, e in report["models"].items():
        for backend, lat in e["latency_us"].get(dev, {}).items():
            cells = [f"{lat[str(b)]['p50']:.0f}" if str(b) in lat else "" for b in batches]
            lines.append(f"| {label} | {backend} | " + " | ".join(cells) + " |")
    refs = [(b, teacher_fastest(report, str(b))) for b in batches]
    lines += ["", "## Ratios to the teacher (fastest backend vs the teacher's fastest backend, "
              "same run)", "",
              "Each model's fastest backend at each batch size against the teacher's fastest "
              "(over the teacher and its exported files); users/s likewise best vs best. "
              "Teacher's fastest: " + "; ".join(
                  f"B={b}: `{r[1]}` on {r[2]} ({r[0]:.0f} µs)" for b, r in refs if r) + ".", "",
              "| model | size | NDCG@10 | F1@10 | fastest backend | " +
              " | ".join(f"speed-up p50@{b}" for b in batches) + " | " +
              " | ".join(f"users/s x@{b}" for b in batches) + " |",
              "|---|---|---|---|---|" + "---|" * (2 * len(batches))]  # fmt: skip
    for label, e in report["models"].items():
        r = e.get("vs_teacher", {})
        fastest = list(dict.fromkeys(r[f"model_backend@{b}"] for b in batches
                                     if f"model_backend@{b}" in r))  # fmt: skip
        cells = [f"{r.get(f'speedup_p50@{b}', '')}" for b in batches]
        cells += [f"{r.get(f'throughput_x@{b}', '')}" for b in batches]
        lines.append(f"| {label} | {r.get('size', '')} | {r.get('ndcg@10', '')} | "
                     f"{r.get('f1@10', '')} | {' / '.join(fastest)} | " + " | ".join(cells) + " |")
    rows = [(label, backend, cell) for label, e in report["models"].items()
            for backend, cell in e.get("vs_teacher", {}).get("same_backend", {}).items()]
    if rows:
        lines += ["", "## Speed-up vs the teacher on the same backend", "",
                  "p50 speed-up against the teacher on the row's backend (the teacher's file of "
                  "the same kind, e.g. `teacher.onnx` for `student.onnx`, when it ran there).", "",
                  "| model | backend | teacher | " +
                  " | ".join(f"speed-up p50@{b}" for b in batches) + " |",
                  "|---|---|---|" + "---|" * len(batches)]  # fmt: skip
        for label, backend, cell in rows:
            who = list(dict.fromkeys(cell[f"teacher@{b}"] for b in batches
                                     if f"teacher@{b}" in cell))  # fmt: skip
            cells = [f"{cell.get(f'speedup_p50@{b}', '')}" for b in batches]
            lines.append(f"| {label} | {backend} | {', '.join(who)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def search_markdown(search: dict, level: int = 1) -> str:
    """The accuracy-gated search as Markdown: the verdict, then every trial with its validation
    metrics (which chose it), its test metrics (reported only) and its cost."""
    head = "#" * level
    lines = [f"{head} Search", "", search["message"], "",
             f"Chosen on validation: a trial meets the constraint when its validation "
             f"{search['metric']} is at least {search['floor']:.4f} (the teacher's validation "
             f"{search['metric']} {search.get('teacher_valid', float('nan')):.4f} x "
             f"(1 - {search['max_drop']})). Test numbers are reported, never used to choose "
             f"(teacher's test {search['metric']}: {search.get('teacher_test', float('nan')):.4f}).",
             "",
             "| trial | valid NDCG@10 | valid F1@10 | valid drop | test NDCG@10 | test F1@10 | "
             "test drop | p50 (µs) | bytes | meets |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in search["trials"]:
        v, te = t.get("valid", {}), t.get("test", {})
        lines.append(f"| {t['id']} | {_num(v.get('ndcg@10'), '.4f')} | {_num(v.get('f1@10'), '.4f')} "
                     f"| {t.get('drop', '')} | {_num(te.get('ndcg@10'), '.4f')} | "
                     f"{_num(te.get('f1@10'), '.4f')} | {t.get('test_drop', '')} | "
                     f"{_num(t.get('p50'), '.0f') or t.get('error', '')} | {t.get('bytes', '')} | "
                     f"{t.get('meets', '')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (lower latency, higher quality), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def label_groups(xy: list[tuple[float, float]], tol: float = 0.04) -> list[list[int]]:
    """Indices of points grouped so each group gets one marker label: points within ``tol`` of
    each other in both coordinates (axes fractions), chained, share a group. Groups are in
    order of their first point; members ascending."""
    parent = list(range(len(xy)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(xy)):
        for j in range(i):
            if abs(xy[i][0] - xy[j][0]) < tol and abs(xy[i][1] - xy[j][1]) < tol:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(xy)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def marker_labels(xy: list[tuple[float, float]], tol: float = 0.04
                  ) -> list[tuple[str, float, float]]:  # fmt: skip
    """``(text, x, y)`` per label group (see :func:`label_groups`): the 1-based numbers of its
    points joined by ","; placed at the group's centre (same coordinates as ``xy``)."""
    out = []
    for g in label_groups(xy, tol):
        x = sum(xy[i][0] for i in g) / len(g)
        y = sum(xy[i][1] for i in g) / len(g)
        out.append((",".join(str(i + 1) for i in g), x, y))
    return out


def pareto_figure(report: dict, batch: str = "1"):
    """The Pareto figure of :func:`plots` (a matplotlib Figure), or None with nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = report["settings"]["device"]
    pts, labels, sizes = [], [], []
    for label, e in report["models"].items():
        if "metrics" not in e:
            continue
        for backend, lat in e["latency_us"].get(dev, {}).items():
            if batch in lat:
                pts.append((lat[batch]["p50"], e["metrics"]["ndcg@10"]))
                labels.append(f"{label} · {backend}")
                sizes.append(e["bytes"])
    for label, trial in report.get("trials", {}).items():
        if "p50" in trial and "ndcg@10" in trial:
            pts.append((trial["p50"], trial["ndcg@10"]))
            labels.append(f"trial {label}")
            sizes.append(trial.get("bytes", 1))
    if not pts:
        return None
    # numbered markers with a legend beside the axes; markers that overlap share one label
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    smax = max(sizes)
    cmap = plt.get_cmap("tab20")
    front = set(pareto_front(pts))
    for i, ((x, y), text, size) in enumerate(zip(pts, labels, sizes)):
        ax.scatter([x], [y], s=40 + 600 * size / smax, alpha=0.6, color=cmap(i % 20),
                   edgecolors="k", linewidths=1.8 if i in front else 0.6,
                   label=f"{i + 1}: {text} ({_fmt_bytes(size)})")  # fmt: skip
    floor = report.get("quality_floor")  # the search's NDCG@10 constraint, if any
    if floor is not None:
        ax.axhline(floor, color="firebrick", ls=":", lw=1.2,
                   label=f"search floor: NDCG@10 >= {floor:.4f} (max_drop)")  # fmt: skip
    order = pareto_front(pts)
    ax.step([pts[i][0] for i in order], [pts[i][1] for i in order], "k--", lw=1,
            where="post")  # fmt: skip
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"p50 latency at batch {batch} (µs, log scale, {dev})")
    ax.set_ylabel(f"NDCG@10 ({report.get('quality_split', 'test')}, full ranking)")
    ax.set_title("Latency vs ranking quality: marker area = artifact size, "
                 "bold edge + dashed line = Pareto front", fontsize=10)  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=0.4,
              frameon=False)  # fmt: skip
    fig.tight_layout()
    # labels placed in axes fractions (log x as drawn), once the limits and layout are final
    ax.get_xlim(), ax.get_ylim()
    from matplotlib.patheffects import withStroke

    to_axes = ax.transData + ax.transAxes.inverted()
    for text, x, y in marker_labels([tuple(to_axes.transform(pt)) for pt in pts]):
        ax.annotate(text, (x, y), xycoords="axes fraction", ha="center", va="center",
                    fontsize=8, weight="bold",
                    path_effects=[withStroke(linewidth=2.5, foreground="white")])  # fmt: skip
    return fig


def plots(report: dict, out_dir: Path, batch: str = "1") -> list[Path]:
    """``pareto.png`` (p50 at ``batch`` vs NDCG@10, marker area = artifact size, front drawn,
    and the search's quality floor when ``report["quality_floor"]`` is set) and
    ``latency_vs_batch.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    dev = report["settings"]["device"]
    written = []
    fig = pareto_figure(report, batch)
    if fig is not None:
        written.append(_save(fig, out_dir / "pareto.png"))
        plt.close(fig)
    if not any(e["latency_us"].get(dev) for e in report["models"].values()):
        return written
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    batches = report["settings"]["batches"]
    # one colour per model, one line style and marker per backend: 15+ lines stay apart
    cmap = plt.get_cmap("tab20")
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"),
              ((0, (1, 3)), "P")]  # fmt: skip
    backends = sorted({b for e in report["models"].values() for b in e["latency_us"].get(dev, {})})
    for i, (label, e) in enumerate(report["models"].items()):
        for backend, lat in e["latency_us"].get(dev, {}).items():
            xs = [b for b in batches if str(b) in lat]
            ls, mk = styles[backends.index(backend) % len(styles)]
            ax.plot(xs, [lat[str(b)]["p50"] for b in xs], ls=ls, marker=mk, color=cmap(i % 20),
                    label=f"{label} · {backend}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("batch size (users)")
    ax.set_ylabel("p50 latency per batch (µs)")
    ax.set_title(f"Latency vs batch size ({dev})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency_vs_batch.png"))
    plt.close(fig)
    return written


def _plain_log_ticks(axis) -> None:
    """Ticks of a log axis at 1, 2 and 5 per decade, written as plain numbers (no 3x10^2)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown(report))
    return [out / "report.json", out / "report.md", *plots(report, out)]


def write_run_markdown(bench: dict, search: dict | None, out_dir: Path) -> Path:
    """A recipe run's report.md: the benchmark's tables, then the search's trial table."""
    text = markdown(bench)
    if search:
        text += "\n" + search_markdown(search, level=2)
    path = Path(out_dir) / "report.md"
    atomic_write_text(path, text)
    return path
