"""The HTML report: one self-contained page, plus a compact version for notebooks.

The markup is in Jinja2 templates (``capbatch/_reports/templates/``, one per page and
notebook view, with shared macros and the base layout). They are rendered with
autoescaping always on and ``StrictUndefined``, so every value a template prints is
HTML-escaped, in text and in attributes alike, and a misspelt name fails instead of
printing nothing. This module only prepares the data: numbers formatted, untrusted text
made visible with ``shown`` (control characters escaped, long text cut), rows turned
into ``Cell`` tuples, charts and images turned into ``data:`` URIs. It never builds
markup, and never marks anything as safe: every value handed to a template is a plain
``str`` (so no ``__html__`` method of a user's object can bypass the escaping). Charts
(``charts.py``) and images are embedded as ``data:`` URIs, so the page needs no network.
A strict Content-Security-Policy forbids scripts and remote content as defence in depth.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from capbatch._exceptions import RowInputError
from capbatch._io.images import (
    INPUT_TOO_LARGE,
    INPUT_TRUNCATED_IMAGE,
    image_format,
    pillow_guard,
    pixel_error,
)
from capbatch._reports import metrics as _metrics
from capbatch._reports.charts import bar_chart, latency_chart
from capbatch._reports.metrics import LABELS, fmt, missing, shown, usd
from capbatch._version import __version__

if TYPE_CHECKING:
    import jinja2

    from capbatch._reports.compare import Comparison
    from capbatch._reports.report import Report

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATES = Path(__file__).with_name("templates")
GALLERY_LIMIT = 48
DISAGREEMENT_LIMIT = 200
_THUMB = (320, 120)
_EMBED_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_MAX_EMBED_BYTES = 256 * 1024
_THUMB_MAX_PIXELS = 16_000_000  # 64 MB as RGBA while the thumbnail is made

GROUP_COLUMNS = tuple(
    "rows labelled solved_rate accuracy ci_accuracy cer latency_p50_ms latency_p95_ms"  # noqa: SIM905
    " cost_per_correct_usd".split()
)
HEADLINE = tuple(
    "accuracy ci_accuracy cer solved_rate latency_p50_ms latency_p95_ms throughput_rps"  # noqa: SIM905
    " cost_per_1000_usd cost_per_correct_usd".split()
)


# -- templates ------------------------------------------------------------------------------


@functools.cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment: autoescape on for every template, StrictUndefined.

    Built on first use, so that importing capbatch does not import Jinja2. The templates
    are files beside this module (package data in the wheel), read from there.
    """
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name (style.css included)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def render(template: str, **context: Any) -> str:
    """A template rendered with the page's fixed parts (CSP, version, time) added."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # The CSP is escaped like any value: its quotes come out as &#39;, which the browser
    # reads back as the same policy.
    fixed = {"csp": CSP, "version": shown(__version__), "now": now}
    return environment().get_template(template).render(fixed | context)


class Cell(NamedTuple):
    """One table cell: its text, a class name, whether it is a row header or code."""

    text: str
    cls: str = ""  # "", "num" (right-aligned number), "ok" or "bad" (a marked answer)
    head: bool = False  # a <th> in the body: the row's key
    code: bool = False  # the text in <code>: an answer or a label


class Table(NamedTuple):
    head: list[Cell]
    rows: list[list[Cell]]
    cls: str = ""


class Group(NamedTuple):
    """Accuracy by one group column: a chart (None when there are no groups), a table."""

    column: str
    chart: str | None
    table: Table


class Tile(NamedTuple):
    """One wrong answer in the gallery."""

    src: str | None  # the image as a data: URI, or None and why there is none
    why: str
    who: str | None  # the row's id, if the table has an id column
    label: str
    answer: str | None  # None when the row has no answer, then the error code
    code: str


class Gallery(NamedTuple):
    tiles: list[Tile]
    more: str  # how many wrong answers are left out, "" if none


class Cost(NamedTuple):
    table: Table | None  # several runs: a table; one run: cards
    cards: list[tuple[str, str]]


def table(frame: pd.DataFrame, *, index: bool = True, numeric: Iterable[str] = ()) -> Table:
    """A table's cells; index values (and names) are text like everything else."""
    numeric = set(numeric) or set(frame.columns) & set(LABELS) | {"count", "share", "agree"}
    names = list(frame.index.names) if index else []
    head = [Cell(shown(n if n is not None else "")) for n in names]
    head += [
        Cell(shown(LABELS.get(str(c), c)), "num" if c in numeric else "") for c in frame.columns
    ]
    rows = []
    for key, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        keys = (key if isinstance(key, tuple) else (key,)) if index else ()
        cells = [Cell(shown(k), head=True) for k in keys]
        cells += [
            Cell(shown(fmt(str(column), value)), "num") if column in numeric else Cell(shown(value))
            for column, value in zip(frame.columns, row, strict=True)
        ]
        rows.append(cells)
    return Table(head, rows)


