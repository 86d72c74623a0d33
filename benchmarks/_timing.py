"""Timing helper for benchmarks/: warm-up, repeats, median, peak memory, and side-by-side ratio tables.

Every comparison is measured in one process, one case right after the other, and printed as a ratio to a named
baseline, so machine speed cancels out. Peak memory is the CUDA allocator's peak on a GPU; on a CPU it is the
growth of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before each case),
which is coarse (about 100 KB) but sees every allocator, torch's included.

Usage::

    from _timing import Case, compare
    compare("soft top-k, (64, 1024)", [Case("torch.topk", f0), Case("ours", f1)], baseline="torch.topk")
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Case", "Timing", "compare", "markdown_table", "measure"]


@dataclass
class Case:
    """A named callable to time (it should run the whole forward + backward being compared)."""

    name: str
    fn: Callable[[], object]


@dataclass
class Timing:
    name: str
    median_s: float
    q1_s: float
    q3_s: float
    repeats: int
    peak_bytes: int | None
    error: str | None = None


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(
    name: str, fn: Callable[[], object], *, warmup: int = 3, repeats: int = 15, max_seconds: float = 20.0
) -> Timing:
    """Time ``fn``: ``warmup`` untimed calls, then up to ``repeats`` timed calls (fewer if ``max_seconds`` runs out).

    An exception (out of memory, unsupported size) is recorded in ``Timing.error`` instead of aborting the table.
    """
    try:
        for _ in range(warmup):
            fn()
        _sync()
        gc.collect()
        base = torch.cuda.memory_allocated() if torch.cuda.is_available() else _rss_kb("VmRSS")
        _reset_peak()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats:
            t0 = time.perf_counter()
            fn()
            _sync()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > max_seconds and len(times) >= 3:
                break
        if torch.cuda.is_available():
            peak: int | None = torch.cuda.max_memory_allocated() - int(base or 0)
        else:
            hwm = _rss_kb("VmHWM")
            peak = None if hwm is None or base is None else max(hwm - base, 0) * 1024
    except Exception as e:  # a case that fails is reported, not fatal
        return Timing(name, float("nan"), float("nan"), float("nan"), 0, None, f"{type(e).__name__}: {e}")
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return Timing(name, statistics.median(times), q[0], q[2], len(times), peak)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return "-"


def markdown_table(title: str, timings: Sequence[Timing], baseline: str) -> str:
    """Rows: case, median time, ratio to ``baseline`` (>1 = slower than it), peak memory."""
    base = next((t for t in timings if t.name == baseline), None)
    lines = [f"**{title}**", "", f"| case | median | x {baseline} | peak mem |", "|---|---:|---:|---:|"]
    for t in timings:
        if t.error:
            lines.append(f"| {t.name} | failed: {t.error[:60]} | - | - |")
            continue
        ratio = t.median_s / base.median_s if base and not base.error else float("nan")
        lines.append(f"| {t.name} | {t.median_s * 1e3:.3f} ms | {ratio:.2f} | {_fmt_bytes(t.peak_bytes)} |")
    return "\n".join(lines)


def compare(title: str, cases: Sequence[Case], *, baseline: str, **kw: float) -> list[Timing]:
    """Measure ``cases`` one after the other in this process and print the ratio table."""
    timings = [measure(c.name, c.fn, **kw) for c in cases]  # type: ignore[arg-type]
    print(markdown_table(title, timings, baseline))
    print()
    return timings


def header() -> str:
    """One line describing the machine, to print above the tables."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()} threads"
    return f"torch {torch.__version__}, {dev}, {os.cpu_count()} cores"
