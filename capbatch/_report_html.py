"""The HTML report: one self-contained page, plus a compact version for notebooks.

Every answer, label, group value, column name, error text and file name is untrusted
text. It goes through ``esc`` (``html.escape``) into text nodes only, never into an
attribute: attributes hold fixed class names and ``data:`` URIs built here. Charts are
matplotlib PNGs (drawn on an Agg canvas, without touching pyplot's global backend) and
images are embedded as ``data:`` URIs, so the page needs no network. A strict
Content-Security-Policy forbids scripts and remote content as defence in depth.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import _metrics
from ._exceptions import RowInputError
from ._images import (
    INPUT_TOO_LARGE,
    INPUT_TRUNCATED_IMAGE,
    image_format,
    pillow_guard,
    pixel_error,
)
from ._metrics import LABELS, fmt, missing, shown, usd
from ._version import __version__

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._report import Comparison, Report

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
GALLERY_LIMIT = 48
DISAGREEMENT_LIMIT = 200
_THUMB = (320, 120)
_EMBED_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_MAX_EMBED_BYTES = 256 * 1024
_THUMB_MAX_PIXELS = 16_000_000  # 64 MB as RGBA while the thumbnail is made
_COLOURS = ("#3b6ea8", "#d0893a", "#4c9a6a", "#b5475b", "#7a68a6", "#6b7b8c")

GROUP_COLUMNS = tuple(
    "rows labelled solved_rate accuracy ci_accuracy cer latency_p50_ms latency_p95_ms"  # noqa: SIM905
    " cost_per_correct_usd".split()
)
HEADLINE = tuple(
    "accuracy ci_accuracy cer solved_rate latency_p50_ms latency_p95_ms throughput_rps"  # noqa: SIM905
    " cost_per_1000_usd cost_per_correct_usd".split()
)


def esc(value: Any, limit: int = 80) -> str:
    """Untrusted text for an HTML text node: ``shown``, then escaped."""
    return html.escape(shown(value, limit), quote=True)


def table(frame: pd.DataFrame, *, index: bool = True, numeric: Iterable[str] = ()) -> str:
    """An escaped HTML table; index values (and names) are escaped like everything else."""
    numeric = set(numeric) or set(frame.columns) & set(LABELS) | {"count", "share", "agree"}
    names = [n for n in frame.index.names] if index else []
    head = "".join(f"<th>{esc(n if n is not None else '')}</th>" for n in names)
    head += "".join(
        f'<th class="num">{esc(LABELS.get(str(c), c))}</th>'
        if c in numeric
        else f"<th>{esc(LABELS.get(str(c), c))}</th>"
        for c in frame.columns
    )
    body = []
    for key, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        keys = (key if isinstance(key, tuple) else (key,)) if index else ()
        cells = "".join(f"<th>{esc(k)}</th>" for k in keys)
        for column, value in zip(frame.columns, row, strict=True):
            if column in numeric:
                cells += f'<td class="num">{esc(fmt(str(column), value))}</td>'
            else:
                cells += f"<td>{esc(value)}</td>"
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def metric_table(summary: pd.DataFrame) -> str:
    """Metrics as rows, one column per run (``summary`` has one row per run)."""
    rows = []
    for column in summary.columns:
        cells = "".join(f'<td class="num">{esc(fmt(column, v))}</td>' for v in summary[column])
        rows.append(f"<tr><th>{esc(LABELS.get(column, column))}</th>{cells}</tr>")
    head = "".join(f'<th class="num">{esc(n)}</th>' for n in summary.index)
    return (
        f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{esc(v)}</div><div class="name">{esc(k)}'
            "</div></div>"
            for k, v in items
        )
        + "</div>"
    )


# -- charts -------------------------------------------------------------------------------


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x" if height > width / 2 else "y", color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _img(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a glyph missing from the font is drawn as a box
        warnings.simplefilter("ignore")
        fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="chart" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _plain(texts: Iterable[Any]) -> None:
    for t in texts:
        t.set_parse_math(False)  # a "$" in a group value is text, not TeX


def latency_chart(latencies: Mapping[str, np.ndarray]) -> str:
    """Histogram of latencies per run (NaN dropped); the far tail goes into the last bin."""
    values = {n: v[~np.isnan(v)] for n, v in latencies.items()}
    every = np.concatenate([v for v in values.values()] or [np.zeros(0)])
    if every.size == 0:
        return '<p class="empty">No latencies recorded (cache hits and unsent rows have none).</p>'
    p50, p95, p995 = np.percentile(every, [50, 95, 99.5])
    # A few very slow rows would squash the rest into a couple of bins: cap the axis.
    top = max(float(min(p995, max(2 * p95, 4 * p50))), float(every.min()) + 1.0)
    bins = np.linspace(float(every.min()), top, 41)
    fig, ax = _figure(7.5, 2.8)
    for (name, v), colour in zip(values.items(), _COLOURS * 9, strict=False):
        counts, _ = np.histogram(np.clip(v, None, top), bins=bins)
        ax.stairs(
            counts,
            bins,
            fill=len(values) == 1,
            color=colour,
            alpha=0.85,
            label=shown(name, 24),
            linewidth=1.5,
        )
    for p, style in ((50, "--"), (95, ":")):
        if len(values) == 1:
            x = float(np.percentile(every, p))
            ax.axvline(x, color="#333", linestyle=style, linewidth=1, label=f"p{p} {x:,.0f} ms")
    ax.set_xlabel(f"latency (ms); rows slower than {top:,.0f} ms drawn in the last bin")
    ax.set_ylabel("rows")
    _plain(ax.legend(frameon=False, fontsize=8).get_texts())
    return _img(fig, "latency histogram")


def bar_chart(frame: pd.DataFrame, columns: Sequence[str], title: str, percent: bool) -> str:
    """Horizontal bars: one group of bars per row of ``frame``, one bar per column."""
    rows = frame.head(30)
    labels = [
        shown(k if not isinstance(k, tuple) else " · ".join(map(str, k)), 28) for k in rows.index
    ]
    fig, ax = _figure(7.5, 0.8 + 0.28 * len(rows) * max(1, len(columns)) ** 0.6)
    y = np.arange(len(rows))
    width = 0.8 / len(columns)
    for i, (column, colour) in enumerate(zip(columns, _COLOURS, strict=False)):
        values = rows[column].to_numpy(dtype=float, na_value=np.nan) * (100 if percent else 1)
        ax.barh(
            y + (i - (len(columns) - 1) / 2) * width,
            np.nan_to_num(values),
            height=width,
            color=colour,
            label=shown(LABELS.get(column, column), 40),
        )
    ax.set_yticks(y, labels=labels, parse_math=False)
    ax.invert_yaxis()
    fig.suptitle(shown(title, 60), x=0.01, ha="left", fontsize=10, parse_math=False)
    if percent:
        ax.set_xlim(0, 100)
        ax.set_xlabel("%")
    if len(columns) > 1:
        legend = fig.legend(
            frameon=False, fontsize=8, loc="outside upper right", ncols=min(len(columns), 4)
        )
        _plain(legend.get_texts())
    return _img(fig, "bar chart")


# -- images ---------------------------------------------------------------------------------


def thumbnail(report: Report, value: Any) -> str | None:
    """A ``data:`` URI of the image a cell stands for, or None when it cannot be read."""
    try:
        return _thumbnail_uri(report, value)
    except RowInputError:
        return None


def _picture(report: Report, value: Any) -> str:
    """The gallery's image, or a placeholder saying why there is none."""
    try:
        uri = _thumbnail_uri(report, value)
    except RowInputError as exc:
        too_large = exc.error_code == INPUT_TOO_LARGE
        why = "image too large to show" if too_large else "image not available"
        return f'<div class="noimg">{why}</div>'
    return f'<img alt="captcha" src="{uri}">'


