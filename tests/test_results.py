"""The committed results: every claim carries its evidence fields, and the README and docs pages match them.

No training here: the tests only read the committed run folders under ``results/quick`` and the pages.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from kexue import experiments
from kexue.report import docs_tables

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "results/quick"
# While False, an experiment without a committed run folder is reported as a skip that names it; set it to True
# once every experiment's results are committed, and a missing run folder fails the suite.
REQUIRE_ALL_RESULTS = True

KINDS = {"check", "claim"}
VERDICTS = {"reproduced", "not reproduced", "inconclusive", "not testable"}
REGENERATE = f"python -m kexue.report.docs_tables --results {RESULTS}"


def _run_folders() -> list[Path]:
    root = ROOT / RESULTS
    return sorted(d for d in root.iterdir() if (d / "claims.json").is_file()) if root.is_dir() else []


def _claim_problems(c: dict[str, Any]) -> list[str]:
    """What a committed claim lacks; empty when it is complete."""
    problems = []
    if c.get("kind") not in KINDS:
        problems.append(f"kind {c.get('kind')!r} is not one of {sorted(KINDS)}")
    if c.get("verdict") not in VERDICTS:
        problems.append(f"verdict {c.get('verdict')!r} is not one of {sorted(VERDICTS)}")
    if c.get("kind") != "claim" or c.get("verdict") == "not testable":
        return problems
    seeds = c.get("seeds")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        problems.append(f"seeds {seeds!r} is not an int >= 1")
    if not isinstance(c.get("test"), str) or not c["test"]:
        problems.append(f"test {c.get('test')!r} is not a non-empty string")
    mde = c.get("mde")
    is_number = isinstance(mde, (int, float)) and not isinstance(mde, bool) and not math.isnan(mde) and mde >= 0
    if not is_number and mde != "inf":
        problems.append(f"mde {mde!r} is not a non-negative number or 'inf'")
    return problems


def test_docs_tables_match_committed_results() -> None:
    stale = docs_tables.update(ROOT, RESULTS, check=True)
    assert stale == [], f"generated sections out of date in {[str(p) for p in stale]}; run `{REGENERATE}`"


def test_docs_tables_check_detects_a_stale_section(tmp_path: Path) -> None:
    run = tmp_path / RESULTS / "mnist_baseline"
    run.mkdir(parents=True)
    shutil.copy(ROOT / RESULTS / "mnist_baseline" / "claims.json", run / "claims.json")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN GENERATED claims -->\nold\n<!-- END GENERATED claims -->\n", encoding="utf-8")
    assert docs_tables.update(tmp_path, RESULTS, check=True) == [readme]
    assert "old" in readme.read_text(encoding="utf-8")  # --check never writes
    assert docs_tables.update(tmp_path, RESULTS) == [readme]
    assert docs_tables.update(tmp_path, RESULTS, check=True) == []
    assert "`test_accuracy`" in readme.read_text(encoding="utf-8")


def test_committed_results_exist() -> None:
    assert _run_folders(), f"no run folder with claims.json under {RESULTS}"


@pytest.mark.parametrize("folder", _run_folders(), ids=lambda d: d.name)
def test_committed_claims_are_complete(folder: Path) -> None:
    run = json.loads((folder / "claims.json").read_text(encoding="utf-8"))
    assert run.get("claims"), f"{folder.name}: claims.json lists no claims"
    problems = [f"{c.get('id', '?')}: {p}" for c in run["claims"] for p in _claim_problems(c)]
    assert problems == [], f"{folder.name}/claims.json: " + "; ".join(problems)
    for name in ("config.json", "metrics.json", *run.get("plots", [])):
        assert (folder / name).is_file(), f"{folder.name}: {name} is missing"


def test_claim_validator_rejects_incomplete_claims() -> None:
    good = {"id": "x", "kind": "claim", "verdict": "reproduced", "seeds": 3, "test": "paired t", "mde": 0.01}
    assert _claim_problems(good) == []
    assert _claim_problems({**good, "mde": "inf"}) == []
    assert _claim_problems({**good, "verdict": "not testable", "seeds": None, "test": None, "mde": None}) == []
    assert _claim_problems({"id": "c", "kind": "check", "verdict": "reproduced"}) == []
    for bad in ({"kind": "fact"}, {"seeds": 0}, {"seeds": True}, {"seeds": None}, {"test": ""}, {"mde": None}):
        assert _claim_problems({**good, **bad}), bad
    assert _claim_problems({**good, "mde": math.nan})
    assert _claim_problems({**good, "verdict": "holds"})


def test_run_folders_belong_to_experiments() -> None:
    unknown = sorted({d.name for d in _run_folders()} - set(experiments.available()))
    assert unknown == [], f"run folders under {RESULTS} for no experiment: {unknown}"


def test_every_experiment_has_committed_results() -> None:
    missing = [n for n in experiments.available() if not (ROOT / RESULTS / n / "claims.json").is_file()]
    if missing and not REQUIRE_ALL_RESULTS:
        pytest.skip(f"no committed run folder under {RESULTS} yet for: {', '.join(missing)}")
    assert missing == [], f"no committed run folder under {RESULTS} for: {', '.join(missing)}"


_GENERATED = re.compile(r"<!-- BEGIN GENERATED (claims(?::\w+)?) -->\n(.*?)<!-- END GENERATED \1 -->", re.S)
_PIPE = re.compile(r"(?<!\\)\|")


def _table_shape_errors(markdown: str) -> list[str]:
    """Rows whose count of unescaped pipes (cell borders in GitHub Markdown) differs from their table's header."""
    errors, head = [], None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            head = None
            continue
        n = len(_PIPE.findall(line))
        if head is None:
            head = n
        elif n != head:
            errors.append(f"{n} borders instead of {head}: {line[:100]}")
    return errors


