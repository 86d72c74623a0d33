"""Run one experiment into its own folder: config.json, env.json, metrics.json, claims.json, log.txt, plots.

A run owns its folder while it runs: it holds an exclusive lock on ``<out>/.lock`` (``flock``, so the kernel
releases it when the process dies, however it dies; a lock file left by a killed run is reused). Everything that
can refuse a run is checked before anything is written: the experiment, preset and overrides; that the folder is
a writable folder; that no other run holds it; and, for ``resume``, that the saved ``config.json`` has the same
settings. A refused run leaves the disk as it found it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from . import get
from ._base import Result, apply_overrides, config_to_dict, write_json

try:  # POSIX only; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "OutDirBusyError",
    "OutDirError",
    "ResumeMismatchError",
    "RunRefused",
    "environment",
    "lock_out_dir",
    "resolve",
    "run_experiment",
]

LOCK_NAME = ".lock"

log = logging.getLogger("kexue")


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Versions, device and threads of this process, for ``env.json``."""
    import torch

    from kexue import __version__

    cuda = torch.cuda.is_available()
    return {
        "kexue": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "git_commit": _git_commit(),
    }


class RunRefused(Exception):
    """A run refused before it wrote anything; ``str(e)`` is one line for the user.

    Attributes:
        exit_code: the command line's exit status for it: 2 for input to change, 1 for a state to wait out.
    """

    exit_code = 2


class OutDirError(RunRefused, ValueError):
    """The output folder is a file, or cannot be created or written."""


class ResumeMismatchError(RunRefused, ValueError):
    """``resume`` was asked with settings that differ from the saved ``config.json``."""


class OutDirBusyError(RunRefused, RuntimeError):
    """Another run holds the output folder's lock."""

    exit_code = 1


class _FileHandler(logging.FileHandler):
    """Marks the handler the runner adds so it can be removed again."""

    _kexue_passive = True  # the run's log file: not a console, so kexue's default console output stays on


def resolve(
    name: str, *, preset: str = "quick", overrides: Mapping[str, str] | None = None, seed: int | None = None
) -> tuple[ModuleType, Any]:
    """The experiment module and its config for ``preset`` with ``overrides`` and ``seed`` applied.

    Nothing is written; this is everything about a run that can be checked from its arguments alone.

    Raises:
        ValueError: unknown experiment or preset; :class:`ConfigError` (a ``ValueError``) for bad overrides.
    """
    module = get(name)
    presets: Mapping[str, Any] = module.PRESETS
    if preset not in presets:
        raise ValueError(f"experiment {name!r} has no preset {preset!r}; choose one of {', '.join(presets)}")
    cfg = presets[preset]
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if seed is not None:
        cfg = apply_overrides(cfg, {"seed": str(seed)})
    return module, cfg


def _missing_dirs(out: Path) -> list[Path]:
    """The folders ``out.mkdir(parents=True)`` would create, innermost first; refuses a file on the way."""
    missing: list[Path] = []
    p = out.absolute()
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        what = "is a file" if p == out.absolute() else f"is under {p}, which is a file"
        raise OutDirError(f"cannot use {out} as the output folder: it {what}")
    if not os.access(p, os.W_OK | os.X_OK):
        if p == out.absolute():
            raise OutDirError(f"cannot use {out} as the output folder: it is not writable")
        raise OutDirError(f"cannot create the output folder {out}: {p} is not writable")
    return missing


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # innermost first
        try:
            d.rmdir()
        except OSError:
            return


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_ABSENT = object()


def _check_resume(out: Path, record: Mapping[str, Any]) -> None:
    """Refuse to resume ``out`` unless its ``config.json`` holds exactly ``record``."""
    path = out / "config.json"
    if not path.is_file():
        return  # nothing to resume: the run starts afresh
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResumeMismatchError(f"cannot resume {out}: {path} is unreadable ({e})") from None
    if not isinstance(saved, Mapping):
        raise ResumeMismatchError(f"cannot resume {out}: {path} does not hold a run's settings")
    # Compare as JSON, the form in which the saved record was written (tuples become lists, inf a string).
    requested = json.loads(json.dumps(record))

    def flat(rec: Mapping[str, Any]) -> dict[str, Any]:
        top = {k: v for k, v in rec.items() if k != "config"}
        cfg = rec.get("config", {})
        return {**top, **(_flatten(cfg) if isinstance(cfg, Mapping) else {"config": cfg})}

    old, new = flat({k: saved[k] for k in requested if k in saved}), flat(requested)

    def shown(d: Mapping[str, Any], k: str) -> str:
        return repr(d[k]) if k in d else "(absent)"

    keys = [*new, *(k for k in old if k not in new)]
    diffs = [
        f"{k}: {shown(old, k)} (saved) vs {shown(new, k)} (requested)"
        for k in keys
        if old.get(k, _ABSENT) != new.get(k, _ABSENT)
    ]
    if diffs:
        raise ResumeMismatchError(
            f"cannot resume {out}: its config.json was made with other settings ({'; '.join(diffs)}); "
            "resume with the saved settings, or start a new run in another folder"
        )