def _thumbnail_uri(report: Report, value: Any) -> str:
    # report.image reads at most MAX_IMAGE_BYTES, and refuses FIFOs and devices unopened.
    data = report.image(value)
    mime = _EMBED_AS_IS.get(image_format(data) or "")
    if mime is None or len(data) > _MAX_EMBED_BYTES:
        from PIL import Image

        try:
            with pillow_guard(), Image.open(io.BytesIO(data)) as image:
                # A small file can still decode to a huge bitmap (PNG compresses a plain
                # area to almost nothing): bound what thumbnail() decodes.
                if image.width * image.height > _THUMB_MAX_PIXELS:
                    pixels = f"{image.width}x{image.height} pixels"
                    raise RowInputError(f"{pixels}, too many", error_code=INPUT_TOO_LARGE)
                image.thumbnail(_THUMB)
                buffer = io.BytesIO()
                image.convert("RGBA").save(buffer, "PNG")
        except RowInputError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, bomb warnings...
            code = INPUT_TOO_LARGE if pixel_error(exc) else INPUT_TRUNCATED_IMAGE
            raise RowInputError(str(exc), error_code=code) from None
        data, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def gallery(report: Report, limit: int = GALLERY_LIMIT) -> str:
    """Wrong answers first, then failed rows: image, label and answer of each."""
    wrong = report.wrong_rows()
    answered = _metrics.flag(report.scored["answer"].iloc[wrong].str.len() > 0)
    chosen = np.concatenate([wrong[answered], wrong[~answered]])[:limit]
    if chosen.size == 0:
        return '<p class="empty">No wrong answers.</p>'
    rows = report.results.iloc[chosen]
    column = report.image_column
    id_column = _id_column(rows)
    ids = rows[id_column] if id_column else None
    figures = []
    for i in range(len(rows)):
        picture = (
            _picture(report, rows[column].iloc[i])
            if column
            else '<div class="noimg">image not available</div>'
        )
        answer = rows["answer"].iloc[i]
        if missing(answer) or not str(answer).strip():
            code = rows["error_code"].iloc[i] if "error_code" in rows.columns else None
            said = f'<span class="failed">no answer · {esc(code)}</span>'
        else:
            said = f"<code>{esc(answer)}</code>"
        who = f'<div class="id">{esc(ids.iloc[i])}</div>' if ids is not None else ""
        figures.append(
            f"<figure>{picture}<figcaption>{who}<div>label <code>"
            f"{esc(rows[report.label].iloc[i])}</code></div><div>answer {said}</div>"
            "</figcaption></figure>"
        )
    more = len(wrong) - chosen.size
    tail = f'<p class="muted">and {more:,} more.</p>' if more > 0 else ""
    return f'<div class="gallery">{"".join(figures)}</div>{tail}'


