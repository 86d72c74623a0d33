"""kexue installs like a library: the built wheel and sdist, their metadata, the torch range and the docs site.

* The sdist and wheel are built from the files git knows (``python -m build``, no isolation) and checked with
  ``twine check --strict``.
* The wheel is installed into a fresh virtual environment that already holds torch (the one running this test,
  linked in with its dependencies, as a user's environment would have it): pip plans to install kexue and nothing
  else, ``pip check`` passes, and ``import kexue`` and ``examples/own_loop.py`` work there against the wheel.
* pip's plan against other torch versions (metadata stand-ins, since a second real torch is a CUDA download of
  several GB): any torch in the supported range is kept, one below it is refused. ``make torch-compat
  TORCH=2.14.1`` runs the examples and the library tests on a second real torch.
* The core library imports without the optional dependencies, and each optional import names its extra.
* The docs site builds with ``mkdocs build --strict`` (every warning is an error).

The tools come from the ``dev`` and ``docs`` extras, which ``make test`` installs; without them these tests skip
(and fail under ``CI=true``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import kexue
from kexue._optional import EXTRAS

ROOT = Path(__file__).resolve().parent.parent

#: The oldest torch that the repository's own environment (constraints.txt, so `make test`) runs; the lower bound
#: of the torch requirement must be this version, so that the bound is a tested one.
TESTED_TORCH_MIN = "2.13"

packaging_requirements = pytest.importorskip("packaging.requirements")
packaging_version = pytest.importorskip("packaging.version")
tomllib = pytest.importorskip("tomllib")
Requirement = packaging_requirements.Requirement
Version = packaging_version.Version


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = f"{module} is not installed: pip install -e '.[dev,docs]' (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _env(**extra: str) -> dict[str, str]:
    """The environment for tools and fresh interpreters: no PYTHONPATH (it would shadow the installed wheel) and
    no pip configuration of this machine (indexes, find-links, constraints), so that nothing can be downloaded."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", **extra)
    return env


def _run(cmd: list[str], *, cwd: Path = ROOT, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _pyproject() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_norm(name)] = version
    return pins


# ----------------------------------------------------------------------------------------------------- metadata
def test_version_is_written_once() -> None:
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kexue.__version__"}
    assert str(Version(kexue.__version__)) == kexue.__version__  # a normalised PEP 440 version
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{kexue.__version__}]" in changelog, "CHANGELOG.md has no section for the current version"


def test_torch_is_a_tested_range_and_the_pins_live_in_constraints() -> None:
    project = _pyproject()["project"]
    core = {_norm(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    assert set(core) == {"torch", "numpy", "tqdm"}, "matplotlib, scipy and transformers belong in extras"
    for req in core.values():  # ranges only: an exact pin or a cap makes pip replace the user's version
        assert {s.operator for s in req.specifier} <= {">="}, f"{req} pins or caps its version"
    (lower,) = [s.version for s in core["torch"].specifier]
    assert lower == TESTED_TORCH_MIN

    pins = _constraints()
    torch_pin = Version(pins["torch"])
    assert torch_pin in core["torch"].specifier and torch_pin.release[:2] == Version(lower).release[:2], (
        f"constraints.txt pins torch {torch_pin}: `make test` must run the lower bound {lower}"
    )
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(r for name, reqs in extras.items() if name != "bench" for r in reqs)]
    for req in map(Requirement, wanted):
        if _norm(req.name) != "kexue":  # `all` refers to the other extras
            assert _norm(req.name) in pins, f"{req.name} (from pyproject.toml) has no pin in constraints.txt"
            assert Version(pins[_norm(req.name)]) in req.specifier, f"constraints.txt: {req.name} outside {req}"


def test_every_optional_import_names_an_extra_that_installs_it() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        names = {_norm(Requirement(r).name) for r in extras[extra]}
        assert _norm(module) in names, f"kexue[{extra}] does not install {module}"


def test_core_imports_without_the_optional_dependencies() -> None:
    """A fresh interpreter in which matplotlib, scipy and the Hugging Face stack cannot be imported."""
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {sorted(EXTRAS)!r}:
                    raise ImportError(f"blocked {{name}}")
        sys.meta_path.insert(0, Block())
        import torch
        import kexue, kexue.ops, kexue.losses, kexue.regularizers, kexue.modules, kexue.methods
        import kexue.train, kexue.data, kexue.report
        from kexue.losses import tailr_loss
        tailr_loss(torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]), gamma=0.5).backward()
        from kexue.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        for what, call, extra in [
            ("stats", lambda: __import__("kexue.experiments.stats", fromlist=["_"]).t_critical(3), "experiments"),
            ("plots", lambda: __import__("kexue.experiments._base", fromlist=["_"]).new_figure(), "experiments"),
            ("load_minilm", lambda: kexue.data.load_minilm(), "text"),
        ]:
            try:
                call()
            except ImportError as e:
                assert f"pip install 'kexue[{{extra}}]'" in str(e), (what, str(e))
            else:
                raise AssertionError(f"{{what}} worked without its extra")
        print("ok")
        """
    )
    proc = _run([sys.executable, "-c", code], PYTHONPATH=str(ROOT / "src"))
    assert proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ sdist, wheel
@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it (``python -m build``), from a copy of the files git knows."""
    _need("build")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)])
    return out


def _wheel(dist: Path) -> Path:
    (whl,) = dist.glob("kexue-*.whl")
    return whl