@contextlib.contextmanager
def lock_out_dir(out: str | Path) -> Iterator[Path]:
    """Create ``out`` if needed and hold its exclusive lock for the duration of the block.

    The lock is ``flock`` on ``out/.lock`` (the file holds the owner's pid, host and start time, for the message
    another run gets). It is released when the block ends, and by the kernel if the process dies; the file is
    removed on a normal exit and reused when a killed run left it behind.

    Raises:
        OutDirError: ``out`` is (or is under) a file, or cannot be created or written.
        OutDirBusyError: another process holds the lock.
    """
    out = Path(out)
    created = _missing_dirs(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(created)
        raise OutDirError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    lock = out / LOCK_NAME
    fd = _acquire(lock, out, created)
    try:
        yield out
    finally:
        if fd is not None:
            # Unlink while still holding the lock: a process that opened the old file finds it gone (see _acquire).
            with contextlib.suppress(OSError):
                lock.unlink()
            os.close(fd)


def _acquire(lock: Path, out: Path, created: list[Path]) -> int | None:
    if fcntl is None:  # pragma: no cover
        return None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            _remove_empty(created)
            denied = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            reason = "it is not writable" if denied else f"cannot create {lock} ({e.strerror})"
            raise OutDirError(f"cannot use {out} as the output folder: {reason}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = ""
            with contextlib.suppress(OSError):
                owner = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            raise OutDirBusyError(
                f"{out} is in use by another run ({owner or 'owner unknown'}); wait for it to finish or choose "
                "another output folder"
            ) from None
        # The holder we waited on may have unlinked the file just before releasing it: then our lock is on a
        # file nobody else will find, and a third run could lock a new one. Start again on the current file.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
            return fd
        os.close(fd)


def _on_rank_zero(claim: contextlib.AbstractContextManager[Path]) -> contextlib.AbstractContextManager[Path]:
    """Enter ``claim`` on rank 0 only and share its outcome, so every rank of a torchrun job fails alike."""
    # Not imported here: a process that has not loaded torch cannot be in a process group, and a plain run is
    # refused (busy folder, other settings) without paying for torch's import.
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return claim

    @contextlib.contextmanager
    def shared() -> Iterator[Path]:
        stack = contextlib.ExitStack()
        error: Exception | None = None
        out: Path | None = None
        if dist.get_rank() == 0:
            try:
                out = stack.enter_context(claim)
            except Exception as e:  # any failure: the other ranks must not wait in the broadcast forever
                error = e
        box: list[Any] = [None if error is None else (type(error).__name__, str(error))]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        if box[0] is not None:
            kind, message = box[0]
            known = {c.__name__: c for c in (OutDirError, ResumeMismatchError, OutDirBusyError)}
            if kind in known:
                raise known[kind](message)
            raise RuntimeError(f"rank 0 could not prepare the output folder: {kind}: {message}")
        with stack:
            yield out if out is not None else Path()

    return shared()


def run_experiment(
    name: str,
    *,
    preset: str = "quick",
    overrides: Mapping[str, str] | None = None,
    seed: int | None = None,
    out_dir: str | Path,
    resume: bool = False,
) -> Result:
    """Run experiment ``name`` with a preset and overrides, writing every artefact into ``out_dir``.

    The folder is locked for the run (see :func:`lock_out_dir`). With ``resume``, the experiment continues from
    its checkpoints in ``out_dir`` and the saved ``config.json`` must match this run's settings exactly; a
    folder without ``config.json`` starts a new run.

    Raises:
        ValueError: unknown experiment or preset; ``ConfigError`` for bad overrides.
        OutDirError: ``out_dir`` is a file or cannot be written.
        OutDirBusyError: another run holds ``out_dir``.
        ResumeMismatchError: ``resume`` with settings that differ from the saved ones.
    """
    module, cfg = resolve(name, preset=preset, overrides=overrides, seed=seed)
    out = Path(out_dir)
    record = {"experiment": name, "preset": preset, "config": config_to_dict(cfg)}

    @contextlib.contextmanager
    def claim() -> Iterator[Path]:
        with lock_out_dir(out) as d:
            if resume:
                _check_resume(d, record)  # under the lock: no other run can be rewriting config.json
            yield d

    with _on_rank_zero(claim()):
        return _execute(module, cfg, name, preset, out, record, resume)


def _execute(
    module: ModuleType, cfg: Any, name: str, preset: str, out: Path, record: Mapping[str, Any], resume: bool
) -> Result:
    from kexue.train import is_main_process
    from kexue.train.progress import install_default_handler

    install_default_handler()
    main = is_main_process()
    handler: logging.Handler | None = None
    if main:
        handler = _FileHandler(out / "log.txt", mode="a" if resume else "w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    try:
        if main:
            # On resume the saved settings equal these (checked under the lock): config.json stays as it was.
            if not (resume and (out / "config.json").is_file()):
                if resume:
                    log.info(f"nothing to resume in {out}: starting a new run")
                write_json(out / "config.json", record)
            write_json(out / "env.json", environment())
            log.info(f"== {name} ({preset}) -> {out}")
        t0 = time.perf_counter()
        result: Result = module.run(cfg, out, resume=resume)
        result.metrics.setdefault("wall_seconds", round(time.perf_counter() - t0, 2))
        if main:
            write_json(out / "metrics.json", result.metrics)
            write_json(
                out / "claims.json",
                {
                    "experiment": name,
                    "title": getattr(module, "TITLE", name),
                    "article": getattr(module, "ARTICLE", ""),
                    "article_title": getattr(module, "ARTICLE_TITLE", None),
                    "order": getattr(module, "ORDER", 100),
                    "preset": preset,
                    "claims": [c.to_dict() for c in result.claims],
                    "plots": result.plots,
                },
            )
            for c in result.claims:
                log.info(f"   [{c.verdict}] {c.id}: {c.evidence}")
        return result
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
