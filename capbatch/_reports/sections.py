"""What the HTML page shows depends on the answers and labels: the headline cards and
one section per kind of answer other than text (object sets, yes/no, distances, angles,
points, boxes), each with its cards, chart and a line saying how it is measured.

Only plain strings and ``data:`` URIs come out of here; the templates print them
escaped (``html``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from capbatch._io.labels import NUMERIC_UNITS, Scoring, parse
from capbatch._reports.charts import bar_chart, error_chart, tile_chart
from capbatch._reports.metrics import LABELS, fmt, shown
from capbatch._reports.metrics_types import KIND_COLUMNS

if TYPE_CHECKING:
    from capbatch._reports.compare import Comparison
    from capbatch._reports.report import Report

#: The one or two metrics of each kind that make the headline.
KEY_METRICS = {
    "objects": ("set_exact_rate", "set_f1"),
    "has_object": ("has_object_rate",),
    **{kind: (f"{kind}_hit_rate", f"{kind}_error_p50") for kind in NUMERIC_UNITS},
    "box": ("box_hit_rate", "iou_mean"),
}
TITLES = {
    "objects": "Object sets (tiles)",
    "has_object": "Yes/no answers",
    "distance": "Distances (slider offsets)",
    "angle": "Angles (rotations)",
    "point": "Points",
    "box": "Boxes",
}


class Section(NamedTuple):
    """One kind of answer on the page: a title, cards, a chart (or None), how it is measured."""

    title: str
    cards: list[tuple[str, str]]
    chart: str | None
    note: str


def _card(row: pd.Series, column: str) -> tuple[str, str]:
    return shown(LABELS[column]), shown(fmt(column, row[column]))


def accuracy_cards(
    row: pd.Series, kinds: Sequence[str], case_sensitive: bool
) -> list[tuple[str, str]]:
    """Accuracy, and beside it what differs from it: for text, the other case rule (the
    exact accuracy under case-insensitive matching, and the other way round) and CER;
    for other kinds, their key metrics."""
    if "text" not in kinds and len(kinds) == 1:
        # One kind: accuracy is its rate, named as such rather than shown twice.
        rate, *others = KEY_METRICS.get(kinds[0], ("accuracy",))
        return [(f"accuracy ({LABELS[rate]})", fmt("accuracy", row["accuracy"])),
                *(_card(row, c) for c in others)]  # fmt: skip
    if "text" not in kinds:
        items = [_card(row, "accuracy")]
    elif case_sensitive:
        items = [
            ("accuracy (case-sensitive)", fmt("accuracy", row["accuracy"])),
            _card(row, "ci_accuracy"),
            _card(row, "cer"),
        ]
    else:
        items = [
            ("accuracy (case-insensitive)", fmt("accuracy", row["accuracy"])),
            _card(row, "exact_accuracy"),
            _card(row, "cer"),
        ]
    for kind in kinds:
        items += [_card(row, c) for c in KEY_METRICS.get(kind, ())]
    return items


def headline(
    row: pd.Series, kinds: Sequence[str], has_labels: bool, case_sensitive: bool
) -> list[tuple[str, str]]:
    """The cards at the top of a report: accuracy (with labels), speed, cost. A run that
    cost nothing (the local solver) shows how many rows it solved and its slowest
    latencies instead of cards of zeros."""
    items = accuracy_cards(row, kinds, case_sensitive) if has_labels else []
    items += [_card(row, c) for c in ("solved_rate", "latency_p50_ms", "latency_p95_ms")]
    items.append(_card(row, "throughput_rps"))
    if row["cost_usd"] > 0:
        costs = ("cost_per_1000_usd", "cost_per_correct_usd") if has_labels else ("cost_usd",
                 "cost_per_1000_usd")  # fmt: skip
        items += [_card(row, c) for c in costs]
    else:
        solved = f"{int(row['solved']):,} of {int(row['rows']):,}"
        items += [("rows solved (no cost recorded)", solved), _card(row, "latency_p99_ms")]
    if not has_labels:
        items.append(("failed rows", f"{int(row['failed']):,}"))
    return items


def _tile_counts(report: Report, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per tile index, over the labelled object rows: chosen right, chosen wrong, missed."""
    assert report.labels is not None
    answers = report.results["answer"].to_numpy(dtype=object)[rows]
    labels = report.labels.to_numpy(dtype=object)[rows]
    counts = np.zeros((3, 16), dtype=int)
    for answer, label in zip(answers, labels, strict=True):
        guess = (parse("objects", answer) if isinstance(answer, str) else None) or frozenset()
        truth = parse("objects", label) or frozenset()
        for part, found in enumerate((guess & truth, guess - truth, truth - guess)):
            for index in found:
                if index < counts.shape[1]:
                    counts[part, index] += 1
    used = 16 if counts[:, 9:].any() else 9  # a 4x4 grid or a 3x3 one
    return tuple(counts[:, :used])


