"""Every ```python block of the README and docs/*.md runs, so the documentation cannot drift from the code.

A block directly preceded by an ``<!-- slow -->`` line (one that trains or loads a pretrained LM) runs only with
``--runslow``. Blocks run in a temporary working directory, so files they save do not land in the checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"(<!-- slow -->\s*\n)?```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[object]:
    out: list[object] = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(_BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            marks = [pytest.mark.slow] if m.group(1) else []
            out.append(pytest.param(f"{doc.relative_to(ROOT)}#{i}", m.group(2), marks=marks, id=f"{doc.name}#{i}"))
    return out


def test_docs_have_examples() -> None:
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"topk.md", "flatnce.md", "simsiam.md", "regularizers.md", "multitask.md", "tailr.md", "ign.md"} <= pages
    assert len(_blocks()) >= 10


@pytest.mark.parametrize(("where", "code"), _blocks())
def test_doc_code_block_runs(where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__doc_example__"})
