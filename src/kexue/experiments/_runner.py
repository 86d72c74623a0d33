"""Run one experiment into its own folder: config.json, env.json, metrics.json, claims.json, log.txt, plots."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import get
from ._base import Result, apply_overrides, config_to_dict, write_json

__all__ = ["environment", "run_experiment"]

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


class _FileHandler(logging.FileHandler):
    """Marks the handler the runner adds so it can be removed again."""


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

    Raises:
        ValueError: unknown experiment or preset; :class:`ConfigError` for bad overrides.
    """
    module = get(name)
    presets: Mapping[str, Any] = module.PRESETS
    if preset not in presets:
        raise ValueError(f"experiment {name!r} has no preset {preset!r}; choose one of {list(presets)}")
    cfg = presets[preset]
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if seed is not None:
        cfg = apply_overrides(cfg, {"seed": str(seed)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from kexue.train import is_main_process

    main = is_main_process()
    handler: logging.Handler | None = None
    if main:
        handler = _FileHandler(out / "log.txt", mode="a" if resume else "w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        write_json(out / "config.json", {"experiment": name, "preset": preset, "config": config_to_dict(cfg)})
        write_json(out / "env.json", environment())
    t0 = time.perf_counter()
    try:
        log.info(f"== {name} ({preset}) -> {out}")
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