def metric_table(summary: pd.DataFrame) -> Table:
    """Metrics as rows, one column per run (``summary`` has one row per run)."""
    head = [Cell("metric"), *(Cell(shown(n), "num") for n in summary.index)]
    rows = [
        [Cell(shown(LABELS.get(c, c)), head=True), *(Cell(fmt(c, v), "num") for v in summary[c])]
        for c in summary.columns
    ]
    return Table(head, rows, "metrics")


def cards(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, value) of each card, as text."""
    return [(shown(k), shown(v)) for k, v in items]


# -- images ---------------------------------------------------------------------------------


def thumbnail(report: Report, value: Any) -> str | None:
    """A ``data:`` URI of the image a cell stands for, or None when it cannot be read."""
    try:
        return _thumbnail_uri(report, value)
    except RowInputError:
        return None


def _picture(report: Report, value: Any) -> tuple[str | None, str]:
    """The gallery's image as a ``data:`` URI, or None and why there is none."""
    try:
        return _thumbnail_uri(report, value), ""
    except RowInputError as exc:
        too_large = exc.error_code == INPUT_TOO_LARGE
        return None, "image too large to show" if too_large else "image not available"


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
    # A fixed MIME type and base64: nothing in it that escaping would change. It is not
    # marked safe all the same: the template escapes it into the src attribute.
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def gallery(report: Report, limit: int = GALLERY_LIMIT) -> Gallery:
    """Wrong answers first, then failed rows: image, label and answer of each."""
    wrong = report.wrong_rows()
    answered = _metrics.flag(report.scored["answer"].iloc[wrong].str.len() > 0)
    chosen = np.concatenate([wrong[answered], wrong[~answered]])[:limit]
    if chosen.size == 0:
        return Gallery([], "")
    rows = report.results.iloc[chosen]
    column = report.image_column
    id_column = _id_column(rows)
    tiles = []
    for i in range(len(rows)):
        src, why = _picture(report, rows[column].iloc[i]) if column else (None, "")
        answer = rows["answer"].iloc[i]
        no_answer = missing(answer) or not str(answer).strip()
        code = rows["error_code"].iloc[i] if no_answer and "error_code" in rows.columns else None
        tiles.append(
            Tile(
                src=src,
                why=why or "image not available",
                who=shown(rows[id_column].iloc[i]) if id_column else None,
                label=shown(rows[report.label].iloc[i]),
                answer=None if no_answer else shown(answer),
                code=shown(code),
            )
        )
    more = len(wrong) - chosen.size
    return Gallery(tiles, f"{more:,}" if more > 0 else "")


def _id_column(frame: pd.DataFrame) -> str | None:
    from capbatch._io.inputs import ID_COLUMN_NAMES

    return next((c for c in ID_COLUMN_NAMES if c in frame.columns), None)


# -- pages ----------------------------------------------------------------------------------


def _notes(notes: Sequence[str]) -> list[str]:
    return [shown(n, 300) for n in notes]


def _run_line(report: Report) -> list[str]:
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
    return [f"{shown(k)}: {shown(v)}" for k, v in parts.items() if not missing(v)]


def headline(row: pd.Series) -> list[tuple[str, str]]:
    return cards([(LABELS[k], fmt(k, row[k])) for k in HEADLINE])


def _groups(groups: Mapping[str, pd.DataFrame]) -> list[Group]:
    """Per group column: a chart of accuracy and a table (runs side by side if several)."""
    parts = []
    for column, frame in groups.items():
        chart = None
        if len(frame) and frame.index.nlevels == 2:  # (run, value): one bar per run
            runs = list(dict.fromkeys(frame.index.get_level_values(0)))
            wide = frame["accuracy"].unstack(0)[runs]
            wide.columns = [f"run {n}" if n in LABELS else str(n) for n in wide.columns]
            title = f"accuracy by {column}, per run"
            chart = bar_chart(wide, list(wide.columns), title, percent=True)
        elif len(frame):
            title = f"accuracy by {column}"
            chart = bar_chart(frame, ["accuracy", "ci_accuracy"], title, percent=True)
        parts.append(Group(shown(column), chart, table(frame[list(GROUP_COLUMNS)])))
    return parts


def _errors(errors: pd.DataFrame, index: Sequence[str]) -> Table | None:
    return table(errors.set_index(list(index))) if len(errors) else None


