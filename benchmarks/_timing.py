"""Timing for benchmarks/: cases interleaved in one process, ratios to a baseline with their spread, JSON results.

Every script sets ``OMP_WAIT_POLICY=PASSIVE`` in ``os.environ`` before torch is imported (the OpenMP runtime reads
it once, when torch loads): with the default active waiting, idle OpenMP threads spin, and on a machine shared with
other jobs every multi-threaded op then stalls behind a descheduled spinner. The thread count is explicit too
(``--threads``, default 1).

How a table is timed (:meth:`Bench.compare`):

* every case runs in rounds, one block of calls per case per round, the order rotated from round to round, so a
  change of machine load hits every case alike;
* while timing, glibc keeps freed memory in its heap (``_keep_heap``): otherwise a large buffer is mapped fresh
  in some rounds and reused in others, and its page faults split a case's times into two modes;
* one call per case per round by default: back-to-back repeats of one call (``block_s`` > 0) keep its code and
  data in cache and favour the smallest cases, which a training loop, where a loss runs between model passes,
  does not;
* the clock is this process's CPU time (``time.process_time``) with one thread, which load from other processes
  moves less than the wall clock (memory-bound work still slows down when other jobs share the caches and memory
  bus: make the runs to commit on a quiet machine), and the wall clock with more threads (CPU time would then sum
  the threads' work);
* a case's figure is its median time over the baseline's median time; its spread is that of the case's
  per-round times divided by the baseline's median (interquartile range and min-max). Medians, not ratios paired
  within a round: a call can pay for what the call before it left behind (pages given back to the system, caches
  of other kernels), and a paired ratio turns such alternation into a spread of its own. Only the ratios are meant
  to carry over to another machine.

Results go to ``benchmarks/results/<name>.json`` with the command and the machine (CPU model, threads, OpenMP
wait policy, torch version, load average before and after); ``python -m kexue.report.perf_tables`` renders the
README and docs tables from those files.

Usage::

    import os
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch is imported
    from _timing import Bench, Case

    bench = Bench("example", "what this script times")
    bench.compare("t1", "soft top-k, (64, 1024)", [Case("torch.topk", f0), Case("ours", f1)], baseline="torch.topk")
    bench.target("t1_ours", "ours <= 10x torch.topk", table="t1", case="ours", limit=10.0)
    bench.save()
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["Bench", "Case", "Timing", "compare", "header", "markdown_table", "measure", "release_memory"]

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    """A named callable to time (it should run the whole forward + backward or step being compared)."""

    name: str
    fn: Callable[[], object]


@dataclass
class Timing:
    """One case of a table: median time per call and, against the baseline, the per-round ratios' summary."""

    name: str
    median_s: float
    q1_s: float
    q3_s: float
    repeats: int
    peak_bytes: int | None
    error: str | None = None
    ratios: list[float] = field(default_factory=list)  # per round: this case's time / the baseline's median
    times: list[float] = field(default_factory=list)  # per round: time per call

    def ratio_summary(self) -> dict[str, float] | None:
        if not self.ratios:
            return None
        r = sorted(self.ratios)
        q = statistics.quantiles(r, n=4) if len(r) >= 2 else [r[0]] * 3
        return {"median": statistics.median(r), "q1": q[0], "q3": q[2], "min": r[0], "max": r[-1]}


# --------------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=RESULTS.parent
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=RESULTS.parent
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def header() -> str:
    """One line describing the machine, to print above the tables."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_model()
    return (
        f"torch {torch.__version__}, {dev}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {_loadavg()}"
    )


# --------------------------------------------------------------------------------------------- memory


def _rss_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
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


def peak_memory(fn: Callable[[], object]) -> int | None:
    """Peak memory of one call: the CUDA allocator's peak on a GPU; on a CPU the growth of the process's peak
    resident set (``VmHWM``, reset through ``/proc/self/clear_refs``), coarse (about 100 KB) but it sees every
    allocator, torch's included."""
    _sync()
    gc.collect()
    base = torch.cuda.memory_allocated() if torch.cuda.is_available() else _rss_kb("VmRSS")
    _reset_peak()
    fn()
    _sync()
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated() - int(base or 0))
    hwm = _rss_kb("VmHWM")
    return None if hwm is None or base is None else max(hwm - base, 0) * 1024


# --------------------------------------------------------------------------------------------- timing


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the allocator is left as it is
        return None


