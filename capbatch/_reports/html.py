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

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from capbatch._reports import cascade_view as _cascade
from capbatch._reports import sections as _sections
from capbatch._reports.charts import bar_chart, cascade_chart, latency_chart
from capbatch._reports.gallery import Gallery, Tile, drawing_of, gallery, picture, thumbnail
from capbatch._reports.metrics import LABELS, fmt, missing, shown, usd
from capbatch._reports.metrics_types import KIND_COLUMNS
from capbatch._version import __version__

if TYPE_CHECKING:
    import jinja2

    from capbatch._reports.compare import Comparison
    from capbatch._reports.report import Report

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATES = Path(__file__).with_name("templates")
DISAGREEMENT_LIMIT = 200
NO_COST = "No cost recorded: a local run, or a provider that reported none."
NEEDS_LABELS = (
    "Accuracy needs labels: this table has no label column. Add one (the true answers) "
    "and name it with --label-column (label= in Python) to measure accuracy."
)
#: Names the templates and tests import from here (the gallery is its own module).
__all__ = ["CSP", "Cell", "Cost", "Curve", "Gallery", "Group", "Table", "Tile", "environment",
           "render"]  # fmt: skip

GROUP_COLUMNS = tuple(
    "rows labelled solved_rate accuracy ci_accuracy cer latency_p50_ms latency_p95_ms"  # noqa: SIM905
    " cost_per_correct_usd".split()
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
    """One table cell: its text, a class name, whether it is a row header or code, and
    an image shown above the text (a data: URI, "" for none)."""

    text: str
    cls: str = ""  # "", "num" (right-aligned number), "ok" or "bad" (a marked answer)
    head: bool = False  # a <th> in the body: the row's key
    code: bool = False  # the text in <code>: an answer or a label
    img: str = ""


class Table(NamedTuple):
    head: list[Cell]
    rows: list[list[Cell]]
    cls: str = ""


class Group(NamedTuple):
    """Accuracy by one group column: a chart (None when there are no groups), a table."""

    column: str
    chart: str | None
    table: Table


class Cost(NamedTuple):
    table: Table | None  # several runs: a table; one run: cards
    cards: list[tuple[str, str]]
    note: str = ""  # said above the cards ("" for nothing)


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


def text_table(frame: pd.DataFrame | None, marked: Sequence[bool] = ()) -> Table | None:
    """Cells already formatted as text (the first column as row heads); ``marked`` rows
    highlighted. None for no frame."""
    if frame is None:
        return None
    marks = list(marked) or [False] * len(frame)
    rows = [[Cell(shown(v), "ok" if mark and i else "num" if i else "", head=not i)
             for i, v in enumerate(row)]
            for row, mark in zip(frame.itertuples(index=False), marks, strict=True)]  # fmt: skip
    return Table([Cell(shown(c)) for c in frame.columns], rows)


class Curve(NamedTuple):
    """The compare page's cascade: what it is, the chart, the table, the recommendation."""

    title: str
    chart: str
    table: Table | None
    line: str


def cascade(c: Comparison) -> Curve | None:
    """The cascade curve's part of a comparison page (None without a curve)."""
    if c.cascade is None:
        return None
    frame = _cascade.curve_frame(c.cascade)
    marked = [False, *c.cascade.table["recommended"]]
    chart = cascade_chart(*_cascade.chart_args(c.cascade))
    line = _cascade.recommendation(c.cascade)
    return Curve(shown(_cascade.curve_title(c.cascade), 300), chart, text_table(frame, marked),
                 shown(line, 600))  # fmt: skip


def gate(report: Report) -> dict[str, Any]:
    """A report's confidence gate and cascade stages (None for each it has not)."""
    frame = _cascade.gate_frame(report)
    title = shown(_cascade.gate_title(report), 300) if frame is not None else ""
    stages = _cascade.stage_frame(report)
    stages = None if stages is None else stages.reset_index()
    return {"gate": text_table(frame), "gate_title": title, "stages": text_table(stages)}


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
    numeric = {"distance", "angle", "point"} & set(report.kinds)
    parts = {
        "results": report.source.name if report.source else "DataFrame",
        "provider": run.get("provider"),
        "task": run.get("task_type"),
        "rate": rate,
        "in flight": settings.get("max_in_flight"),
        "price": price,
        "params": settings.get("task_params") or None,
        "label column": report.label or "none (accuracy needs labels)",
        "matching": "case-sensitive" if report.case_sensitive else "case-insensitive",
        "tolerance": tolerance(report.scoring.tolerance, numeric) if numeric else None,
        "IoU threshold": f"{report.scoring.iou_threshold:g}" if "box" in report.kinds else None,
    }
    if "text" not in report.kinds or not report.has_labels:
        del parts["matching"]
    return [f"{shown(k)}: {shown(v)}" for k, v in parts.items() if not missing(v)]


def tolerance(value: float, kinds: set[str]) -> str:
    """The tolerance with the units of the kinds it applies to ("5 px", "5°")."""
    units = sorted({"°" if k == "angle" else " px" for k in kinds}, reverse=True)
    return " or ".join(f"{value:g}{u}" for u in units)


def accuracy_columns(view: Report | Comparison) -> list[str]:
    """What an accuracy chart shows: accuracy beside the other case rule (text) and the
    rate of each other kind, or, for a table of one such kind (whose rate accuracy
    is), its other rates (precision, recall, F1); the solved rate without labels."""
    if not view.has_labels:
        return ["solved_rate"]
    columns = ["accuracy"]
    if "text" in view.kinds:
        columns.append("ci_accuracy" if view.case_sensitive else "exact_accuracy")
    typed = [k for k in view.kinds if k in KIND_COLUMNS and k != "text"]
    if len(view.kinds) == 1 and typed:
        columns += [c for c in KIND_COLUMNS[typed[0]][1:] if fmt(c, 0.5).endswith("%")]
    else:
        columns += [KIND_COLUMNS[k][0] for k in typed]
    return columns[:4]


def _groups(groups: Mapping[str, pd.DataFrame], view: Report | Comparison) -> list[Group]:
    """Per group column: a chart of accuracy and a table (runs side by side if several)."""
    metric = "accuracy" if view.has_labels else "solved_rate"
    typed = [c for k in view.kinds for c in _sections.KEY_METRICS.get(k, ())]
    columns = list(dict.fromkeys([*view.columns(GROUP_COLUMNS), *typed]))
    parts = []
    for column, frame in groups.items():
        chart = None
        if len(frame) and frame.index.nlevels == 2:  # (run, value): one bar per run
            runs = list(dict.fromkeys(frame.index.get_level_values(0)))
            wide = frame[metric].unstack(0)[runs]
            wide.columns = [f"run {n}" if n in LABELS else str(n) for n in wide.columns]
            title = f"{LABELS[metric]} by {column}, per run"
            chart = bar_chart(wide, list(wide.columns), title, percent=True)
        elif len(frame):
            title = f"{LABELS[metric]} by {column}"
            chart = bar_chart(frame, accuracy_columns(view), title, percent=True)
        parts.append(Group(shown(column), chart, table(frame[columns])))
    return parts


def _errors(errors: pd.DataFrame, index: Sequence[str]) -> Table | None:
    return table(errors.set_index(list(index))) if len(errors) else None


def _cost(summary: pd.DataFrame, run: Mapping[str, Any], has_labels: bool = True) -> Cost:
    """Cost cards (a table for several runs). A run that cost nothing shows what it took
    in time instead of cards of zeros."""
    names = ["cost_usd", "cost_per_1000_usd", "cost_per_correct_usd"][: 3 if has_labels else 2]
    cost = summary[names]
    if len(cost) > 1:
        return Cost(metric_table(cost), [])
    row = summary.iloc[0]
    if not row["cost_usd"] > 0:
        rps = row["throughput_rps"]
        per_row = "—" if missing(rps) or rps <= 0 else fmt("latency_ms", 1000 / rps)
        items = [(LABELS["throughput_rps"], fmt("throughput_rps", rps)),
                 ("time per row (run time / rows sent)", per_row)]  # fmt: skip
        return Cost(None, cards(items), NO_COST)
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
    row = report.summary.iloc[0]
    return {
        "name": shown(report.name),
        "notes": _notes(report.notes),
        "headline": cards(
            _sections.headline(row, report.kinds, report.has_labels, report.case_sensitive)
        ),
        "summary": metric_table(report.summary[report.columns()]),
        "latency": latency_chart({report.name: _latency(report)}),
        "needs_labels": "" if report.has_labels else NEEDS_LABELS,
    }


def report_page(report: Report) -> str:
    """The whole page for one report."""
    confusions = report.confusions.rename(
        columns={"label_char": "label character", "answer_char": "answer character"}
    )
    text = report.has_labels and "text" in report.kinds
    return render(
        "report.html",
        title=shown(f"capbatch report: {report.name}"),
        meta=_run_line(report),
        cost=_cost(report.summary, report.run.get("summary") or {}, report.has_labels),
        groups=_groups(report.groups, report),
        typed=_sections.typed_sections(report),
        errors=_errors(report.errors, ["error_code"]),
        text=text,
        confusions=table(confusions, index=False, numeric=["count"]) if len(confusions) else None,
        gallery_title="Wrong answers" if report.has_labels else "Failed rows",
        gallery=gallery(report),
        **gate(report),
        **_report_parts(report),
    )


def report_fragment(report: Report) -> str:
    """The compact notebook view: headline, summary, latency and accuracy by group."""
    first_group = dict(list(report.groups.items())[:1])
    return render(
        "report_fragment.html",
        groups=_groups(first_group, report),
        typed=_sections.typed_sections(report),
        **gate(report),
        **_report_parts(report),
    )


def comparison_page(c: Comparison) -> str:
    """The whole page for a comparison of runs."""
    names = ", ".join(c.names)
    metric = "accuracy" if c.has_labels else "solved_rate"
    per_run = [(f"{LABELS[metric]} · {shown(n, 20)}", fmt(metric, a)) for n, a in
               c.summary[metric].items()]  # fmt: skip
    latencies = {n: _latency(r, c.positions[n]) for n, r in c.reports.items()}
    by_run = bar_chart(c.summary, accuracy_columns(c), f"{LABELS[metric]} by run", percent=True)
    return render(
        "compare.html",
        title=shown(f"capbatch comparison: {names}"),
        names=shown(names, 200),
        key=shown(c.key),
        matched=f"{len(c.matched):,}",
        notes=_notes(c.notes),
        headline=cards([("agreement (all runs)", fmt("agreement", c.agreement)),
                        ("rows where runs disagree", f"{len(c.disagreements):,}"), *per_run]),
        summary=metric_table(c.summary[c.columns()]),
        pairs=table(c.pairs, index=False, numeric=["rows", "agree", "agreement"]),
        latency=latency_chart(latencies),
        by_run=by_run,
        typed=_sections.comparison_sections(c),
        needs_labels="" if c.has_labels else NEEDS_LABELS,
        groups=_groups(c.groups, c),
        cost_chart=bar_chart(c.summary, ["cost_per_1000_usd"], "cost per 1,000 rows (USD)", False),
        cost=_cost(c.summary, {}, c.has_labels),
        errors=_errors(c.errors, ["run", "error_code"]),
        cascade=cascade(c),
        **disagreements(c),
    )  # fmt: skip


def disagreements(c: Comparison, limit: int = DISAGREEMENT_LIMIT) -> dict[str, Any]:
    """The first ``limit`` rows where the runs disagree (None if there are none): the
    image beside each run's answer (drawn on it for answers other than text), answers
    marked right or wrong, and how many more there are ("" if none)."""
    if c.disagreements.empty:
        return {"disagreements": None, "more": ""}
    rows = c.disagreements.head(limit)
    first = c.reports[c.names[0]]
    drawn = bool(set(c.kinds) & set(_sections.TITLES) - {"has_object"})
    body = []
    for at, row in rows.iterrows():
        where = int(c.positions[c.names[0]][at])
        image = first.results[first.image_column].iloc[where] if first.image_column else None
        cells = [Cell(shown(row.iloc[0])), Cell(shown(row.iloc[1]), code=True)]
        if not drawn:
            cells.append(Cell("" if image is not None else "—", img=_thumb(first, image)))
        for name in c.names:
            mark = "ok" if c.correct.at[at, name] else "bad" if c.has_labels else ""
            report, here = c.reports[name], int(c.positions[name][at])
            img = _drawn(report, here, image) if drawn else ""
            cells.append(Cell(shown(row[name]), mark, code=True, img=img))
        body.append(cells)
    more = len(c.disagreements) - len(rows)
    head = [Cell(shown(x)) for x in rows.columns[:2]]
    head += [Cell("image")] if not drawn else []
    head += [Cell(shown(x)) for x in rows.columns[2:]]
    return {"disagreements": Table(head, body), "more": f"{more:,}" if more else ""}


def _thumb(report: Report, image: Any) -> str:
    return (thumbnail(report, image) or "") if image is not None else ""


def _drawn(report: Report, at: int, image: Any) -> str:
    """Row ``at``'s image with its answer (and label) drawn on it, "" if none."""
    if image is None:
        return ""
    return picture(report, image, drawing_of(report, at))[0] or ""


def comparison_fragment(c: Comparison) -> str:
    """The compact notebook view of a comparison."""
    agreement = [("agreement", fmt("agreement", c.agreement)),
                 ("disagreeing rows", f"{len(c.disagreements):,}")]  # fmt: skip
    return render(
        "compare_fragment.html",
        names=shown(", ".join(c.names), 200),
        notes=_notes(c.notes),
        headline=cards(agreement),
        summary=metric_table(c.summary[c.columns()]),
        by_run=bar_chart(c.summary, accuracy_columns(c), "accuracy by run", percent=True),
        cascade=cascade(c),
    )