def test_generated_tables_keep_their_columns() -> None:
    run = {"experiment": "x", "claims": [{"id": "a", "kind": "check", "verdict": "reproduced", "evidence": "|p - q|"}]}
    rendered = docs_tables.render_experiment(run)
    assert "\\|p - q\\|" in rendered
    assert _table_shape_errors(rendered) == []
    assert _table_shape_errors("| a | b |\n|---|---|\n| `|x|` | y |\n")  # the check can fail
    for page in ["README.md", *sorted(set(docs_tables.DOCS_PAGES.values()))]:
        path = ROOT / page
        if path.is_file():
            for tag, body in _GENERATED.findall(path.read_text(encoding="utf-8")):
                assert _table_shape_errors(body) == [], f"{page} ({tag})"


# A relative Markdown link or image into the committed results: ](results/...) or ](../results/...).
_LINK = re.compile(r"\]\(((?:\.\./)*results/[^)\s]*)\)")


@pytest.mark.parametrize("page", ["README.md", *sorted(set(docs_tables.DOCS_PAGES.values()))])
def test_links_into_results_resolve(page: str) -> None:
    path = ROOT / page
    if not path.is_file():
        pytest.skip(f"{page} does not exist")
    targets = _LINK.findall(path.read_text(encoding="utf-8"))
    broken = [t for t in targets if not (path.parent / t.split("#")[0]).exists()]
    assert broken == [], f"{page}: links to missing files {broken}"


@pytest.mark.parametrize("experiment", sorted(docs_tables.METRIC_TABLES))
def test_metric_tables_skip_what_a_run_did_not_record(experiment: str) -> None:
    # Another preset or an older layout may lack any part of metrics.json: the page then shows fewer tables.
    assert docs_tables.METRIC_TABLES[experiment]({"experiment": experiment, "claims": [], "metrics": {}}) == []


@pytest.mark.parametrize("experiment", sorted(docs_tables.METRIC_TABLES))
def test_metric_tables_render_the_committed_metrics(experiment: str) -> None:
    folder = ROOT / RESULTS / experiment
    if not (folder / "metrics.json").is_file():
        pytest.skip(f"no committed metrics.json for {experiment}")
    runs = {r["experiment"]: r for r in docs_tables.load_results(ROOT / RESULTS)}
    lines = docs_tables.METRIC_TABLES[experiment](runs[experiment])
    assert any(line.startswith("|---") for line in lines), f"{experiment}: no table"
    rendered = "\n".join(lines)
    assert _table_shape_errors(rendered) == []
    assert not re.search(r"\bnan\b", rendered, re.I), f"{experiment}: a NaN reached a table"


def test_metric_cells_ignore_missing_measurements() -> None:
    assert docs_tables._ms([1.0, "nan", 3.0, None, math.inf], 1) == "2.0 ± 1.4"
    assert docs_tables._ms(["nan", math.nan], 2) == "—"
    assert docs_tables._ms([0.5], 2) == "0.50 ± 0.00"
