"""The ``kexue`` command: list, run and reproduce experiments, manage the data cache, rebuild reports."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("kexue")


def _setup_logging() -> None:
    if not any(getattr(h, "_kexue_console", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(message)s"))
        h._kexue_console = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"kexue: --set expects KEY=VALUE (e.g. --set epochs=3), got {item!r}")
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


def _cmd_run(args: argparse.Namespace) -> int:
    from kexue.experiments import ConfigError
    from kexue.experiments._runner import run_experiment
    from kexue.report import claims_table, collect
    from kexue.train import init_from_env, is_main_process, shutdown

    init_from_env()
    out = Path(args.out or f"runs/{args.name}-{args.preset}")
    try:
        run_experiment(
            args.name,
            preset=args.preset,
            overrides=_parse_sets(args.set or []),
            seed=args.seed,
            out_dir=out,
            resume=args.resume,
        )
    except (ConfigError, ValueError) as e:
        print(f"kexue run: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    if is_main_process():
        print(claims_table(collect(out)))
        print(f"results in {out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from kexue import experiments
    from kexue.experiments._runner import run_experiment
    from kexue.report import claims_table, collect, write_report

    names = args.only or experiments.available()
    for n in names:
        experiments.get(n)  # fail fast on a typo, before hours of work
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    failed = []
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
        except Exception:
            failed.append(name)
            out.mkdir(parents=True, exist_ok=True)
            err.write_text(traceback.format_exc(), encoding="utf-8")
            log.error(f"{name} failed; traceback in {err}")
    md, html = write_report(root)
    print(claims_table(collect(root)))
    print(f"\nreport: {html.resolve()}\n        {md.resolve()}")
    if failed:
        print(f"kexue reproduce: {len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kexue.report import claims_table, collect, write_report

    _, html = write_report(args.dir)
    print(claims_table(collect(args.dir)))
    print(f"report: {html}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from kexue.data import SOURCES, DataError, fetch, status

    if args.action == "fetch":
        if not args.names:
            print("kexue data fetch: name a dataset or 'all'", file=sys.stderr)
            return 2
        names = list(SOURCES) if "all" in args.names else args.names
        unknown = [n for n in names if n not in SOURCES]
        if unknown:
            print(
                f"kexue data fetch: unknown dataset(s) {unknown}; known: {', '.join(SOURCES)}",
                file=sys.stderr,
            )
            return 2
        try:
            for n in names:
                fetch(n, force=args.force)
        except DataError as e:
            print(f"kexue data fetch: {e}", file=sys.stderr)
            return 1
        return 0
    rows = status(args.names or None)
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
    p = argparse.ArgumentParser(prog="kexue", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="experiments, presets and claims").set_defaults(func=_cmd_list)

    r = sub.add_parser("run", help="run one experiment")
    r.add_argument("name")
    r.add_argument("--preset", default="quick", help="smoke | quick | full (default quick)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. epochs=3")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--out", default=None, help="run folder (default runs/NAME-PRESET)")
    r.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    r.set_defaults(func=_cmd_run)

    rp = sub.add_parser("reproduce", help="run every experiment and write the report")
    rp.add_argument("--preset", default="quick")
    rp.add_argument("--only", nargs="+", metavar="NAME")
    rp.add_argument("--seed", type=int, default=None)
    rp.add_argument("--out", default="runs/reproduce")
    rp.add_argument("--resume", action="store_true")
    rp.set_defaults(func=_cmd_reproduce)

    rep = sub.add_parser("report", help="rebuild report.md/report.html from a folder of runs")
    rep.add_argument("dir")
    rep.set_defaults(func=_cmd_report)

    d = sub.add_parser("data", help="fetch or check the offline datasets")
    d.add_argument("action", choices=["fetch", "status"])
    d.add_argument("names", nargs="*", help="dataset names, or 'all' (fetch)")
    d.add_argument("--force", action="store_true", help="fetch again even when verified")
    d.set_defaults(func=_cmd_data)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
