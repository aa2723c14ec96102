"""Pieces of the run panel's display: answer cards and the tables shown at the end.

Imported only by ``capbatch.widgets`` (it needs ipywidgets). Untrusted text (answers
come from a remote service) reaches the page only through ``Label`` widgets, which
render text, and pandas' ``to_html``, which escapes cell values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import pandas as pd

from capbatch.widgets._results import Card

if TYPE_CHECKING:
    from capbatch._reports.report import Report

#: Rows of the results table shown in the panel (``panel.results`` has them all).
PREVIEW_ROWS = 5
#: Result columns worth a glance; the rest stay in ``panel.results``.
PREVIEW_RESULTS = ("status", "answer", "error_code", "latency_ms", "cost_usd")
SUMMARY_COLUMNS = (
    "rows",
    "solved",
    "failed",
    "correct",
    "accuracy",
    "cer",
    "latency_p50_ms",
    "latency_p95_ms",
    "cost_usd",
)
_CARD_WIDTH = "90px"


class CardView:
    """One slot of the answer strip: thumbnail, answer, label check."""

    def __init__(self) -> None:
        self.image = w.Image(format="png", layout=w.Layout(width="88px", height="33px"))
        self.answer = w.Label(layout=w.Layout(width=_CARD_WIDTH))
        self.check = w.Label(layout=w.Layout(width=_CARD_WIDTH))
        self.box = w.VBox(
            [self.image, self.answer, self.check],
            layout=w.Layout(
                border="1px solid #ddd", padding="2px", margin="2px", visibility="hidden"
            ),
        )

    def show(self, card: Card | None) -> None:
        if card is None:
            self.box.layout.visibility = "hidden"
            return
        self.image.value = card.thumbnail or b""
        self.answer.value = f"#{card.row}  {card.answer_text}"
        self.check.value = card.check_text
        self.answer.tooltip = card.answer or card.error_code or ""
        self.box.layout.visibility = "visible"


def bundle(frame: pd.DataFrame, title: str, *, index: bool = True) -> dict[str, Any]:
    """A display_data output for an ``Output`` widget (set from any thread)."""
    table = frame.to_html(border=0, index=index, na_rep="", float_format="{:.6g}".format)
    page = f"<b>{html.escape(title)}</b>" + table
    return {
        "output_type": "display_data",
        "data": {"text/html": page, "text/plain": f"{title}\n{frame.to_string(index=index)}"},
        "metadata": {},
    }


def _pick(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    picked: pd.DataFrame = frame[[c for c in columns if c in frame.columns]]
    return picked


def results_preview(frame: pd.DataFrame, image_column: str | None) -> dict[str, Any]:
    """The first rows: input columns except the image (it may be megabytes of base64),
    and the main result columns."""
    result_columns = set(PREVIEW_RESULTS) | {
        "solution", "error_message", "task_id", "provider", "attempts", "polls",
        "submitted_at", "finished_at", "queue_ms", "from_cache",
    }  # fmt: skip
    inputs = [c for c in frame.columns if c != image_column and c not in result_columns]
    shown = _pick(frame, [*inputs, *PREVIEW_RESULTS]).head(PREVIEW_ROWS)
    done = int(frame["status"].notna().sum()) if "status" in frame else len(frame)
    title = f"results: {done} of {len(frame)} rows done (all columns in panel.results)"
    return bundle(shown, title)


def report_outputs(report: Report, label: str) -> tuple[dict[str, Any], ...]:
    """The report's summary and the first wrong answers."""
    shown = [bundle(_pick(report.summary, SUMMARY_COLUMNS), "report summary")]
    wrong = report.wrong_answers()
    if len(wrong):
        columns = _pick(wrong, [label, "answer", "status", "error_code"]).head(PREVIEW_ROWS)
        title = f"wrong answers: {len(wrong)} (all in panel.report.wrong_answers())"
        shown.append(bundle(columns, title))
    return tuple(shown)
