"""Latency done right: warm-up, rotated real inputs, a time budget, percentiles and throughput.

Every timed call is synchronous: CPU backends return host arrays, GPU backends are followed by
``torch.cuda.synchronize()`` inside the timed region, so a percentile is the wall time a caller
waits for one batch (inputs already resident where the backend reads them).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from recshrink.export.onnx import trim_for_graph


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Matches ``numpy.percentile(..., method="linear")``.
    """
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    pos = (n - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo))


def summarize(samples_us: Sequence[float]) -> dict:
    """``{p50, p90, p99, mean, min, max, n}`` of latencies in microseconds."""
    s = sorted(float(x) for x in samples_us)
    return {"p50": round(percentile(s, 50), 2), "p90": round(percentile(s, 90), 2),
            "p99": round(percentile(s, 99), 2), "mean": round(sum(s) / len(s), 2),
            "min": round(s[0], 2), "max": round(s[-1], 2), "n": len(s)}  # fmt: skip


def throughput(batch: int, stats: dict) -> float:
    """Users per second at ``batch`` from the mean latency (µs) of a timed loop."""
    return round(batch / (stats["mean"] * 1e-6), 1) if stats["mean"] > 0 else float("inf")


def time_calls(
    fn: Callable[[object], object],
    inputs: Sequence[object],
    *,
    warmup: int = 10,
    min_iters: int = 30,
    max_iters: int = 5000,
    budget_s: float = 2.0,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict:
    """Time ``fn`` on ``inputs`` in rotation until ``budget_s`` has passed (at least ``min_iters``).

    Args:
        fn: One synchronous call on one prepared input.
        inputs: Prepared inputs (distinct real batches), used round-robin.
        warmup: Untimed calls first (at least one per input shape is advisable).
        min_iters: Fewest timed calls, whatever the budget.
        max_iters: Most timed calls.
        budget_s: Time budget of the timed loop.
        sync: Called after ``fn`` inside the timed region (e.g. ``torch.cuda.synchronize``).
        clock: Nanosecond clock (a fake one in tests).

    Returns:
        :func:`summarize` of the per-call latencies in microseconds.
    """
    if not inputs:
        raise ValueError("no inputs to time")
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
        if sync:
            sync()
    samples: list[float] = []
    start = clock()
    i = 0
    while i < max_iters and (i < min_iters or clock() - start < budget_s * 1e9):
        x = inputs[i % len(inputs)]
        t0 = clock()
        fn(x)
        if sync:
            sync()
        samples.append((clock() - t0) / 1e3)
        i += 1
    return summarize(samples)


class PeakRSS:
    """Peak resident-memory increase of this process while the block runs (sampled, Linux).

    ``with PeakRSS() as m: ...; m.increase_bytes``.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.increase_bytes = 0
        self._stop = threading.Event()

    @staticmethod
    def rss_bytes() -> int:
        try:
            fields = Path("/proc/self/statm").read_text().split()
            return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            import resource  # not on every platform

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._base = self.rss_bytes()
        self._peak = self._base
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self.rss_bytes())
        self.increase_bytes = int(self._peak - self._base)


def input_batches(histories: np.ndarray, batch: int, count: int = 8, seed: int = 0,
                  fixed_len: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """``count`` distinct batches of real histories (rows drawn at random, with replacement
    when there are fewer users than ``batch``), each trimmed to its longest history (or padded
    to ``fixed_len`` for fixed-shape backends), int64 and contiguous."""
    rng = np.random.default_rng(seed)
    n = len(histories)
    out = []
    for _ in range(count):
        rows = rng.choice(n, size=batch, replace=n < batch)
        out.append(trim_for_graph(np.asarray(histories[rows]), fixed_len))
    return out