def test_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    _need("twine")
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2, files
    proc = _run([sys.executable, "-m", "twine", "check", "--strict", *files])
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_contents_and_metadata(dist: Path) -> None:
    whl = _wheel(dist)
    assert whl.name == f"kexue-{kexue.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta = z.read(f"kexue-{kexue.__version__}.dist-info/METADATA").decode()
    packages = {p.parent.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src/kexue").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names
    assert "kexue/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/"))]
    requires = [
        Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    core = {_norm(r.name): r for r in requires if r.marker is None}
    assert set(core) == {"torch", "numpy", "tqdm"} and str(core["torch"].specifier) == f">={TESTED_TORCH_MIN}"
    extras = {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert {"experiments", "text", "all", "docs", "dev"} <= extras
    for field in ("License-Expression: MIT", "Requires-Python: >=3.10", "Classifier: Typing :: Typed", "Project-URL:"):
        assert field in meta, field

    (sdist,) = dist.glob("kexue-*.tar.gz")
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    for needed in ("CHANGELOG.md", "LICENSE", "README.md", "constraints.txt", "mkdocs.yml", "examples/own_loop.py"):
        assert needed in members, needed


# ------------------------------------------------------------------------------------- the user's torch stays
def _closure(names: Iterable[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions ``names`` and everything they require (markers evaluated, no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = _norm(todo.pop())
        if name not in found:
            found[name] = dist = importlib.metadata.distribution(name)
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    todo.append(req.name)
    return found


def _site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages") or venv.glob("Lib/site-packages")
    return site


def _fresh_venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])  # pip runs from outside (pip --python)
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _pip(python: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "pip", "--python", str(python), *args], check=check)


def _plan(python: Path, dist: Path, report: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``pip install --dry-run`` of the wheel, offline: only kexue's own folder can provide anything."""
    return _pip(python, "install", "--dry-run", "--no-index", "--find-links", str(dist), "--report", str(report),
                str(_wheel(dist)), check=check)  # fmt: skip


def _planned(report: Path) -> list[str]:
    return sorted(_norm(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"])


def test_wheel_installs_next_to_the_users_torch_and_runs_the_examples(dist: Path, tmp_path: Path) -> None:
    """A fresh venv already holding torch (this process's, linked in with its requirements, and numpy, tqdm)."""
    python = _fresh_venv(tmp_path / "venv")
    site = _site_packages(tmp_path / "venv")
    for d in _closure(["torch", "numpy", "tqdm"]).values():
        origin = Path(str(d.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in d.files or [] if not str(f).startswith("..")}:
            if (origin / top).exists() and not (site / top).exists():
                (site / top).symlink_to(origin / top)
    torch_before = importlib.metadata.version("torch")  # the linked files are this process's torch

    _plan(python, dist, tmp_path / "plan.json")
    assert _planned(tmp_path / "plan.json") == ["kexue"], "pip planned to change the user's packages"
    _pip(python, "install", "--no-index", "--find-links", str(dist), str(_wheel(dist)))
    _pip(python, "check")

    probe = "import kexue, torch; print(torch.__version__, kexue.__version__, kexue.__file__)"
    version, kexue_version, where = _run([str(python), "-c", probe], cwd=tmp_path).stdout.split()
    assert (version, kexue_version) == (torch_before, kexue.__version__)
    assert Path(where).is_relative_to(site), f"kexue imported from {where}, not from the installed wheel"
    out = _run([str(python), str(ROOT / "examples/own_loop.py"), "--steps", "10", "--device", "cpu"], cwd=tmp_path)
    assert "test accuracy" in out.stdout, out.stdout


def _stand_in(site: Path, name: str, version: str) -> None:
    """Metadata of an installed distribution (no code): all that pip's resolver reads of it."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.mark.parametrize("torch_version", ["2.14.1", "2.99.0"])
def test_pip_keeps_any_supported_torch(dist: Path, tmp_path: Path, torch_version: str) -> None:
    """2.14.1: the newest torch this machine's CI can install (a CUDA build); 2.99.0: a future release."""
    python = _fresh_venv(tmp_path / "venv")
    site = _site_packages(tmp_path / "venv")
    for name, version in [("torch", torch_version), ("numpy", "2.0.0"), ("tqdm", "4.66.0")]:
        _stand_in(site, name, version)
    _plan(python, dist, tmp_path / "plan.json")
    assert _planned(tmp_path / "plan.json") == ["kexue"]


def test_pip_refuses_a_torch_below_the_range(dist: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv")
    site = _site_packages(tmp_path / "venv")
    for name, version in [("torch", "2.12.1"), ("numpy", "2.0.0"), ("tqdm", "4.66.0")]:
        _stand_in(site, name, version)
    proc = _plan(python, dist, tmp_path / "plan.json", check=False)
    assert proc.returncode != 0 and f"torch>={TESTED_TORCH_MIN}" in proc.stdout + proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------------- docs site
def test_docs_site_builds_without_warnings(tmp_path: Path) -> None:
    _need("mkdocs")
    _need("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    proc = _run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], NO_MKDOCS_2_WARNING="1")
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    for page in (ROOT / "docs").glob("*.md"):
        assert (site / page.with_suffix(".html").name).is_file(), page.name
    ops = (site / "api/ops.html").read_text(encoding="utf-8")
    assert 'id="kexue.ops.soft_topk"' in ops
    # `Example:` doctests render as code; nothing in a docstring renders as a Markdown block quote
    assert '<span class="gp">&gt;&gt;&gt; </span><span class="n">p</span>' in ops
    for page in (site / "api").glob("*.html"):
        assert "<blockquote>" not in page.read_text(encoding="utf-8"), page.name
    assert f"[{kexue.__version__}]" in (site / "changelog.html").read_text(encoding="utf-8")