def release_memory() -> None:
    """Hand the heap's free memory back to the system (glibc), inside a case that allocates gigabytes, so that the
    case after it does not run in the wreck of its heap. Charged to that case. (No ``gc.collect()``: a collection
    of the whole interpreter costs more than a small case.)"""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _keep_heap(keep: bool) -> bool:
    """glibc only: while ``keep``, freed memory stays in the heap instead of going back to the system.

    By default glibc maps a large buffer fresh and unmaps it on free, and adapts that threshold as it goes, so a
    case that allocates tens of MB pays its page faults in some rounds and not in others: its times split into
    two modes and the median jumps between them. Kept in the heap, every round reuses resident memory; the timing
    is the computation's. Restored (and the heap trimmed) before peak memory is measured. Returns whether it
    applied.
    """
    libc = _libc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters from malloc.h
    size = 1 << 30 if keep else 128 * 1024  # 128 KiB: glibc's default
    ok = bool(libc.mallopt(m_mmap_threshold, size)) and bool(libc.mallopt(m_trim_threshold, size))
    if not keep:
        libc.malloc_trim(0)
    return ok


def _clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


def interleave(
    cases: Sequence[Case],
    *,
    baseline: str | None = None,
    rounds: int = 1000,
    budget_s: float = 30.0,
    min_rounds: int = 7,
    block_s: float = 0.0,
    warmup: int = 2,
    clock: str = "cpu",
    memory: bool = False,
) -> list[Timing]:
    """Time ``cases`` in interleaved rounds and return one :class:`Timing` per case (see the module docstring).

    Stops after ``rounds`` rounds, or earlier once ``budget_s`` seconds have passed and ``min_rounds`` are done.
    A case that raises (out of memory, a peer that is not installed) is recorded with its error and left out.
    """
    tick = _clock(clock)
    errors: dict[str, str] = {}
    per_call: dict[str, float] = {}
    for c in cases:
        try:
            for _ in range(warmup):
                c.fn()
            _sync()
            t0 = tick()
            c.fn()
            _sync()
            per_call[c.name] = max(tick() - t0, 1e-7)
        except Exception as e:  # a case that fails is reported, not fatal
            errors[c.name] = f"{type(e).__name__}: {e}"
    live = [c for c in cases if c.name not in errors]
    peaks = {c.name: peak_memory(c.fn) for c in live} if memory else {}
    kept = _keep_heap(True)
    if kept:  # one untimed call each, so that the rounds start from memory the heap already holds
        for c in live:
            c.fn()
    inner = {c.name: max(1, math.ceil(block_s / per_call[c.name])) for c in live}
    times: dict[str, list[float]] = {c.name: [] for c in live}
    gc.collect()
    start = time.perf_counter()
    was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one case's block would be charged to that case alone
    try:
        for r in range(rounds):
            k = r % max(len(live), 1)
            order = live[k:] + live[:k]
            if r % 2:
                order = order[::-1]
            for c in order:
                n = inner[c.name]
                t0 = tick()
                for _ in range(n):
                    c.fn()
                _sync()
                times[c.name].append((tick() - t0) / n)
            if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
                break
    finally:
        if was_enabled:
            gc.enable()
        if kept:
            _keep_heap(False)
    base = times.get(baseline) if baseline else None
    out: list[Timing] = []
    for c in cases:
        if c.name in errors:
            out.append(Timing(c.name, float("nan"), float("nan"), float("nan"), 0, None, errors[c.name]))
            continue
        ts = times[c.name]
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        ratios = [t / statistics.median(base) for t in ts] if base else []
        out.append(Timing(c.name, statistics.median(ts), q[0], q[2], len(ts), peaks.get(c.name), None, ratios, ts))
    return out


def measure(
    name: str, fn: Callable[[], object], *, warmup: int = 3, repeats: int = 15, max_seconds: float = 20.0
) -> Timing:
    """Time one case alone: ``warmup`` untimed calls, then up to ``repeats`` timed calls (wall clock), and its
    peak memory. Prefer :func:`interleave` (or :meth:`Bench.compare`) for comparisons."""
    try:
        for _ in range(warmup):
            fn()
        peak = peak_memory(fn)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats:
            t0 = time.perf_counter()
            fn()
            _sync()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > max_seconds and len(times) >= 3:
                break
    except Exception as e:  # a case that fails is reported, not fatal
        return Timing(name, float("nan"), float("nan"), float("nan"), 0, None, f"{type(e).__name__}: {e}")
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return Timing(name, statistics.median(times), q[0], q[2], len(times), peak)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    x = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1024 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return "-"


