"""The ``kexue`` command: list, run and reproduce experiments, manage the data cache, rebuild reports.

Results (claims tables, listings, data status) go to stdout; progress and log lines to stderr. A command that
cannot do what it was asked prints one line, ``kexue: error: ...``, and exits with 2 when the command line must
change (an unknown name, a bad value, an unusable ``--out``) or 1 when the command was right but could not finish
(a folder in use, missing data, a failed experiment). Tracebacks are kept for bugs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from kexue import __version__

__all__ = ["CommandError", "build_parser", "main"]

log = logging.getLogger("kexue")

_DESCRIPTION = """\
Techniques from the Scientific Spaces blog (kexue.fm) in PyTorch, each reproduced with measured claims.
Run an experiment, reproduce them all with a report, rebuild a report, or manage the offline data.
"""

_EPILOG = """\
examples:
  kexue list
  kexue run mnist_baseline --preset smoke --out runs/mnist
  kexue run mnist_baseline --preset smoke --out runs/mnist --resume
  kexue reproduce --preset quick --only topk flatnce
  kexue report runs/reproduce
  kexue data status

exit status:
  0    success
  1    the command could not finish: an experiment failed, the output folder is in use by another run,
       a dataset is missing or unverified, no runs to report
  2    the command line is wrong: unknown experiment, preset, dataset or config key, a value of the wrong
       type, an --out that is a file or not writable, --resume with settings other than the saved ones
  130  interrupted (Ctrl-C)
"""


class CommandError(Exception):
    """A command refused or failed for a reason the user can act on; printed as one line.

    Args:
        message: the line after ``kexue: error: ``.
        exit_code: 2 when the command line must change, 1 when it could not finish.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _error(message: str) -> None:
    # One line, whatever the message holds, so scripts can rely on it.
    print(f"kexue: error: {' '.join(message.split())}", file=sys.stderr)


class _RankZeroFilter(logging.Filter):
    """Console lines from rank 0 only: torchrun starts one ``kexue`` process per rank, all with this handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") in ("", "0")


class _Console(logging.StreamHandler):
    """Log lines to the current ``sys.stderr``."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(_RankZeroFilter())

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--set expects KEY=VALUE (e.g. --set epochs=3), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    from kexue import experiments

    for name in experiments.available():
        m = experiments.get(name)
        print(f"{name}: {getattr(m, 'TITLE', '')}")
        print(f"    article: {getattr(m, 'ARTICLE', '')}")
        print(f"    presets: {', '.join(m.PRESETS)}")
        for cid, text in getattr(m, "CLAIMS", {}).items():
            print(f"    - {cid}: {text}")
    return 0


def _data_error(e: Exception) -> CommandError | None:
    """A missing or corrupt dataset as a one-line error (exit 1); ``None`` for anything else."""
    data = sys.modules.get("kexue.data")  # not loaded: the error cannot be a DataError (and torch stays unloaded)
    return CommandError(str(e), 1) if data is not None and isinstance(e, data.DataError) else None


def _save_traceback(out: Path) -> str:
    """Write the exception being handled to ``out/error.txt`` (main process only); say where it is."""
    from kexue.train import is_main_process

    if not is_main_process():
        return "the traceback is on the main process"
    err = out / "error.txt"
    try:
        err.write_text(traceback.format_exc(), encoding="utf-8")
    except OSError:
        traceback.print_exc()
        return "traceback above"
    return f"traceback in {err}"