def _cost(summary: pd.DataFrame, run: Mapping[str, Any]) -> Cost:
    cost = summary[["cost_usd", "cost_per_1000_usd", "cost_per_correct_usd"]]
    if len(cost) > 1:
        return Cost(metric_table(cost), [])
    items = [(LABELS[c], fmt(c, cost[c].iloc[0])) for c in cost.columns]
    before, after = run.get("balance_before"), run.get("balance_after")
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        items.append(("balance change (provider)", usd(before - after)))
    return Cost(None, cards(items))


def _latency(report: Report, rows: np.ndarray | None = None) -> np.ndarray:
    values = report.scored["latency_ms"].to_numpy()
    return values if rows is None else values[rows]


def _report_parts(report: Report) -> dict[str, Any]:
    """What the page and the notebook view of a report both show."""
    return {
        "name": shown(report.name),
        "notes": _notes(report.notes),
        "headline": headline(report.summary.iloc[0]),
        "summary": metric_table(report.summary),
        "latency": latency_chart({report.name: _latency(report)}),
    }


def report_page(report: Report) -> str:
    """The whole page for one report."""
    confusions = report.confusions.rename(
        columns={"label_char": "label character", "answer_char": "answer character"}
    )
    return render(
        "report.html",
        title=shown(f"capbatch report: {report.name}"),
        meta=_run_line(report),
        cost=_cost(report.summary, report.run.get("summary") or {}),
        groups=_groups(report.groups),
        errors=_errors(report.errors, ["error_code"]),
        confusions=table(confusions, index=False, numeric=["count"]) if len(confusions) else None,
        gallery=gallery(report),
        **_report_parts(report),
    )


def report_fragment(report: Report) -> str:
    """The compact notebook view: headline, summary, latency and accuracy by group."""
    first_group = dict(list(report.groups.items())[:1])
    return render("report_fragment.html", groups=_groups(first_group), **_report_parts(report))


def comparison_page(c: Comparison) -> str:
    """The whole page for a comparison of runs."""
    names = ", ".join(c.names)
    accuracy = [(f"accuracy · {shown(n, 20)}", fmt("accuracy", a)) for n, a in
                c.summary["accuracy"].items()]  # fmt: skip
    latencies = {n: _latency(r, c.positions[n]) for n, r in c.reports.items()}
    by_run = bar_chart(c.summary, ["accuracy", "ci_accuracy"], "accuracy by run", percent=True)
    return render(
        "compare.html",
        title=shown(f"capbatch comparison: {names}"),
        names=shown(names, 200),
        key=shown(c.key),
        matched=f"{len(c.matched):,}",
        notes=_notes(c.notes),
        headline=cards([("agreement (all runs)", fmt("agreement", c.agreement)),
                        ("rows where runs disagree", f"{len(c.disagreements):,}"), *accuracy]),
        summary=metric_table(c.summary),
        pairs=table(c.pairs, index=False, numeric=["rows", "agree", "agreement"]),
        latency=latency_chart(latencies),
        by_run=by_run,
        groups=_groups(c.groups),
        cost_chart=bar_chart(c.summary, ["cost_per_1000_usd"], "cost per 1,000 rows (USD)", False),
        cost=_cost(c.summary, {}),
        errors=_errors(c.errors, ["run", "error_code"]),
        **disagreements(c),
    )  # fmt: skip


def disagreements(c: Comparison, limit: int = DISAGREEMENT_LIMIT) -> dict[str, Any]:
    """The first ``limit`` rows where the runs disagree (None if there are none), answers
    marked right or wrong, and how many more there are ("" if none)."""
    if c.disagreements.empty:
        return {"disagreements": None, "more": ""}
    rows = c.disagreements.head(limit)
    body = []
    for at, row in rows.iterrows():
        cells = [Cell(shown(row.iloc[0])), Cell(shown(row.iloc[1]), code=True)]
        for name in c.names:
            mark = "ok" if c.correct.at[at, name] else "bad"
            cells.append(Cell(shown(row[name]), mark, code=True))
        body.append(cells)
    more = len(c.disagreements) - len(rows)
    head = [Cell(shown(x)) for x in rows.columns]
    return {"disagreements": Table(head, body), "more": f"{more:,}" if more else ""}


def comparison_fragment(c: Comparison) -> str:
    """The compact notebook view of a comparison."""
    agreement = [("agreement", fmt("agreement", c.agreement)),
                 ("disagreeing rows", f"{len(c.disagreements):,}")]  # fmt: skip
    return render(
        "compare_fragment.html",
        names=shown(", ".join(c.names), 200),
        notes=_notes(c.notes),
        headline=cards(agreement),
        summary=metric_table(c.summary),
        by_run=bar_chart(c.summary, ["accuracy", "ci_accuracy"], "accuracy by run", percent=True),
    )