def how_measured(kind: str, scoring: Scoring) -> str:
    """One line saying when a row of ``kind`` is right and what the numbers are over."""
    if kind == "objects":
        return (
            "A row is right when its set of tiles equals the label's. Precision, recall and "
            "F1 are micro-averaged: tiles are counted over all rows, then divided. A failed "
            "row chose no tile."
        )
    if kind in NUMERIC_UNITS:
        unit = NUMERIC_UNITS[kind]
        return (
            f"A row is right when its absolute error is at most {scoring.tolerance:g}"
            f"{unit if unit == '°' else ' ' + unit} "
            "(--tolerance). Error statistics are over rows with an answer; the rate counts "
            "failed rows as misses."
            + (" Angles are compared the short way round the circle." if kind == "angle" else "")
        )
    if kind == "box":
        return (
            "A row is right when its box overlaps the label's with IoU at least "
            f"{scoring.iou_threshold:g} (--iou-threshold). Boxes are x1,y1,x2,y2 in pixels."
        )
    return "A row is right when its true/false equals the label's."


def _errors_chart(kind: str, scored: Mapping[str, pd.DataFrame], scoring: Scoring) -> str | None:
    """The error (or IoU) histogram of each run's labelled rows of ``kind``."""
    column = "iou" if kind == "box" else f"{kind}_error"
    values = {
        name: frame[column].to_numpy(dtype=float)[frame[f"{kind}_labelled"].to_numpy(dtype=bool)]
        for name, frame in scored.items()
    }
    if kind == "box":
        return error_chart(values, scoring.iou_threshold, "intersection over union", upper=1.0)
    unit = NUMERIC_UNITS[kind]
    return error_chart(values, scoring.tolerance, f"absolute {kind} error ({unit})")


def _section(report: Report, kind: str) -> Section:
    row, scored = report.summary.iloc[0], report.scored
    rows = np.flatnonzero(scored[f"{kind}_labelled"].to_numpy(dtype=bool))
    cards = [_card(row, c) for c in KIND_COLUMNS[kind]]
    cards.insert(0, ("labelled rows", f"{rows.size:,}"))
    chart = None
    if kind == "objects" and rows.size:
        chart = tile_chart(*_tile_counts(report, rows))
    elif kind in NUMERIC_UNITS or kind == "box":
        chart = _errors_chart(kind, {report.name: scored}, report.scoring)
    return Section(shown(TITLES[kind]), cards, chart, how_measured(kind, report.scoring))


def typed_sections(report: Report) -> list[Section]:
    """A section per kind of answer other than text in the table (with labels only)."""
    if not report.has_labels:
        return []
    return [_section(report, kind) for kind in report.kinds if kind in TITLES]


def comparison_sections(c: Comparison) -> list[Section]:
    """A section per kind of answer other than text, runs side by side: the kind's rates
    per run, or each run's error histogram, over the matched rows (with labels only)."""
    if not c.has_labels:
        return []
    scoring = next(iter(c.reports.values())).scoring
    scored = {n: r.scored.iloc[c.positions[n]] for n, r in c.reports.items()}
    out = []
    for kind in (k for k in c.kinds if k in TITLES):
        if kind in NUMERIC_UNITS or kind == "box":
            chart = _errors_chart(kind, scored, scoring)
        else:
            rates = [k for k in KIND_COLUMNS[kind] if fmt(k, 0.5).endswith("%")]
            chart = bar_chart(c.summary, rates, f"{TITLES[kind].lower()} by run", percent=True)
        out.append(Section(shown(TITLES[kind]), [], chart, how_measured(kind, scoring)))
    return out