def _cmd_run(args: argparse.Namespace) -> int:
    from kexue.experiments._runner import RunRefused, resolve, run_experiment
    from kexue.report import claims_table, collect

    overrides = _parse_sets(args.set or [])
    try:  # everything the arguments alone can get wrong, before a process group or a folder exists
        resolve(args.name, preset=args.preset, overrides=overrides, seed=args.seed)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.out is not None and not args.out.strip():
        raise CommandError("--out must name a folder, got an empty string")
    out = Path(args.out or f"runs/{args.name}-{args.preset}")
    # Under torchrun (one process per rank) join the process group. A plain run skips this and so does not load
    # torch before the output folder is checked: a refused run answers at once.
    distributed = int(os.environ.get("WORLD_SIZE", "1") or "1") > 1
    if distributed:
        from kexue.train import init_from_env

        init_from_env()
    try:
        run_experiment(
            args.name, preset=args.preset, overrides=overrides, seed=args.seed, out_dir=out, resume=args.resume
        )
    except RunRefused:
        raise
    except Exception as e:
        if (err := _data_error(e)) is not None:
            raise err from None
        # An experiment that crashed: one line here, the traceback in error.txt, as `kexue reproduce` does, so
        # that `kexue report` shows the run as failed instead of reading a stale claims.json as its result.
        raise CommandError(f"{args.name} failed ({type(e).__name__}: {e}); {_save_traceback(out)}", 1) from None
    finally:
        if distributed:
            from kexue.train import shutdown

            shutdown()
    from kexue.train import is_main_process

    if is_main_process():
        with contextlib.suppress(FileNotFoundError):
            (out / "error.txt").unlink()  # left by an earlier failed attempt (a --resume that now succeeded)
        print(claims_table(collect(out)))
        print(f"results in {out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from kexue import experiments
    from kexue.experiments._runner import RunRefused, lock_out_dir, resolve, run_experiment
    from kexue.report import claims_table, collect, write_report

    names = args.only or experiments.available()
    for n in names:  # fail fast on a typo, before hours of work
        try:
            resolve(n, preset=args.preset, seed=args.seed)
        except ValueError as e:
            raise CommandError(str(e)) from None
    root = Path(args.out)
    failed = []
    with lock_out_dir(root):  # one reproduction per folder; each experiment also locks its own sub-folder
        for i, name in enumerate(names, 1):
            log.info(f"[{i}/{len(names)}] {name}")
            out = root / name
            err = out / "error.txt"
            try:
                if err.exists():
                    err.unlink()
                run_experiment(name, preset=args.preset, out_dir=out, resume=args.resume, seed=args.seed)
            except KeyboardInterrupt:
                raise
            except RunRefused as e:  # the folder is not ours to write an error.txt into
                failed.append(name)
                log.error(f"{name} refused: {e}")
            except Exception:
                failed.append(name)
                out.mkdir(parents=True, exist_ok=True)
                err.write_text(traceback.format_exc(), encoding="utf-8")
                log.error(f"{name} failed; traceback in {err}")
        md, html = write_report(root)
    print(claims_table(collect(root)))
    print(f"\nreport: {html.resolve()}\n        {md.resolve()}")
    if failed:
        raise CommandError(f"{len(failed)} experiment(s) failed: {', '.join(failed)}", 1)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kexue.report import claims_table, collect, write_report

    root = Path(args.dir)
    if not root.exists():
        raise CommandError(f"no such folder: {root}")
    if not root.is_dir():
        raise CommandError(f"{root} is a file, not a folder of runs")
    runs = collect(root)
    if not runs:
        raise CommandError(f"no runs in {root} (a run folder holds claims.json or error.txt)", 1)
    try:
        _, html = write_report(root)
    except OSError as e:
        raise CommandError(f"cannot write the report into {root}: {e.strerror or e}", 1) from None
    print(claims_table(runs))
    print(f"report: {html}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from kexue.data import SOURCES, DataError, fetch, status

    if args.action == "fetch" and not args.names:
        raise CommandError("data fetch: name a dataset or 'all'")
    names = list(SOURCES) if "all" in args.names else args.names
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise CommandError(f"unknown dataset(s) {unknown}; known: {', '.join(SOURCES)}")
    if args.action == "fetch":
        try:
            for n in names:
                fetch(n, force=args.force)
        except DataError as e:
            raise CommandError(str(e), 1) from None
        return 0
    rows = status(names or None)
    print(f"{'name':<16} {'present':<8} {'size':>9}  {'verified':<8} origin")
    for r in rows:
        print(
            f"{r.name:<16} {'yes' if r.present else 'no':<8} {r.size_human:>9}  "
            f"{'yes' if r.verified else 'NO':<8} {SOURCES[r.name].origin}"
        )
    bad = [r for r in rows if not r.verified]
    for r in bad:
        print(f"  {r.name}: {r.problem}. Fix: kexue data fetch {r.name} --force")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kexue`` command (all sub-commands)."""
    p = argparse.ArgumentParser(
        prog="kexue", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "list", help="experiments, presets and claims", description="List the experiments, presets and claims."
    ).set_defaults(func=_cmd_list)

    r = sub.add_parser(
        "run",
        help="run one experiment",
        description=(
            "Run one experiment into its own folder (config.json, env.json, metrics.json, claims.json, log.txt, "
            "plots). The folder is locked while the run lasts; --resume continues a killed run with the same "
            "settings."
        ),
    )
    r.add_argument("name", help="experiment name (see: kexue list)")
    r.add_argument("--preset", default="quick", help="smoke | quick | full (default quick)")
    r.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. epochs=3 (repeatable)"
    )
    r.add_argument("--seed", type=int, default=None, help="override the config's seed")
    r.add_argument("--out", default=None, help="run folder (default runs/NAME-PRESET)")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoints in --out; refused when preset, --set or --seed differ from the saved run",
    )
    r.set_defaults(func=_cmd_run)

    rp = sub.add_parser(
        "reproduce",
        help="run every experiment and write the report",
        description="Run every (or the named) experiment into one folder and write report.md and report.html.",
    )
    rp.add_argument("--preset", default="quick", help="smoke | quick | full (default quick)")
    rp.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    rp.add_argument("--seed", type=int, default=None, help="override every experiment's seed")
    rp.add_argument(
        "--out", default="runs/reproduce", help="folder of the runs and the report (default runs/reproduce)"
    )
    rp.add_argument("--resume", action="store_true", help="continue each experiment from its checkpoints")
    rp.set_defaults(func=_cmd_reproduce)

    rep = sub.add_parser(
        "report",
        help="rebuild report.md/report.html from a folder of runs",
        description="Rebuild report.md and report.html from a folder of runs, without running anything.",
    )
    rep.add_argument("dir", help="a run folder, or a folder of run folders")
    rep.set_defaults(func=_cmd_report)

    d = sub.add_parser(
        "data",
        help="fetch or check the offline datasets",
        description="Fetch the offline datasets, or check the cached copies against their pinned sha256.",
    )
    d.add_argument("action", choices=["fetch", "status"])
    d.add_argument("names", nargs="*", help="dataset names, or 'all' (fetch)")
    d.add_argument("--force", action="store_true", help="fetch again even when verified")
    d.set_defaults(func=_cmd_data)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kexue`` command with ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    from kexue.experiments._runner import RunRefused

    args = build_parser().parse_args(argv)
    console = _Console()
    saved = (log.level, log.propagate)
    log.addHandler(console)
    log.setLevel(logging.INFO)
    log.propagate = False  # the console handler prints each line; a root handler would print it twice
    try:
        return int(args.func(args))
    except CommandError as e:
        _error(str(e))
        return e.exit_code
    except RunRefused as e:
        _error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        print("kexue: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (kexue list | head): not worth a traceback
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        log.removeHandler(console)
        log.setLevel(saved[0])
        log.propagate = saved[1]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