def _id_column(frame: pd.DataFrame) -> str | None:
    from ._inputs import ID_COLUMN_NAMES

    return next((c for c in ID_COLUMN_NAMES if c in frame.columns), None)


# -- pages ----------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;
margin:0;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid
#dde1e6;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.muted,.meta{color:#5b6570}.meta span{display:inline-block;margin-right:16px}
.notes{background:#fff6e0;border:1px solid #e8c870;border-radius:6px;padding:8px 14px;
margin:14px 0}.notes li{margin:2px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;
margin:14px 0}.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;
padding:10px 12px}.card .value{font-size:20px;font-weight:600}.card .name{color:#5b6570;
font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #e1e4e8;padding:4px 9px;text-align:left;vertical-align:top}
thead th{background:#eef1f4}tbody th{font-weight:500;background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:grid;grid-template-columns:minmax(0,auto) minmax(0,1fr);gap:28px;
align-items:start}.cols>section{min-width:0}
img.chart{max-width:100%;background:#fff;border:1px solid #e1e4e8;border-radius:4px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef1f4;
padding:0 3px;border-radius:3px;white-space:pre-wrap;word-break:break-all}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
figure{margin:0;background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:8px}
figure img{width:100%;height:auto;image-rendering:auto;display:block;margin-bottom:4px}
.noimg{height:56px;display:flex;align-items:center;justify-content:center;color:#8a939c;
background:#f0f2f4;border-radius:4px;margin-bottom:4px;font-size:12px}
figcaption{font-size:12px}.id{color:#5b6570}.failed{color:#b5475b}
td.ok{background:#e9f6ee}td.bad{background:#fbecee}
footer{margin-top:36px;color:#8a939c;font-size:12px}
"""


def _document(title: str, body: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body><main>{body}"
        f"<footer>made by capbatch {esc(__version__)} on {esc(now)}</footer></main></body></html>\n"
    )


def _notes(notes: Sequence[str]) -> str:
    items = "".join(f"<li>{esc(n, 300)}</li>" for n in notes)
    return f'<ul class="notes">{items}</ul>' if notes else ""


def _run_line(report: Report) -> str:
    run, settings = report.run, report.run.get("settings") or {}
    rate, price = settings.get("rate"), settings.get("price")
    if isinstance(rate, (int, float)):
        rate = "unlimited" if rate >= 1e5 else f"{rate:g} req/s"
    if isinstance(price, (int, float)):
        price = f"{usd(price)} per task"
    parts = {
        "results": report.source.name if report.source else "DataFrame",
        "provider": run.get("provider"),
        "task": run.get("task_type"),
        "rate": rate,
        "in flight": settings.get("max_in_flight"),
        "price": price,
        "params": settings.get("task_params") or None,
        "label column": report.label,
        "matching": "case-sensitive" if report.case_sensitive else "case-insensitive",
    }
    spans = "".join(f"<span>{esc(k)}: {esc(v)}</span>" for k, v in parts.items() if not missing(v))
    return f'<p class="meta">{spans}</p>'


def headline(row: pd.Series) -> str:
    return cards([(LABELS[k], fmt(k, row[k])) for k in HEADLINE])


def _groups(groups: Mapping[str, pd.DataFrame]) -> str:
    """Per group column: a chart of accuracy and a table (runs side by side if several)."""
    parts = []
    for column, frame in groups.items():
        parts.append(f"<h3>by {esc(column)}</h3>")
        if len(frame) and frame.index.nlevels == 2:  # (run, value): one bar per run
            runs = list(dict.fromkeys(frame.index.get_level_values(0)))
            wide = frame["accuracy"].unstack(0)[runs]
            wide.columns = [f"run {n}" if n in LABELS else str(n) for n in wide.columns]
            title = f"accuracy by {column}, per run"
            parts.append(bar_chart(wide, list(wide.columns), title, percent=True))
        elif len(frame):
            title = f"accuracy by {column}"
            parts.append(bar_chart(frame, ["accuracy", "ci_accuracy"], title, percent=True))
        parts.append(table(frame[list(GROUP_COLUMNS)]))
    return "".join(parts)


def _errors(errors: pd.DataFrame, index: Sequence[str]) -> str:
    return table(errors.set_index(list(index))) if len(errors) else "<p>No failed rows.</p>"


def _cost(summary: pd.DataFrame, run: Mapping[str, Any]) -> str:
    cost = summary[["cost_usd", "cost_per_1000_usd", "cost_per_correct_usd"]]
    if len(cost) > 1:
        return metric_table(cost)
    items = [(LABELS[c], fmt(c, cost[c].iloc[0])) for c in cost.columns]
    before, after = run.get("balance_before"), run.get("balance_after")
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        items.append(("balance change (provider)", usd(before - after)))
    return cards(items)


def _latency(report: Report, rows: np.ndarray | None = None) -> np.ndarray:
    values = report.scored["latency_ms"].to_numpy()
    return values if rows is None else values[rows]


def report_page(report: Report) -> str:
    """The whole page for one report."""
    confusions = report.confusions.rename(
        columns={"label_char": "label character", "answer_char": "answer character"}
    )
    body = (
        f"<h1>capbatch report: {esc(report.name)}</h1>{_run_line(report)}{_notes(report.notes)}"
        f"{headline(report.summary.iloc[0])}"
        f'<div class="cols"><section><h2>Summary</h2>{metric_table(report.summary)}</section>'
        f"<section><h2>Latency</h2>{latency_chart({report.name: _latency(report)})}"
        f"<h2>Cost</h2>{_cost(report.summary, report.run.get('summary') or {})}</section></div>"
        f"<h2>Accuracy by group</h2>{_groups(report.groups)}"
        f'<div class="cols"><section><h2>Failures by error code</h2>'
        f"{_errors(report.errors, ['error_code'])}</section>"
        '<section><h2>Character confusions</h2><p class="muted">label → answer character in '
        "wrong answers</p>"
        f"{table(confusions, index=False, numeric=['count']) if len(confusions) else 'None.'}"
        f"</section></div><h2>Wrong answers</h2>{gallery(report)}"
    )
    return _document(f"capbatch report: {report.name}", body)


def report_fragment(report: Report) -> str:
    """The compact notebook view: headline, summary, latency and accuracy by group."""
    body = (
        f"<h3>capbatch report: {esc(report.name)}</h3>{_notes(report.notes)}"
        f"{headline(report.summary.iloc[0])}"
        f'<div class="cols"><div>{metric_table(report.summary)}</div><div>'
        f"{latency_chart({report.name: _latency(report)})}"
        f"{_groups(dict(list(report.groups.items())[:1]))}</div></div>"
    )
    return _scoped(body)


def _scoped(body: str) -> str:
    # Notebook cells share one page: the rules apply inside the report's own box only.
    rules = [r for r in _STYLE.replace("\n", "").split("}") if r.strip()]
    style = "".join(f".capbatch-report {r}}}" for r in rules if not r.startswith(("body", "main")))
    return f'<div class="capbatch-report"><style>{style}</style>{body}</div>'


def comparison_page(c: Comparison) -> str:
    """The whole page for a comparison of runs."""
    names = ", ".join(c.names)
    accuracy = [(f"accuracy · {shown(n, 20)}", fmt("accuracy", a)) for n, a in
                c.summary["accuracy"].items()]  # fmt: skip
    latencies = {n: _latency(r, c.positions[n]) for n, r in c.reports.items()}
    pairs = table(c.pairs, index=False, numeric=["rows", "agree", "agreement"])
    by_run = bar_chart(c.summary, ["accuracy", "ci_accuracy"], "accuracy by run", percent=True)
    cost = bar_chart(c.summary, ["cost_per_1000_usd"], "cost per 1,000 rows (USD)", False)
    body = (
        f"<h1>capbatch comparison: {esc(names, 200)}</h1>"
        f'<p class="meta"><span>rows matched by {esc(c.key)}</span>'
        f"<span>{len(c.matched):,} matched rows</span></p>{_notes(c.notes)}"
        + cards([("agreement (all runs)", fmt("agreement", c.agreement)),
                 ("rows where runs disagree", f"{len(c.disagreements):,}"), *accuracy])
        + f'<div class="cols"><section><h2>Summary, side by side</h2>{metric_table(c.summary)}'
        f"</section><section><h2>Agreement between runs</h2>{pairs}"
        f"<h2>Latency</h2>{latency_chart(latencies)}</section></div>"
        f"<h2>Accuracy</h2>{by_run}{_groups(c.groups)}<h2>Cost</h2>{cost}{_cost(c.summary, {})}"
        f"<h2>Failures by error code</h2>{_errors(c.errors, ['run', 'error_code'])}"
        f"<h2>Rows where the runs disagree</h2>{disagreements(c)}"
    )  # fmt: skip
    return _document(f"capbatch comparison: {names}", body)


def disagreements(c: Comparison, limit: int = DISAGREEMENT_LIMIT) -> str:
    """The first ``limit`` rows where the runs disagree; answers marked right or wrong."""
    if c.disagreements.empty:
        return "<p>The runs agree on every matched row.</p>"
    rows = c.disagreements.head(limit)
    body = []
    for at, row in rows.iterrows():
        cells = f"<td>{esc(row.iloc[0])}</td><td><code>{esc(row.iloc[1])}</code></td>"
        for name in c.names:
            mark = "ok" if c.correct.at[at, name] else "bad"
            cells += f'<td class="{mark}"><code>{esc(row[name])}</code></td>'
        body.append(f"<tr>{cells}</tr>")
    head = "".join(f"<th>{esc(x)}</th>" for x in rows.columns)
    more = len(c.disagreements) - len(rows)
    tail = f'<p class="muted">and {more:,} more (Comparison.disagreements).</p>' if more else ""
    return (
        '<p class="muted">green: right against the label; red: wrong.</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{tail}"
    )


def comparison_fragment(c: Comparison) -> str:
    """The compact notebook view of a comparison."""
    agreement = [("agreement", fmt("agreement", c.agreement)),
                 ("disagreeing rows", f"{len(c.disagreements):,}")]  # fmt: skip
    chart = bar_chart(c.summary, ["accuracy", "ci_accuracy"], "accuracy by run", percent=True)
    return _scoped(
        f"<h3>capbatch comparison: {esc(', '.join(c.names), 200)}</h3>{_notes(c.notes)}"
        f"{cards(agreement)}{metric_table(c.summary)}{chart}"
    )


def page(item: Report | Comparison) -> str:
    """The whole page for a report or a comparison."""
    from ._report import Report

    return report_page(item) if isinstance(item, Report) else comparison_page(item)


def fragment(item: Report | Comparison) -> str:
    """The notebook view of a report or a comparison."""
    from ._report import Report

    return report_fragment(item) if isinstance(item, Report) else comparison_fragment(item)