def _fmt_time(s: float) -> str:
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def markdown_table(title: str, timings: Sequence[Timing], baseline: str) -> str:
    """Rows: case, median time per call, ratio to ``baseline`` (median over rounds, IQR, min-max), peak memory."""
    lines = [
        f"**{title}**",
        "",
        f"| case | time / call | × {baseline} (median) | IQR | min–max | peak mem |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        if t.error:
            lines.append(f"| {t.name} | {t.error[:70]} | - | - | - | - |")
            continue
        r = t.ratio_summary()
        cells = (
            [f"{r['median']:.2f}", f"{r['q1']:.2f}–{r['q3']:.2f}", f"{r['min']:.2f}–{r['max']:.2f}"]
            if r
            else ["-", "-", "-"]
        )
        lines.append(
            f"| {t.name} | {_fmt_time(t.median_s)} | " + " | ".join(cells) + f" | {_fmt_bytes(t.peak_bytes)} |"
        )
    return "\n".join(lines)


def compare(title: str, cases: Sequence[Case], *, baseline: str, **kw: Any) -> list[Timing]:
    """Interleave ``cases`` (wall clock, the process's current thread count) and print the ratio table.

    Accepts the keywords of :func:`interleave`; ``repeats`` and ``max_seconds`` (older spellings) set ``rounds``
    and ``budget_s``.
    """
    if "repeats" in kw:
        kw["rounds"] = kw.pop("repeats")
    if "max_seconds" in kw:
        kw["budget_s"] = kw.pop("max_seconds")
    kw.setdefault("clock", "cpu" if torch.get_num_threads() == 1 and not torch.cuda.is_available() else "wall")
    timings = interleave(cases, baseline=baseline, **kw)
    print(markdown_table(title, timings, baseline))
    print()
    return timings


# --------------------------------------------------------------------------------------------- a script's run


class Bench:
    """One benchmark script's run: common options, its tables and targets, and the JSON it writes.

    Options every script takes: ``--threads`` (default 1), ``--clock`` (``cpu`` with one thread, else ``wall``),
    ``--budget`` (seconds per table), ``--rounds``, ``--out`` (the JSON path; ``-`` writes none).
    """

    def __init__(self, name: str, description: str, parser: argparse.ArgumentParser | None = None) -> None:
        if "OMP_WAIT_POLICY" not in os.environ:
            raise RuntimeError("set os.environ['OMP_WAIT_POLICY'] at the top of the script, before torch is imported")
        ap = parser or argparse.ArgumentParser(description=description)
        ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
        ap.add_argument("--clock", choices=["cpu", "wall"], default=None, help="default: cpu with 1 thread, else wall")
        ap.add_argument("--budget", type=float, default=None, help="seconds per table (default: the script's)")
        ap.add_argument("--rounds", type=int, default=None, help="rounds per table (default: the script's)")
        ap.add_argument("--out", default=str(RESULTS / f"{name}.json"), help="results JSON ('-': write none)")
        self.args = ap.parse_args()
        torch.set_num_threads(self.args.threads)
        self.clock = self.args.clock or ("cpu" if self.args.threads == 1 and not torch.cuda.is_available() else "wall")
        self.name, self.description = name, description
        self.tables: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.notes: list[str] = []
        self.peers: dict[str, str] = {}
        self._timings: dict[str, dict[str, Timing]] = {}
        self.meta: dict[str, Any] = {
            "command": " ".join(["python", os.path.relpath(sys.argv[0], RESULTS.parent.parent), *sys.argv[1:]]),
            "cpu": _cpu_model() if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "clock": "process CPU time" if self.clock == "cpu" else "wall clock",
            "allocator": "glibc, freed memory kept in the heap while timing" if _libc() else "default",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_start": _loadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git_commit": _git_commit(),
        }
        print(header())
        print(f"clock: {self.meta['clock']}; ratio = a case's median time / the baseline's median time\n")

    def peer(self, *dists: str) -> None:
        """Record the installed version of each peer distribution (or "not installed")."""
        for d in dists:
            self.peers[d] = _version(d)

    def compare(
        self,
        table_id: str,
        title: str,
        cases: Sequence[Case],
        *,
        baseline: str,
        rounds: int = 1000,
        budget_s: float = 30.0,
        memory: bool = False,
        note: str | None = None,
        **kw: Any,
    ) -> list[Timing]:
        """Interleave ``cases``, print the table and keep it (under ``table_id``) for the JSON."""
        rounds = self.args.rounds or rounds
        budget_s = self.args.budget or budget_s
        timings = interleave(
            cases, baseline=baseline, rounds=rounds, budget_s=budget_s, clock=self.clock, memory=memory, **kw
        )
        print(markdown_table(title, timings, baseline))
        if note:
            print(f"\n{note}")
        print()
        sys.stdout.flush()
        rows = []
        for t in timings:
            rows.append(
                {
                    "case": t.name,
                    "median_s": None if t.error else t.median_s,
                    "rounds": t.repeats,
                    "ratio": t.ratio_summary(),
                    "peak_bytes": t.peak_bytes,
                    "error": t.error,
                }
            )
        self._timings[table_id] = {t.name: t for t in timings}
        self.tables.append({"id": table_id, "title": title, "baseline": baseline, "note": note, "rows": rows})
        return timings

    def rebase(self, table: str, case: str, *, ref_table: str, ref_case: str, note: str) -> None:
        """Re-express ``case``'s ratio in ``table`` against ``ref_case``'s median time in ``ref_table``.

        For a case whose calls disturb the next call (a peer that allocates and hands back gigabytes): the baseline
        timed right after it in the same table starts from cold caches and reads slow, so the ratio moves from run
        to run with how much the peer left behind. The same baseline function on the same inputs, timed in a table
        of undisturbed cases, is the steadier reference. The table's own baseline row stays as measured.
        """
        a = self._timings.get(table, {}).get(case)
        b = self._timings.get(ref_table, {}).get(ref_case)
        tb = next((x for x in self.tables if x["id"] == table), None)
        if a is None or b is None or tb is None or a.error or b.error or not a.times or not b.times:
            return
        ref_median = statistics.median(b.times)
        a.ratios = [x / ref_median for x in a.times]
        for row in tb["rows"]:
            if row["case"] == case:
                row["ratio"] = a.ratio_summary()
                row["ratio_reference"] = f"{ref_case} in {ref_table}"
        tb["note"] = f"{tb['note']} {note}" if tb.get("note") else note
        print(f"{table}: {case} re-expressed against {ref_case} in {ref_table}: {a.ratio_summary()['median']:.2f}x")

    def ratio(self, table: str, case: str) -> dict[str, float] | None:
        """The ratio summary of ``case`` in table ``table`` (None if it failed or is absent)."""
        for t in self.tables:
            if t["id"] == table:
                for r in t["rows"]:
                    if r["case"] == case:
                        return r["ratio"]  # type: ignore[no-any-return]
        return None

    def target(
        self,
        target_id: str,
        text: str,
        *,
        table: str,
        case: str,
        limit: float,
        other: str | None = None,
        below: bool = True,
    ) -> None:
        """A target on the ratio of ``case``'s median time to ``other``'s (default: the table's baseline) in
        ``table``: met when it is <= ``limit`` (``below``) or >= ``limit``."""
        t = self._timings.get(table, {})
        tb = next((x for x in self.tables if x["id"] == table), None)
        ref = other or (tb["baseline"] if tb else None)
        a, b = t.get(case), t.get(ref) if ref else None
        summary = None
        if a is not None and b is not None and a.error is None and b.error is None and a.times and b.times:
            ref_median = statistics.median(b.times)
            summary = Timing(case, 0, 0, 0, 0, None, None, [x / ref_median for x in a.times]).ratio_summary()
        met = None if summary is None else (summary["median"] <= limit if below else summary["median"] >= limit)
        self.targets.append(
            {
                "id": target_id,
                "text": text,
                "table": table,
                "case": case,
                "other": ref,
                "limit": limit,
                "below": below,
                "ratio": summary,
                "met": met,
            }
        )
        verdict = "no reading" if met is None else ("met" if met else "NOT met")
        shown = "-" if summary is None else f"{summary['median']:.2f} (IQR {summary['q1']:.2f}–{summary['q3']:.2f})"
        print(f"- target {text}: {shown} -> {verdict}")

    def save(self) -> Path | None:
        """Write the results JSON (unless ``--out -``); returns its path."""
        self.meta["loadavg_end"] = _loadavg()
        if self.args.out == "-":
            return None
        path = Path(self.args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "benchmark": self.name,
            "description": self.description,
            "machine": self.meta,
            "peers": self.peers,
            "summary": self.summary,
            "tables": self.tables,
            "targets": self.targets,
            "notes": self.notes,
        }
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {path}")
        return path
