"""The self-contained HTML report: a summary card per experiment, then one section per experiment.

Each section holds its empirical claims as one table (checks folded apart), each plot beside the claims that name it
(or in a grid under the table), a compact metrics table and the run's configuration. Plots are inlined as data URIs
and the only script is inline, so the file opens from disk with no network.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._assets import CSS, JS
from ._images import data_uri, image_size, thumbnail
from ._metrics import metric_tables
from ._runs import VERDICT_ORDER, ClaimRecord, Run, label, tone

__all__ = ["render_html"]

_URL = re.compile(r"https?://[^\s)<>\"']+")
_FILTERS = (
    ("reproduced", "reproduced / passed", "agree"),
    ("not reproduced", "not reproduced / failed", "contradict"),
    ("inconclusive", "inconclusive", "neutral"),
    ("not testable", "not testable", "hollow"),
)
SMOKE_NOTE = (
    "Preset <code>smoke</code> — pipeline check, not evidence. Smoke runs train for seconds on a sliver of the data "
    "to show that the code runs end to end; their verdicts, red ones included, say nothing about the article. "
    "Run <code>make reproduce</code> (preset <code>quick</code>) for evidence."
)


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _pill_class(verdict: str) -> str:
    return "neutral hollow" if verdict == "not testable" else tone(verdict)


def _pill(verdict: str, kind: str = "claim") -> str:
    return f"<span class='pill {_pill_class(verdict)}'>{_e(label(verdict, kind))}</span>"


def short_url(url: str) -> str:
    """``https://kexue.fm/archives/8586/`` -> ``kexue.fm/archives/8586``."""
    s = re.sub(r"^https?://", "", url.strip())
    s = re.sub(r"^www\.", "", s)
    return s.rstrip("/")


def _linkify(text: str) -> str:
    """Escape ``text`` and turn its URLs into links (shown short)."""
    out, last = [], 0
    for m in _URL.finditer(text):
        out.append(_e(text[last : m.start()]))
        url = m.group(0).rstrip(".,;")
        out.append(f"<a href='{_e(url)}'>{_e(short_url(url))}</a>")
        last = m.start() + len(url)
    out.append(_e(text[last:]))
    return "".join(out)


def _article_link(run: Run) -> str:
    if not run.article:
        return ""
    text = run.article_title or short_url(run.article)
    return f"<a href='{_e(run.article)}' title='{_e(run.article)}'>{_e(text)}</a>"


def _duration(seconds: Any) -> str | None:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return None
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _caption(name: str) -> str:
    return Path(name).stem.replace("_", " ")


