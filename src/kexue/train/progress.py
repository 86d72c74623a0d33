"""Progress reporting: the ``kexue.train`` logger, its default console output, rank-0 gating and cell progress.

Training progress goes through :mod:`logging` (logger ``"kexue.train"``, a child of the library logger
``"kexue"``), never through ``print``, so an application decides where it ends up.

What a user sees without configuring anything: the first call of :func:`kexue.train.fit` (or a new
:class:`CellProgress`) installs, once, a *default* handler on ``"kexue"`` that writes INFO lines to stderr. It
writes only while no other handler would receive the record: as soon as the application configures logging
(``logging.basicConfig(...)``, a handler on ``"kexue"`` or on the root logger, pytest's capture), the default
handler steps aside and the application's handlers print each line once, in its format. This is
:data:`logging.lastResort` for INFO rather than WARNING. It follows the libraries people train with:
Lightning attaches a console handler to its logger when the root logger has none and logs at INFO, and
transformers gives its library root logger a stderr handler and an explicit default level; both so that a
script's output is not silent by default. Unlike Lightning, ``propagate`` is left on, so a logging configuration
made later still receives every record. The library logger is set to INFO only when nothing was configured
(its level is unset and no handler exists anywhere up to the root); a configuration made before the first
``fit`` keeps its own levels.

To silence progress: ``logging.getLogger("kexue").setLevel(logging.WARNING)``.

Under ``torchrun`` only rank 0 logs (:func:`is_rank_zero`), and tqdm bars are drawn only when stderr is a
terminal, so logs written to files or CI consoles hold plain lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import torch.distributed as dist

from kexue._validate import check_int

__all__ = ["LOGGER_NAME", "CellProgress", "format_duration", "install_default_handler", "is_rank_zero", "logger"]

LOGGER_NAME = "kexue.train"
logger = logging.getLogger(LOGGER_NAME)

_LIBRARY = "kexue"


def is_rank_zero() -> bool:
    """True on the process that reports progress: rank 0 of the process group, else ``$RANK`` (torchrun's) is 0.

    ``$RANK`` is consulted when no process group is initialised, so that ranks launched by ``torchrun`` stay
    quiet even before (or without) ``init_process_group``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


class _DefaultHandler(logging.StreamHandler):
    """Writes kexue's INFO lines to the *current* ``sys.stderr`` while no other handler receives them."""

    _kexue_passive = True  # does not count as "the application configured logging"

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))

    @property
    def stream(self) -> TextIO:
        # Looked up at every write, like logging.lastResort, so a replaced sys.stderr (capture, a notebook) is used.
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it; the property ignores it
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if not _others_receive(record.name, self):
            super().emit(record)


def _others_receive(name: str, me: logging.Handler) -> bool:
    """Would a record of logger ``name`` reach a handler other than ``me`` and the runner's log file?"""
    current: logging.Logger | None = logging.getLogger(name)
    while current is not None:
        if any(h is not me and not getattr(h, "_kexue_passive", False) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def install_default_handler() -> None:
    """Install the default console handler on the ``"kexue"`` logger, once (see the module docstring).

    Called by :func:`kexue.train.fit` and :class:`CellProgress`; nothing happens at import.
    """
    lib = logging.getLogger(_LIBRARY)
    if any(isinstance(h, _DefaultHandler) for h in lib.handlers):
        return
    configured = lib.level != logging.NOTSET or any(
        not getattr(h, "_kexue_passive", False) for h in _handlers_up_to_root(lib)
    )
    lib.addHandler(_DefaultHandler())
    if not configured:
        lib.setLevel(logging.INFO)


def _handlers_up_to_root(lg: logging.Logger) -> list[logging.Handler]:
    out: list[logging.Handler] = []
    current: logging.Logger | None = lg
    while current is not None:
        out += current.handlers
        current = current.parent if current.propagate else None
    return out


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above (``62`` -> ``"1:02"``, ``3662`` -> ``"1:01:02"``)."""
    s = max(round(seconds), 0)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class CellProgress:
    """Overall progress across an experiment's cells (arms x seeds x ...): one log line as each cell starts.

    A line reads ``[name] cell 3/12 label · elapsed 1:02, ETA 4:10``; the ETA is the mean time of the cells
    timed so far times the cells left. Cells restored from an earlier run (``resume``) are counted with
    :meth:`skip` so they do not shorten the estimate. Lines go to the ``kexue.train`` logger on rank 0 only.

    Args:
        total: the number of cells the experiment will run.
        name: label at the start of each line (the experiment's name).
        clock: seconds as a float; defaults to :func:`time.monotonic` (tests pass a fake clock).

    Raises:
        ValueError: ``total`` < 1.

    Example:
        >>> progress = CellProgress(2, name="demo")
        >>> for arm in ("baseline", "flatnce"):
        ...     with progress.cell(arm):
        ...         pass  # train and evaluate one arm
    """

    def __init__(self, total: int, *, name: str = "cells", clock: Callable[[], float] = time.monotonic) -> None:
        self.total = check_int("total", total, low=1)
        self.name = name
        self._clock = clock
        self._start = clock()
        self.done = 0
        self._timed = 0
        self._timed_seconds = 0.0
        install_default_handler()

    @property
    def elapsed(self) -> float:
        """Seconds since this object was created."""
        return self._clock() - self._start

    @property
    def eta(self) -> float | None:
        """Estimated seconds until every cell is done; ``None`` before the first timed cell ends."""
        if self._timed == 0:
            return None
        return self._timed_seconds / self._timed * max(self.total - self.done, 0)

    @contextmanager
    def cell(self, label: str = "") -> Iterator[None]:
        """Time one cell: log its start with elapsed time and ETA; count it when the block ends without error."""
        eta = self.eta
        timing = f"elapsed {format_duration(self.elapsed)}" + (
            f", ETA {format_duration(eta)}" if eta is not None else ""
        )
        self._log(f"[{self.name}] cell {self.done + 1}/{self.total}{' ' + label if label else ''} · {timing}")
        t0 = self._clock()
        yield
        self._timed += 1
        self._timed_seconds += self._clock() - t0
        self._advance()

    def skip(self, label: str = "", reason: str = "done before") -> None:
        """Count a cell that needs no work (its result was restored), without timing it."""
        self._log(f"[{self.name}] cell {self.done + 1}/{self.total}{' ' + label if label else ''}: skipped ({reason})")
        self._advance()

    def _advance(self) -> None:
        self.done += 1
        if self.done == self.total:
            self._log(f"[{self.name}] {self.total} cells done in {format_duration(self.elapsed)}")

    @staticmethod
    def _log(message: str) -> None:
        if is_rank_zero():
            logger.info(message)
