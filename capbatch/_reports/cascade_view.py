"""The cascade's tables as people read them, in the terminal and on the page alike:
the confidence gate of a report, a cascade run's stages, the compare's cascade curve
and its recommendation (``cascade_curve`` computes them). Every value comes out as a
plain string; the terminal prints them, the templates escape them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from capbatch._reports.metrics import fmt, shown

if TYPE_CHECKING:
    from capbatch._reports.cascade_curve import CascadeCurve
    from capbatch._reports.report import Report

EVERY = "every local answer"
#: The most points the chart's line goes through (a large table has a breakpoint a row).
CURVE_POINTS = 400


def threshold_text(t: float) -> str:
    """A threshold as ``--local-first`` takes it ("0.98"); 0 keeps every local answer."""
    return f"0 ({EVERY})" if t <= 0 else f"{t:g}"


def _share(rows: int, share: float) -> str:
    return f"{rows:,} ({fmt('share', share)})"


def gate_frame(report: Report) -> pd.DataFrame | None:
    """The report's confidence gate: per threshold, the rows a gate would answer
    locally, their accuracy, the rows left for a provider (None without one)."""
    gate = report.gate
    if gate is None:
        return None
    run_gate = (report.run.get("settings") or {}).get("local_first")
    frame: pd.DataFrame = pd.DataFrame(
        {
            "confidence ≥": [
                threshold_text(t) + (" (this run's gate)" if t == run_gate else "")
                for t in gate["threshold"]
            ],
            "answered locally": list(map(_share, gate["local_rows"], gate["local_share"])),
            "their accuracy": [fmt("accuracy", a) for a in gate["local_accuracy"]],
            "left for the provider": [f"{n:,}" for n in gate["sent_on"]],
        }
    )
    return frame


def gate_title(report: Report) -> str:
    assert report.gate is not None
    answer, confidence = report.gate.attrs.get("columns", ("answer", "confidence"))
    rows = int(report.gate["local_rows"].max() + report.gate["sent_on"].min())
    return (
        f"confidence gate ({shown(answer)} kept where {shown(confidence)} ≥ threshold; "
        f"{rows:,} labelled rows)"
    )


def stage_frame(report: Report) -> pd.DataFrame | None:
    """A cascade run's stages: rows, share, accuracy and cost of each."""
    stages = report.stages
    if stages is None:
        return None
    out = pd.DataFrame(index=pd.Index([shown(s, 40) for s in stages.index], name="stage"))
    out["rows"] = list(map(_share, stages["rows"], stages["share"]))
    for column, name in (
        ("accuracy", "accuracy"),
        ("cost_usd", "cost"),
        ("cost_per_1000_usd", "cost per 1,000 of its rows"),
        ("cost_per_correct_usd", "cost per correct answer"),
    ):
        if column in stages.columns:
            out[name] = [fmt(column, v) for v in stages[column]]
    shown_stages: pd.DataFrame = out
    return shown_stages


def curve_frame(curve: CascadeCurve) -> pd.DataFrame:
    """The curve's readable thresholds, the provider alone first; the recommended one
    marked."""
    first = {
        "local confidence ≥": "provider alone",
        "answered locally": _share(0, 0.0),
        "sent to the provider": _share(curve.rows, 1.0),
        "accuracy": fmt("accuracy", curve.provider_accuracy),
        "vs provider": "—",
        "cost per 1,000 rows": fmt("cost_per_1000_usd", curve.provider_cost_per_1000),
    }
    rows = [first]
    table = curve.table
    for t, kept, sent, accuracy, cost, best in zip(
        *(table[c].tolist() for c in ("threshold", "local_rows", "sent_share", "accuracy")),
        table["cost_per_1000_usd"].tolist(),
        table["recommended"].tolist(),
        strict=True,
    ):
        rows.append(
            {
                "local confidence ≥": threshold_text(t) + ("  ← recommended" if best else ""),
                "answered locally": _share(kept, 1 - sent),
                "sent to the provider": _share(curve.rows - kept, sent),
                "accuracy": fmt("accuracy", accuracy),
                "vs provider": points_text(accuracy - curve.provider_accuracy),
                "cost per 1,000 rows": fmt("cost_per_1000_usd", cost),
            }
        )
    frame: pd.DataFrame = pd.DataFrame(rows)
    return frame


def points_text(gap: float) -> str:
    """An accuracy difference in percentage points ("-0.8 pts")."""
    return f"{100 * gap:+.1f} pts"


def curve_title(curve: CascadeCurve) -> str:
    return (
        f"cascade: {shown(curve.local, 40)}'s answers kept where {shown(curve.columns[1])} "
        f"≥ threshold, the rest from {shown(curve.provider, 40)} "
        f"({curve.rows:,} matched labelled rows)"
    )


def recommendation(curve: CascadeCurve) -> str:
    """The one line naming the threshold to give ``--local-first``, or why none."""
    within = f"{curve.within:g} percentage point{'s' if curve.within != 1 else ''}"
    best = curve.recommended
    if best is None:
        return (
            f"no threshold costs less than {shown(curve.provider, 40)} alone with accuracy "
            f"within {within} of it: send every row (or allow more with --within)"
        )
    saved = 1 - best["cost_per_1000_usd"] / curve.provider_cost_per_1000
    gap = points_text(best["accuracy"] - curve.provider_accuracy)
    return (
        f"recommended: --local-first {threshold_text(float(best['threshold']))}: accuracy "
        f"{fmt('accuracy', best['accuracy'])} ({gap}"
        f" against {fmt('accuracy', curve.provider_accuracy)}), "
        f"{fmt('cost_per_1000_usd', best['cost_per_1000_usd'])} per 1,000 rows instead of "
        f"{fmt('cost_per_1000_usd', curve.provider_cost_per_1000)} ({fmt('share', saved)} less), "
        f"{fmt('share', best['sent_share'])} of rows sent to the provider; the cheapest "
        f"threshold within {within} of its accuracy"
    )


def chart_args(
    curve: CascadeCurve,
) -> tuple[
    tuple[np.ndarray, np.ndarray],
    list[tuple[str, float, float]],
    tuple[str, float, float],
    tuple[float, float] | None,
]:
    """What ``charts.cascade_chart`` draws: every breakpoint (at most ``CURVE_POINTS``,
    evenly picked, the ends kept), the shown thresholds named, the provider alone and
    the recommended threshold."""
    points = curve.points
    if len(points) > CURVE_POINTS:
        picked = np.unique(np.linspace(0, len(points) - 1, CURVE_POINTS).round().astype(int))
        points = points.iloc[picked]
    line = (points["cost_per_1000_usd"].to_numpy(float), points["accuracy"].to_numpy(float))
    marked = [
        (threshold_text(t).split(" ")[0], float(c), float(a))
        for t, c, a in curve.table[["threshold", "cost_per_1000_usd", "accuracy"]].itertuples(
            index=False
        )
    ]
    alone = (curve.provider, curve.provider_cost_per_1000, curve.provider_accuracy)
    best = curve.recommended
    ringed = None if best is None else (float(best["cost_per_1000_usd"]), float(best["accuracy"]))
    return line, marked, alone, ringed
