"""The code blocks of docs/tailr.md run (so the documentation cannot drift from the API)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "tailr.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_doc_has_api_and_trainer_examples() -> None:
    blocks = _blocks()
    assert len(blocks) == 2
    assert "compute_loss" in blocks[1]


def test_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks()[0], str(DOC), "exec"), {})


@pytest.mark.slow
def test_trainer_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks()[1], str(DOC), "exec"), {})
