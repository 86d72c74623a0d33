"""The evidence report: run folders -> report.md / report.html, checked as text and in a real headless browser.

The browser test builds a report from a real smoke run (``mnist_baseline``) plus a synthetic run folder that uses
every field of the claim schema, renders it in headless Chromium and checks what a reader would see: every plot
loads, no script error, the summary cards are there, the verdict filter works and nothing overflows a phone screen.
Its screenshots are kept in ``runs/test-report/`` for CI to publish.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kexue.report import claims_table, collect, write_report
from kexue.report._metrics import metric_tables

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "runs" / "test-report"


# ---------------------------------------------------------------- synthetic run folders


def _png(path: Path, *, panels: int = 1) -> None:
    """A real matplotlib PNG (``panels`` side by side, like the experiments' figures)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * panels, 3.6), layout="constrained")
    for i, ax in enumerate(fig.subplots(1, panels, squeeze=False)[0]):
        ax.plot([0, 1, 2], [i, i + 1, i + 0.5], marker="o")
        ax.set_title(f"panel {i}")
    fig.savefig(path, dpi=60)


def _write_run(
    d: Path,
    name: str,
    claims: list[dict[str, Any]],
    *,
    preset: str | None = "quick",
    plots: dict[str, int] | None = None,
    metrics: dict[str, Any] | None = None,
    preset_in_claims: bool = True,
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    plots = plots or {}
    for p, panels in plots.items():
        _png(d / p, panels=panels)
    doc: dict[str, Any] = {
        "experiment": name,
        "title": f"{name} title",
        "article": f"https://kexue.fm/archives/{len(name)}",
        "claims": claims,
        "plots": list(plots),
    }
    if preset_in_claims and preset is not None:
        doc["preset"] = preset
    (d / "claims.json").write_text(json.dumps(doc), encoding="utf-8")
    (d / "config.json").write_text(json.dumps({"experiment": name, "preset": preset, "config": {"seed": 0}}))
    (d / "metrics.json").write_text(json.dumps(metrics or {"wall_seconds": 1.5}))
    (d / "env.json").write_text(json.dumps({"device": "cpu", "torch": "2.x", "git_commit": "0123456789abcdef"}))
    return d


def _old_claim(cid: str, verdict: str) -> dict[str, Any]:
    """A claims.json entry as runs wrote it before the schema gained kind/seeds/mde/test."""
    return {
        "id": cid,
        "statement": f"statement of {cid}",
        "source": "https://kexue.fm/archives/1",
        "verdict": verdict,
        "evidence": f"evidence of {cid}: 0.5 vs 0.4",
        "measured": {"a": 0.5},
    }


def _new_claim(cid: str, verdict: str, kind: str = "claim", **extra: Any) -> dict[str, Any]:
    return {**_old_claim(cid, verdict), "kind": kind, **extra}


def _synthetic(root: Path) -> Path:
    """A run folder using every new field: checks (one failed), claims with seeds/mde/test, a claim-owned plot."""
    return _write_run(
        root / "synthetic",
        "synthetic",
        [
            _new_claim("beats_baseline", "reproduced", seeds=5, mde=0.0123456, test="paired t", plots=["curves.png"]),
            _new_claim("also_curves", "not reproduced", seeds=5, mde=0.02, test="Welch t", plots=["curves.png"]),
            _new_claim("needs_gpu", "not testable", seeds=None, mde=None, test=None),
            _new_claim("within_noise", "inconclusive", seeds=3, mde=None, test="McNemar"),
            _new_claim("sums_to_k", "reproduced", kind="check", test="exact"),
            _new_claim("in_range", "not reproduced", kind="check", test="exact"),
        ],
        plots={"summary.png": 3, "curves.png": 2, "extra.png": 1},
        metrics={
            "wall_seconds": 12.5,
            "n_train": 1000,
            "arms": {
                "base": {"acc": 0.9, "acc_std": 0.01, "loss": 0.3},
                "new": {"acc": 0.92, "acc_std": 0.02, "loss": 0.2},
            },
            "history": [{"loss": 1.0}, {"loss": 0.5}],
        },
    )


# ---------------------------------------------------------------- text-level tests (no browser)


def test_old_run_folder_renders_with_defaults(tmp_path: Path) -> None:
    _write_run(tmp_path / "old", "old", [_old_claim("a", "reproduced"), _old_claim("b", "not reproduced")])
    (run,) = collect(tmp_path)
    assert [(c.kind, c.seeds, c.mde, c.test, c.plots) for c in run.claims] == [("claim", None, None, None, ())] * 2
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text(encoding="utf-8")
    # Old folders keep the four-column claims table; the summary comes first.
    assert "| experiment | claim | verdict | evidence |\n" in md
    assert "| old | a | **reproduced** |" in md and "| old | b | **not reproduced** |" in md
    assert md.index("## Summary") < md.index("## Claims") < md.index("## old title")
    assert "| [old](#x-old) | https://kexue.fm/archives/3 | quick | — | 1 | 1 | 0 | 0 |" in md
    page = html_path.read_text(encoding="utf-8")
    assert "statement of a" in page and "<th>Seeds</th>" not in page and "<th>MDE</th>" not in page
    assert "class='card" in page and "details class='checks'" not in page


def test_new_schema_fields_render(tmp_path: Path) -> None:
    _synthetic(tmp_path)
    (run,) = collect(tmp_path)
    assert [c.kind for c in run.claims].count("check") == 2
    assert run.counts("claim") == {"reproduced": 1, "not reproduced": 1, "inconclusive": 1, "not testable": 1}
    md_path, html_path = write_report(tmp_path)
    page = html_path.read_text(encoding="utf-8")
    for th in ("<th>Claim</th>", "<th>Verdict</th>", "<th>Evidence</th>", "Seeds</th>", "MDE</th>", "<th>Test</th>"):
        assert th in page, th
    assert ">0.0123<" in page and ">paired t<" in page and ">not testable<" in page
    # Checks are folded apart from the claims, and opened because one failed; a check reads passed / failed.
    checks = page[page.index("<details class='checks'") :]
    assert checks.startswith("<details class='checks' open>") and "Checks: 1 of 2 passed" in checks
    assert ">passed<" in checks and ">failed<" in checks
    # The plot both claims name follows the second of them; the other plots go to the grid under the table.
    i_also, i_fig = page.index("id='x-synthetic-c-also_curves-1'"), page.index("id='x-synthetic-fig-curves'")
    assert i_also < i_fig < page.index("needs_gpu")
    assert page.index("id='x-synthetic-fig-extra'") > page.index("<details class='checks'")
    assert "checks: <b class='bad'>1 of 2 passed</b>" in page  # the summary card
    md = md_path.read_text(encoding="utf-8")
    assert "| experiment | claim | verdict | evidence | kind | seeds | MDE | test |" in md
    row = (
        "| synthetic | beats_baseline | **reproduced** | evidence of beats_baseline: 0.5 vs 0.4 | claim | 5 | 0.0123 |"
    )
    assert row + " paired t |" in md
    assert "| synthetic | in_range | **failed** |" in md
    assert "| arms | acc | loss |" in md and "| base | 0.9 ± 0.01 | 0.3 |" in md


def test_smoke_banner_only_for_smoke_runs(tmp_path: Path) -> None:
    # The preset is read from config.json when claims.json does not carry it.
    _write_run(tmp_path / "a", "a", [_old_claim("x", "not reproduced")], preset="smoke", preset_in_claims=False)
    _write_run(tmp_path / "b", "b", [_old_claim("y", "reproduced")], preset="quick")
    runs = collect(tmp_path)
    assert [(r.name, r.preset, r.smoke) for r in runs] == [("a", "smoke", True), ("b", "quick", False)]
    md_path, html_path = write_report(tmp_path)
    page = html_path.read_text(encoding="utf-8")
    assert "pipeline check, not evidence" in page and "Applies to runs a." in page
    section_b = page[page.index("<section class='exp' id='x-b'") :]
    assert "pipeline check" not in section_b.split("</section>")[0]
    assert "pipeline check, not evidence" in md_path.read_text(encoding="utf-8")
    _write_run(tmp_path / "a", "a", [_old_claim("x", "not reproduced")], preset="quick")
    assert "pipeline check" not in write_report(tmp_path)[1].read_text(encoding="utf-8")


def test_runs_come_in_report_order(tmp_path: Path) -> None:
    # The experiment's ORDER when its files record one (0 included), else 100, then the folder name.
    for name, order in (("a_last", None), ("b_second", 50), ("c_first", 0)):
        d = _write_run(tmp_path / name, name, [_old_claim("x", "reproduced")])
        if order is not None:
            doc = json.loads((d / "claims.json").read_text())
            (d / "claims.json").write_text(json.dumps({**doc, "order": order}))
    assert [r.name for r in collect(tmp_path)] == ["c_first", "b_second", "a_last"]
    page = write_report(tmp_path)[1].read_text(encoding="utf-8")
    assert page.index("id='x-c_first'") < page.index("id='x-b_second'") < page.index("id='x-a_last'")


def test_failed_run_shows_its_traceback_not_stale_claims(tmp_path: Path) -> None:
    d = _write_run(tmp_path / "crashy", "crashy", [_old_claim("stale_claim", "reproduced")])
    (d / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: out of memory\n")
    (run,) = collect(tmp_path)
    assert run.error is not None and run.claims == [] and run.stale_claims
    md_path, html_path = write_report(tmp_path)
    page = html_path.read_text(encoding="utf-8")
    assert "RuntimeError: out of memory" in page and "run failed" in page and "stale_claim" not in page
    assert "| crashy | - | **error** | RuntimeError: out of memory |" in claims_table(collect(tmp_path))
    assert "**run failed**" in md_path.read_text(encoding="utf-8")


def test_html_is_self_contained(tmp_path: Path) -> None:
    _synthetic(tmp_path)
    page = write_report(tmp_path)[1].read_text(encoding="utf-8")
    srcs = re.findall(r"<img[^>]*\ssrc='([^']*)'", page)
    assert len(srcs) == 3 + 1  # three plots and one thumbnail
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<script[^>]+src=|<link[^>]+stylesheet|@import|url\(", page)
    assert "<meta name='viewport'" in page and "@media (max-width:" in page


def test_metric_tables_group_siblings_and_keep_the_rest() -> None:
    t = metric_tables(
        {
            "acc": 0.91234567,
            "per_arm": {"a": {"x": 1.0, "x_std": 0.1, "y": 2}, "b": {"x": 3.0, "x_std": 0.2, "y": 4}},
            "one_off": {"z": "text"},
            "curve": [1, 2, 3],
            "bad": float("nan"),
        }
    )
    assert t.pairs == [("acc", "0.9123"), ("bad", "nan"), ("one_off.z", "text")]
    (m,) = t.matrices
    assert (m.caption, m.columns, m.rows) == ("per_arm", ["x", "y"], [("a", ["1 ± 0.1", "2"]), ("b", ["3 ± 0.2", "4"])])
    capped = metric_tables({f"k{i}": i for i in range(10)}, limit=4)
    assert len(capped.pairs) == 4 and capped.omitted == 6


# ---------------------------------------------------------------- headless browser


def _chromium() -> str | None:
    for name in (os.environ.get("KEXUE_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || ('resource: ' + e.target))); }, true);
(function () { var ce = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var out = {};
  try {
    var imgs = Array.prototype.slice.call(document.images);
    out.images = imgs.length;
    out.broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
      .map(function (i) { return i.alt; });
    out.cards = document.querySelectorAll('#summary .card').length;
    out.filter_bar = !document.getElementById('filters').hidden;
    out.overflow_px = document.documentElement.scrollWidth - window.innerWidth;
    function top(sel) { var e = document.querySelector(sel); return e ? e.getBoundingClientRect().top : -1; }
    out.cards_bottom = document.getElementById('summary').getBoundingClientRect().bottom;
    out.first_claim_top = top('section.exp tr.claim');
    out.first_figure_top = top('section.exp figure.plot');
    function visible(sel) { return Array.prototype.filter.call(document.querySelectorAll(sel), function (e) {
      return e.offsetParent !== null; }).length; }
    out.rows_before = visible('tr.claim');
    document.querySelector('#filters input[value="reproduced"]').click();
    out.reproduced_after_untick = visible('tr.claim[data-verdict="reproduced"]');
    out.others_after_untick = visible('tr.claim:not([data-verdict="reproduced"])');
    document.querySelector('#filters input[value="reproduced"]').click();
    var pick = document.querySelector('#filters select');
    pick.value = 'x-synthetic'; pick.dispatchEvent(new Event('change'));
    out.sections_for_one = visible('section.exp');
    out.cards_for_one = visible('#summary .card');
    pick.value = ''; pick.dispatchEvent(new Event('change'));
    out.rows_after_reset = visible('tr.claim');
  } catch (err) { window.__errors.push('probe: ' + err); }
  out.errors = window.__errors;
  var pre = document.createElement('pre'); pre.id = 'kexue-probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # containers often mount a tiny /dev/shm
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def _console_errors(stderr: str) -> list[str]:
    # Chromium logs page console messages to stderr as "...:INFO:CONSOLE(...)] "message", source: ...".
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _probe(exe: str, page: Path, tmp: Path, width: int) -> dict[str, Any]:
    probed = page.with_name(f"report.probe{width}.html")
    text = page.read_text(encoding="utf-8")
    probed.write_text(text.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    res = _run_chromium(
        exe,
        tmp / f"profile-dom{width}",
        f"--window-size={width},1000",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.as_uri(),
    )
    probed.unlink()
    m = re.search(r'<pre id="kexue-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the probe reported nothing (rc {res.returncode}); stderr tail:\n{res.stderr[-2000:]}"
    out: dict[str, Any] = json.loads(html.unescape(m.group(1)))
    out["console"] = _console_errors(res.stderr)
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    """The headless browser; its absence skips the test, except under CI (CI=true), where it fails."""
    exe = _chromium()
    if exe is None:
        msg = "chromium not found: `make browser` installs it (as root on Debian), or `apt-get install chromium`"
        if _in_ci():
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="module")
def browser_report(chromium: str) -> Path:
    """A report as large as a real one, in runs/test-report/.

    A real ``mnist_baseline`` smoke run, the synthetic folder that uses every schema field, and seven more small
    folders, so that the page has as many summary cards as ``kexue reproduce`` makes (nine).
    """
    from kexue.experiments._runner import run_experiment

    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    run_experiment("mnist_baseline", preset="smoke", out_dir=ARTIFACTS / "mnist_baseline", seed=0)
    shutil.rmtree(ARTIFACTS / "mnist_baseline" / "checkpoints", ignore_errors=True)
    synthetic = _synthetic(ARTIFACTS)
    for i in range(7):
        d = _write_run(
            ARTIFACTS / f"more_{i}",
            f"more_{i}",
            [
                _new_claim(f"m{i}_a", "reproduced", seeds=3, mde=0.01, test="paired t"),
                _old_claim(f"m{i}_b", "inconclusive"),
            ],
        )
        shutil.copy(synthetic / "extra.png", d / "extra.png")
        doc = json.loads((d / "claims.json").read_text())
        (d / "claims.json").write_text(json.dumps({**doc, "plots": ["extra.png"], "order": 200 + i}))
    write_report(ARTIFACTS)
    return ARTIFACTS / "report.html"


def test_report_renders_in_headless_chromium(chromium: str, browser_report: Path, tmp_path: Path) -> None:
    runs = collect(browser_report.parent)
    rows = sum(len(r.claims) for r in runs)
    reproduced = sum(c.verdict == "reproduced" for r in runs for c in r.claims)
    images = sum(len(r.existing_plots()) + 1 for r in runs)  # every plot, and one thumbnail per card
    assert len(runs) == 9 and reproduced > 0
    desk = _probe(chromium, browser_report, tmp_path, 1400)
    assert desk["errors"] == [] and desk["console"] == [], (desk["errors"], desk["console"])
    assert desk["images"] == images and desk["broken"] == []
    assert desk["cards"] == 9 and desk["filter_bar"]
    # Every claim row is visible (the synthetic checks sit in an open <details>: one of them failed); unticking
    # "reproduced" hides exactly those rows; picking one experiment leaves its section and card only.
    assert desk["rows_before"] == rows and desk["rows_after_reset"] == rows
    assert desk["reproduced_after_untick"] == 0 and desk["others_after_untick"] == rows - reproduced
    assert desk["sections_for_one"] == 1 and desk["cards_for_one"] == 1
    assert desk["overflow_px"] <= 0
    # Above the fold of a 1400 x 2000 screenshot: the summary cards, then the first experiment's claims and plot.
    assert 0 < desk["cards_bottom"] < desk["first_claim_top"] < desk["first_figure_top"] < 2000 - 200, desk
    phone = _probe(chromium, browser_report, tmp_path, 400)
    assert phone["errors"] == [] and phone["console"] == [] and phone["broken"] == []
    assert phone["overflow_px"] <= 0, "the page scrolls sideways at phone width"
    # Screenshots of the unmodified report (CI keeps them as artefacts).
    for width, name in ((1400, "report-1400.png"), (400, "report-400.png")):
        shot = browser_report.parent / name
        res = _run_chromium(
            chromium,
            tmp_path / f"profile-shot{width}",
            f"--window-size={width},2000",
            f"--screenshot={shot}",
            browser_report.as_uri(),
        )
        assert shot.is_file() and shot.stat().st_size > 10_000, res.stderr[-2000:]
        assert _console_errors(res.stderr) == []
        assert shot.read_bytes()[16:24] == width.to_bytes(4, "big") + (2000).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("text", "why"),
    [("{bad", "unreadable"), ("[]", "holds a list"), ('{"claims": 5}', "'claims' is a int")],
)
def test_a_corrupt_claims_file_is_shown_as_an_error_not_as_no_claims(tmp_path: Path, text: str, why: str) -> None:
    d = tmp_path / "exp"
    d.mkdir()
    (d / "claims.json").write_text(text)
    (run,) = collect(tmp_path)
    assert run.error is not None and why in run.error
    assert "**error**" in claims_table([run])