class _Plots:
    """The plot files of one run, read once: data URI, pixel size and an id to link to."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.files = {p: (run.dir / p).read_bytes() for p in run.existing_plots()}

    def missing(self, names: Iterable[str]) -> list[str]:
        return [p for p in names if p not in self.files]

    def fig_id(self, name: str) -> str:
        return f"{self.run.anchor}-fig-{_slug(Path(name).stem)}"

    def figure(self, name: str, supports: Sequence[str] = ()) -> str:
        data = self.files[name]
        size = image_size(data)
        dims = f" width='{size[0]}' height='{size[1]}'" if size else ""
        # Wide multi-panel figures take the grid's full width so their labels stay legible.
        wide = " wide" if size and (size[0] >= 1000 or size[0] >= 2 * size[1]) else ""
        cap = _e(_caption(name))
        if supports:
            cap += " — evidence for " + ", ".join(f"<code>{_e(s)}</code>" for s in supports)
        return (
            f"<figure class='plot{wide}' id='{self.fig_id(name)}' title='click to enlarge'>"
            f"<img src='{data_uri(data, name)}'{dims} alt='{_e(_caption(name))}'>"
            f"<figcaption>{cap}</figcaption></figure>"
        )


def _stats(counts: dict[str, int]) -> str:
    cells = []
    for v in VERDICT_ORDER:
        n = counts.get(v, 0)
        cls = _pill_class(v) + (" zero" if n == 0 else "")
        cells.append(f"<div class='stat {cls}'><b>{n}</b>{_e(v)}</div>")
    return "<div class='stats' title='empirical claims by verdict'>" + "".join(cells) + "</div>"


def _checks_line(run: Run) -> str:
    checks = run.checks
    if not checks:
        return "<div class='checks note'>no deterministic checks</div>"
    passed = sum(c.verdict == "reproduced" for c in checks)
    cls = "ok" if passed == len(checks) else "bad"
    return f"<div class='checks'>checks: <b class='{cls}'>{passed} of {len(checks)} passed</b></div>"


def _card(run: Run, plots: _Plots) -> str:
    classes = "card" + (" smoke" if run.smoke else "") + (" failed" if run.error else "")
    href = f"#{run.anchor}"
    first = next((p for p in run.plots if p in plots.files), next(iter(plots.files), None))
    if first is not None:
        thumb = thumbnail(plots.files[first])
        img = f"<img src='{data_uri(thumb, first)}' alt='{_e(_caption(first))}'>"
        media = f"<a class='thumb' href='{href}' tabindex='-1'>{img}</a>"
    else:
        media = f"<a class='thumb none' href='{href}' tabindex='-1'>no plot</a>"
    tag = f"<span class='tag{' smoke' if run.smoke else ''}'>{_e(run.preset or 'preset ?')}</span>"
    if run.smoke:
        tag += " <span class='note'>not evidence</span>"
    body = [
        f"<h3><a href='{href}'>{_e(run.title)}</a></h3>",
        f"<div class='art'>{tag} {_article_link(run)}</div>",
    ]
    if run.error:
        last = run.error.strip().splitlines()[-1] if run.error.strip() else "error"
        body.append(f"<div class='err'><span class='pill failed-run'>run failed</span> {_e(last[:240])}</div>")
    else:
        body += [_checks_line(run), _stats(run.counts("claim"))]
    return (
        f"<article class='{classes}' data-exp='{_e(run.anchor)}'>{media}"
        f"<div class='body'>{''.join(body)}</div></article>"
    )


def _source(c: ClaimRecord, run: Run) -> str:
    src = c.source.strip()
    if not src or src == run.article:
        return ""
    if run.article and src.startswith(run.article):
        rest = src[len(run.article) :].strip()
        return f" · <a href='{_e(run.article)}'>article</a> {_e(rest)}" if rest else ""
    return " · " + _linkify(src)


def _fmt_mde(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def _claims_table(run: Run, claims: list[ClaimRecord], plots: _Plots, placed: set[str]) -> str:
    """One table of ``claims``; a plot a claim names follows the last of the consecutive claims that name it."""
    show_seeds = any(c.seeds is not None for c in claims)
    show_mde = any(c.mde is not None for c in claims)
    show_test = any(c.test for c in claims)
    ncols = 3 + show_seeds + show_mde + show_test
    cols = ["<col class='c-claim'>", "<col class='c-verdict'>", "<col>"]
    head = ["<th>Claim</th>", "<th>Verdict</th>", "<th>Evidence</th>"]
    if show_seeds:
        cols.append("<col class='c-num'>")
        head.append("<th title='independent runs per arm'>Seeds</th>")
    if show_mde:
        cols.append("<col class='c-num'>")
        head.append("<th title='minimum detectable effect, in the units of the compared metric'>MDE</th>")
    if show_test:
        cols.append("<col class='c-test'>")
        head.append("<th>Test</th>")
    rows = []
    group: list[str] = []  # row ids of the claims the pending figures support
    for i, c in enumerate(claims):
        row_id = f"{run.anchor}-c-{_slug(c.id)}-{i}"
        here = [p for p in c.plots if p in plots.files]
        links = "".join(f" <a class='figlink' href='#{plots.fig_id(p)}'>[figure: {_e(_caption(p))}]</a>" for p in here)
        missing = plots.missing(c.plots)
        if missing:
            links += f" <span class='missing'>(missing: {_e(', '.join(missing))})</span>"
        cells = [
            f"<td data-label='Claim'><p class='stmt'>{_e(c.statement) or _e(c.id)}</p>"
            f"<div class='cid'><code>{_e(c.id)}</code>{_source(c, run)}</div></td>",
            f"<td class='verdict' data-label='Verdict'>{_pill(c.verdict, c.kind)}</td>",
            f"<td class='ev' data-label='Evidence'>{_linkify(c.evidence)}{links}</td>",
        ]
        if show_seeds:
            cells.append(f"<td class='num' data-label='Seeds'>{c.seeds if c.seeds is not None else '—'}</td>")
        if show_mde:
            cells.append(f"<td class='num' data-label='MDE'>{_fmt_mde(c.mde)}</td>")
        if show_test:
            cells.append(f"<td class='test' data-label='Test'>{_e(c.test or '—')}</td>")
        rows.append(f"<tr class='claim {c.tone}' id='{row_id}' data-verdict='{_e(c.verdict)}'>{''.join(cells)}</tr>")
        group.append(row_id)
        nxt = claims[i + 1].plots if i + 1 < len(claims) else ()
        due = [p for p in here if p not in placed and p not in nxt]
        if due:
            supports = [x.id for x in claims if any(p in x.plots for p in due)]
            figs = "".join(plots.figure(p, supports) for p in due)
            rows.append(
                f"<tr class='figrow' data-for='{' '.join(group)}'><td colspan='{ncols}'>"
                f"<div class='figs'>{figs}</div></td></tr>"
            )
            placed.update(due)
        if not nxt or not set(nxt) & set(c.plots):
            group = []
    return (
        f"<div class='tablewrap'><table class='claims'><colgroup>{''.join(cols)}</colgroup>"
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _metrics(run: Run) -> str:
    t = metric_tables(run.metrics)
    if not t:
        return ""
    parts = ["<h3>Metrics</h3><div class='metrics'>"]
    if t.pairs:
        parts.append("<div class='kv'>")
        parts += [f"<div><span>{_e(k)}</span><b>{_e(v)}</b></div>" for k, v in t.pairs]
        parts.append("</div>")
    for m in t.matrices:
        head = "".join(f"<th scope='col'>{_e(c)}</th>" for c in m.columns)
        body = "".join(
            f"<tr><th scope='row'>{_e(r)}</th>{''.join(f'<td>{_e(v)}</td>' for v in vals)}</tr>" for r, vals in m.rows
        )
        cap = f"<caption>{_e(m.caption)}</caption>" if m.caption else ""
        parts.append(
            f"<div class='matrixwrap'><table class='matrix'>{cap}<thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
        )
    parts.append("</div>")
    if t.omitted:
        parts.append(f"<p class='note'>{t.omitted} more values in <code>metrics.json</code>.</p>")
    return "".join(parts)


def _meta(run: Run, root: Path) -> str:
    bits = []
    if run.article:
        bits.append(f"<span>article: {_article_link(run)}</span>")
    preset = run.preset or "?"
    bits.append(f"<span>preset <span class='tag{' smoke' if run.smoke else ''}'>{_e(preset)}</span></span>")
    dur = _duration(run.metrics.get("wall_seconds"))
    if dur:
        bits.append(f"<span>{_e(dur)}</span>")
    env = run.env
    if env.get("device"):
        bits.append(f"<span>{_e(env['device'])}</span>")
    if env.get("torch"):
        bits.append(f"<span>torch {_e(env['torch'])}</span>")
    if env.get("git_commit"):
        commit = str(env["git_commit"])
        bits.append(
            f"<span>commit <code>{_e(commit[:7] + ('+dirty' if commit.endswith('+dirty') else ''))}</code></span>"
        )
    try:
        folder = run.dir.relative_to(root).as_posix() or "."
    except ValueError:
        folder = run.dir.name
    bits.append(f"<span>folder <code>{_e(folder)}</code></span>")
    bits.append("<span><a href='#summary'>↑ summary</a></span>")
    return f"<div class='meta'>{''.join(bits)}</div>"


def _section(run: Run, plots: _Plots, root: Path) -> str:
    classes = "exp" + (" smoke" if run.smoke else "") + (" failed" if run.error else "")
    parts = [
        f"<section class='{classes}' id='{_e(run.anchor)}' data-exp='{_e(run.anchor)}'>",
        f"<h2>{_e(run.title)}</h2>",
        _meta(run, root),
    ]
    if run.smoke:
        parts.append(
            "<div class='banner slim' role='note'><strong>Preset <code>smoke</code>: pipeline check, not evidence."
            "</strong> The verdicts below only show that the code runs end to end.</div>"
        )
    if run.error:
        stale = (
            " An older <code>claims.json</code> in the folder is not shown: it is not the result of this attempt."
            if run.stale_claims
            else ""
        )
        parts.append(
            f"<p><span class='pill failed-run'>run failed</span> The traceback from <code>error.txt</code>.{stale}</p>"
            f"<pre>{_e(run.error.strip()[-4000:])}</pre>"
        )
    placed: set[str] = set()
    claims, checks = run.empirical, run.checks
    if claims:
        counts = run.counts("claim")
        tally = "".join(f"<span>{_pill(v)} {n}</span>" for v, n in counts.items() if n)
        parts.append(f"<h3>Empirical claims <span class='tally'>{tally}</span></h3>")
        parts.append(_claims_table(run, claims, plots, placed))
    if checks:
        passed = sum(c.verdict == "reproduced" for c in checks)
        # Checks are folded unless one of them failed or could not decide (the reader should see it), or there is
        # nothing else to read.
        open_ = "" if passed == len(checks) and claims else " open"
        parts.append(
            f"<details class='checks'{open_}><summary>Checks: {passed} of {len(checks)} passed "
            f"<small>deterministic properties verified numerically</small></summary>"
            f"{_claims_table(run, checks, plots, placed)}</details>"
        )
    rest = [p for p in plots.files if p not in placed]
    if rest:
        parts.append("<div class='figs'>" + "".join(plots.figure(p) for p in rest) + "</div>")
    missing = plots.missing(run.plots)
    if missing:
        parts.append(f"<p class='missing'>Plot file(s) listed but missing: {_e(', '.join(missing))}</p>")
    parts.append(_metrics(run))
    if run.config.get("config"):
        cfg = json.dumps(run.config["config"], indent=2, ensure_ascii=False)
        parts.append(f"<details><summary>Configuration</summary><pre>{_e(cfg)}</pre></details>")
    parts.append("</section>")
    return "".join(parts)


def _lede(runs: list[Run]) -> str:
    checks = [c for r in runs for c in r.checks]
    claims = [c for r in runs for c in r.empirical]
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICT_ORDER}
    failed = sum(r.error is not None for r in runs)
    bits = [f"<b>{len(runs)}</b> experiment{'s' if len(runs) != 1 else ''}"]
    if checks:
        passed = sum(c.verdict == "reproduced" for c in checks)
        bits.append(f"<b>{passed} of {len(checks)}</b> checks passed")
    if claims:
        bits.append(f"<b>{len(claims)}</b> empirical claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
    if failed:
        bits.append(f"<b>{failed}</b> run{'s' if failed != 1 else ''} failed")
    return "<p class='lede'>" + " · ".join(bits) + "</p>"


def _filters(runs: list[Run]) -> str:
    chips = "".join(
        f"<label class='chip'><input type='checkbox' value='{_e(v)}' checked><span class='dot {cls}'></span>"
        f"{_e(text)}</label>"
        for v, text, cls in _FILTERS
    )
    options = "".join(f"<option value='{_e(r.anchor)}'>{_e(r.name)}</option>" for r in runs)
    return (
        "<nav class='bar' id='filters' hidden aria-label='filter claims'><div class='wrap'>"
        f"<span>Show</span>{chips}"
        f"<select aria-label='experiment'><option value=''>all experiments</option>{options}</select>"
        "<span class='count'></span></div></nav>"
    )


def render_html(runs: list[Run], root: Path, *, title: str) -> str:
    """The whole report as one HTML document (no external resources)."""
    plots = {r.anchor: _Plots(r) for r in runs}
    smoke = [r.name for r in runs if r.smoke]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        "<header class='top'><div class='wrap'>",
        f"<h1>{_e(title)}</h1>",
        _lede(runs),
        "<p class='legend'><span><span class='pill agree'>green</span> agrees with the article</span>"
        "<span><span class='pill contradict'>red</span> contradicts it</span>"
        "<span><span class='pill neutral'>grey</span> inconclusive or not testable</span>"
        "<span>checks are deterministic properties (passed / failed); claims are empirical statements about "
        "training</span>"
        + (
            "<span><span class='pill failed-run'>run failed</span> no verdict: the run crashed</span>"
            if any(r.error for r in runs)
            else ""
        )
        + "</p>",
    ]
    if smoke:
        which = "every run" if len(smoke) == len(runs) else "runs " + ", ".join(smoke)
        parts.append(f"<div class='banner' role='note'><strong>{SMOKE_NOTE}</strong> (Applies to {_e(which)}.)</div>")
    parts.append("</div></header>")
    parts.append(_filters(runs))
    parts.append("<div class='wrap'>")
    if not runs:
        parts.append("<p>No run folders (with <code>claims.json</code> or <code>error.txt</code>) found.</p>")
    parts.append(
        "<section class='cards' id='summary' aria-label='summary'>"
        + "".join(_card(r, plots[r.anchor]) for r in runs)
        + "</section>"
    )
    parts += [_section(r, plots[r.anchor], root) for r in runs]
    parts.append(
        "<footer>Written by <code>kexue report</code> from the run folders' <code>claims.json</code>, "
        "<code>metrics.json</code>, <code>config.json</code>, <code>env.json</code> and plots; self-contained "
        "(plots inlined), it opens from disk with no network. Click a plot to enlarge it.</footer>"
    )
    parts.append(f"</div><script>{JS}</script></body></html>")
    return "\n".join(parts)
