"""The README/docs performance tables are generated from the committed benchmark results and agree with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kexue.report import perf_tables

ROOT = Path(__file__).resolve().parents[1]


def _result(median: float = 1.1) -> dict:
    ratio = {"median": median, "q1": median - 0.05, "q3": median + 0.05, "min": median - 0.2, "max": median + 0.3}
    base = {"median": 1.0, "q1": 1.0, "q3": 1.0, "min": 1.0, "max": 1.0}
    rows = [
        {"case": "base", "median_s": 1e-3, "rounds": 9, "ratio": base, "peak_bytes": None, "error": None},
        {"case": "ours", "median_s": 1.1e-3, "rounds": 9, "ratio": ratio, "peak_bytes": 2048, "error": None},
        {"case": "peer", "median_s": None, "rounds": 0, "ratio": None, "peak_bytes": None, "error": "ImportError: x"},
    ]
    return {
        "benchmark": "demo",
        "machine": {
            "command": "python benchmarks/demo.py",
            "cpu": "Some CPU",
            "cores": 2,
            "threads": 1,
            "omp_wait_policy": "PASSIVE",
            "clock": "process CPU time",
            "torch": "2.13.0",
            "loadavg_start": [0.5, 0.5, 0.5],
            "loadavg_end": [0.7, 0.5, 0.5],
            "date": "2026-01-01 00:00 UTC",
        },
        "summary": {
            "technique": "Demo",
            "doc": "docs/demo.md",
            "what": "fwd+bwd",
            "headlines": [
                {"label": "ours", "case": "ours", "tables": ["t1"]},
                {"label": "ours over sizes", "case": "ours", "tables": ["t1", "t2"]},
            ],
            "target": "≤ 1.2×",
        },
        "tables": [
            {"id": "t1", "title": "size 1", "baseline": "base", "note": None, "rows": rows},
            {
                "id": "t2",
                "title": "size 2",
                "baseline": "base",
                "note": "a note",
                "rows": [rows[0], {**rows[1], "ratio": {**ratio, "median": 0.9}}],
            },
        ],
        "targets": [
            {
                "id": "x",
                "text": "ours ≤ 1.2×",
                "table": "t1",
                "case": "ours",
                "other": "base",
                "limit": 1.2,
                "below": True,
                "ratio": ratio,
                "met": median <= 1.2,
            }
        ],
        "notes": [],
    }


def _repo(tmp_path: Path, median: float = 1.1) -> Path:
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results" / "demo.json").write_text(json.dumps(_result(median)), encoding="utf-8")
    (tmp_path / "README.md").write_text("# x\n<!-- BEGIN GENERATED perf -->\n<!-- END GENERATED perf -->\n")
    (tmp_path / "docs" / "demo.md").write_text(
        "## Benchmark\n<!-- BEGIN GENERATED perf:demo -->\nold\n<!-- END GENERATED perf:demo -->\ntail\n"
    )
    return tmp_path


def test_committed_tables_match_committed_results() -> None:
    """Fails when a README/docs performance table was edited by hand or not regenerated after a benchmark run."""
    stale = perf_tables.update(ROOT, check=True)
    assert stale == [], f"run `python -m kexue.report.perf_tables`: stale {[str(p) for p in stale]}"


def test_every_results_file_records_its_command_and_machine() -> None:
    docs = perf_tables.load_results(ROOT / "benchmarks" / "results")
    assert docs
    for d in docs:
        m = d["machine"]
        for key in ("command", "cpu", "threads", "torch", "omp_wait_policy", "loadavg_start", "loadavg_end"):
            assert m.get(key) is not None, (d["benchmark"], key)
        assert m["omp_wait_policy"] == "PASSIVE"
        assert d["tables"], d["benchmark"]


def test_update_renders_then_check_passes_and_catches_a_changed_figure(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert perf_tables.update(repo) == [repo / "README.md", repo / "docs" / "demo.md"]
    readme = (repo / "README.md").read_text()
    assert "ours 1.10× (1.05–1.15)" in readme
    assert "ours over sizes 0.90–1.10×" in readme
    assert "1 of 1" in readme and "Some CPU, 1 thread(s) of 2 cores" in readme
    page = (repo / "docs" / "demo.md").read_text()
    assert "old" not in page and page.endswith("tail\n")
    assert "| ours | 1.10 ms | 1.10 | 1.05–1.15 | 0.90–1.40 | 9 | 2.0 KB |" in page
    assert "ImportError: x" in page
    assert perf_tables.update(repo, check=True) == []
    # a new run that disagrees with the committed tables makes them stale
    (repo / "benchmarks" / "results" / "demo.json").write_text(json.dumps(_result(1.3)), encoding="utf-8")
    assert perf_tables.update(repo, check=True) == [repo / "README.md", repo / "docs" / "demo.md"]
    assert perf_tables.main(["--repo", str(repo), "--check"]) == 1
    assert "not: ours ≤ 1.2× (1.30×)" in perf_tables.render_summary(
        perf_tables.load_results(repo / "benchmarks/results")
    )


def test_results_in_another_format_are_left_alone(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "benchmarks" / "results" / "memory.json").write_text(json.dumps({"lm": {"rows": []}}), encoding="utf-8")
    assert [d["benchmark"] for d in perf_tables.load_results(repo / "benchmarks" / "results")] == ["demo"]


def test_missing_marker_or_results_is_an_error(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "docs" / "demo.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="no '<!-- BEGIN GENERATED perf:demo -->'"):
        perf_tables.update(repo)
    with pytest.raises(FileNotFoundError, match="no benchmark results"):
        perf_tables.update(repo, "nowhere")
