"""The confidence gate of the cascade (``run --local-first T``), measured on labels.

Three views, all over labelled rows that ran:

* ``gate_table`` (``capbatch report``): for each threshold ``t``, the share of rows whose
  confidence is at least ``t`` (the rows the gate would answer locally) and the accuracy
  of those rows' answers. A table's readings are its ``local_answer`` and
  ``local_confidence`` when it has any (a cascade run keeps the local solver's reading
  of every row there, whichever stage answered), else its ``answer`` and ``confidence``.
* ``stage_table`` (a cascade run's report): each stage's rows, accuracy and cost, the
  rows answered locally (``provider == "local"``) apart from those the provider answered.
* ``CascadeCurve`` (``capbatch compare LOCAL PROVIDER``): for each threshold ``t``, the
  cascade's accuracy (the local answer where its confidence is at least ``t``, else the
  provider's answer for that row) and its cost per 1,000 rows (what the provider
  charged for the rows sent on, over all rows: the provider's mean cost per row sent on
  x the share sent x 1,000), beside the provider alone; and the cheapest threshold whose
  accuracy is within ``within`` percentage points of the provider's.

Every distinct confidence is a breakpoint (between two of them the gate keeps the same
rows), so the curve is computed at each of them, vectorised (one sort, cumulative sums).
A breakpoint ``c`` is named by the shortest decimal in (the next lower confidence, c]:
it keeps exactly the same rows, so ``--local-first 0.98`` does what the curve says.
The tables show a readable subset: ``GRID`` (thresholds keeping the same rows merged)
and the recommended threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from capbatch._reports import metrics as _metrics

if TYPE_CHECKING:
    from capbatch._reports.report import Report

#: The thresholds the tables show (plus the recommended one).
GRID = (0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
#: ``--within``: percentage points of accuracy the cascade may lose against the provider.
DEFAULT_WITHIN = 1.0
#: The provider name of rows the cascade answered locally (``_run.cascade.LOCAL``).
LOCAL = "local"
_LABEL = "__cascade_label__"


def readable_threshold(low: float, high: float) -> float:
    """The shortest decimal ``t`` with ``low < t <= high`` (``high`` if none is shorter):
    a gate at ``t`` keeps exactly the rows a gate at ``high`` keeps when no confidence
    lies in (low, high)."""
    for digits in range(0, 10):
        scale = 10**digits
        t = float(round(math.floor(high * scale) / scale, digits))
        if low < t <= high:
            return t
    return high


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


@dataclasses.dataclass(frozen=True)
class Readings:
    """A table's readings the gate would judge: answers, their confidences (NaN where
    none), and the columns they come from."""

    answers: pd.Series
    confidence: np.ndarray
    columns: tuple[str, str]


def readings(frame: pd.DataFrame) -> Readings | None:
    """``local_answer``/``local_confidence`` when the table has any local confidence,
    else ``answer``/``confidence`` when it has any confidence; None otherwise."""
    for answer, confidence in (("local_answer", "local_confidence"), ("answer", "confidence")):
        if answer in frame.columns and confidence in frame.columns:
            values = _numbers(frame[confidence])
            if not np.isnan(values).all():
                return Readings(frame[answer], values, (answer, confidence))
    return None


def is_local_run(report: Report) -> bool:
    """Every row was answered by the local solver (the ``provider`` column, else the
    run's metadata)."""
    frame = report.results
    if "provider" in frame.columns and frame["provider"].notna().any():
        return bool((frame["provider"].dropna() == LOCAL).all())
    return report.run.get("provider") == LOCAL


def is_cascade_run(report: Report) -> bool:
    """The run gated its rows (``--local-first``): local readings beside paid answers."""
    settings = report.run.get("settings") or {}
    if settings.get("local_first") is not None:
        return True
    frame = report.results
    return bool(
        "provider" in frame.columns
        and "local_confidence" in frame.columns
        and frame["local_confidence"].notna().any()
        and not is_local_run(report)
    )


def _kept_counts(confidence: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many rows each threshold keeps (confidence >= t; NaN never)."""
    ordered = np.sort(confidence[~np.isnan(confidence)])
    below = np.searchsorted(ordered, thresholds, side="left")
    kept: np.ndarray = len(ordered) - below
    return kept


def shown_thresholds(confidence: np.ndarray, extra: Sequence[float] = ()) -> list[float]:
    """``GRID`` with the thresholds that keep the same rows merged (the lowest kept),
    plus ``extra``; highest first."""
    grid = np.array(GRID, dtype=float)
    kept = _kept_counts(confidence, grid)
    firsts = [float(t) for i, t in enumerate(grid) if i == 0 or kept[i] != kept[i - 1]]
    return sorted({*firsts, *map(float, extra)}, reverse=True)


def gate_table(
    correct: np.ndarray, confidence: np.ndarray, thresholds: Sequence[float]
) -> pd.DataFrame:
    """Per threshold: rows kept (confidence >= t), their share of all rows, their
    accuracy (``correct`` among them), and the rows left for the provider."""
    rows = len(confidence)
    kept_rows, correct_kept = [], []
    for t in thresholds:
        kept = np.nan_to_num(confidence, nan=-np.inf) >= t
        kept_rows.append(int(kept.sum()))
        correct_kept.append(int(correct[kept].sum()))
    kept_n = np.array(kept_rows, dtype=float)
    table: pd.DataFrame = pd.DataFrame(
        {
            "threshold": list(map(float, thresholds)),
            "local_rows": kept_rows,
            "local_share": kept_n / rows if rows else np.nan,
            "local_accuracy": np.divide(
                correct_kept, kept_n, out=np.full(len(kept_n), np.nan), where=kept_n > 0
            ),
            "sent_on": [rows - k for k in kept_rows],
        }
    )
    return table


def report_gate(report: Report) -> pd.DataFrame | None:
    """``gate_table`` of a labelled report whose table has readings (None otherwise),
    over its labelled rows; the local answers scored with the report's rule."""
    found = readings(report.results)
    if found is None or not report.has_labels:
        return None
    labelled = report.scored["labelled"].to_numpy(dtype=bool)
    if not labelled.any():
        return None
    correct = score_answers(report, found.answers, np.arange(len(labelled)))
    confidence = found.confidence[labelled]
    extra = [gate] if (gate := (report.run.get("settings") or {}).get("local_first")) else []
    table = gate_table(correct[labelled], confidence, shown_thresholds(confidence, extra))
    table.attrs["columns"] = found.columns
    return table


def score_answers(report: Report, answers: pd.Series, at: np.ndarray) -> np.ndarray:
    """Whether each of ``answers`` (one per position ``at`` of ``report``'s rows) is
    right against that row's label, by the report's rule (case, kind, tolerance)."""
    assert report.labels is not None
    frame = pd.DataFrame(
        {
            "answer": answers.to_numpy(dtype=object),
            "status": np.where(answers.notna().to_numpy(), "solved", "failed"),
            _LABEL: report.labels.iloc[at].to_numpy(dtype=object),
        }
    )
    scored = _metrics.score(
        frame,
        _LABEL,
        case_sensitive=report.case_sensitive,
        kinds=pd.Series(report.scored["kind"].to_numpy(dtype=object)[at], dtype=object),
        scoring=report.scoring,
    )
    correct: np.ndarray = scored["correct"].to_numpy(dtype=bool)
    return correct


def stage_table(report: Report) -> pd.DataFrame | None:
    """A cascade run's stages: rows answered locally, then each provider's; their
    rows, share, accuracy and cost (None for any other table)."""
    if not is_cascade_run(report) or "provider" not in report.results.columns:
        return None
    provider = report.results["provider"].astype("string").fillna("(no result)")
    stage = np.where(provider == LOCAL, "local stage", "provider: " + provider)
    summary = _metrics.aggregate(report.scored.assign(stage=stage), "stage")
    summary.insert(1, "share", summary["rows"] / max(1, len(report.results)))
    order = sorted(summary.index, key=lambda s: (s != "local stage", str(s)))
    columns = ["rows", "share", "accuracy", "cost_usd", "cost_per_1000_usd"]
    if report.has_labels:
        columns.append("cost_per_correct_usd")
    else:
        columns.remove("accuracy")
    staged: pd.DataFrame = summary.loc[order, columns]
    return staged


def curve_points(
    confidence: np.ndarray,
    local_correct: np.ndarray,
    provider_correct: np.ndarray,
    provider_cost: np.ndarray,
    thresholds: np.ndarray,
) -> pd.DataFrame:
    """The cascade at each threshold: rows kept locally, the share sent on, accuracy
    (the local answer where confidence >= t, else the provider's) and the cost per
    1,000 rows (the provider's charge for the rows sent on, over all rows).

    Vectorised: rows sorted by confidence (none as -inf, always sent on), cumulative
    sums of each stage's correct answers and of the cost; a threshold's rows sent on
    are the prefix below it.
    """
    rows = len(confidence)
    order = np.argsort(np.nan_to_num(confidence, nan=-np.inf), kind="stable")
    ordered = np.nan_to_num(confidence, nan=-np.inf)[order]

    def cumulative(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(values[order].astype(float))])

    local, paid, cost = cumulative(local_correct), cumulative(provider_correct), cumulative(
        provider_cost)  # fmt: skip
    sent = np.searchsorted(ordered, thresholds, side="left")
    correct = local[-1] - local[sent] + paid[sent]
    points: pd.DataFrame = pd.DataFrame(
        {
            "threshold": thresholds.astype(float),
            "local_rows": rows - sent,
            "sent_share": sent / rows if rows else np.nan,
            "correct": correct.astype(int),
            "accuracy": correct / rows if rows else np.nan,
            "cost_per_1000_usd": 1000 * cost[sent] / rows if rows else np.nan,
        }
    )
    return points


def breakpoints(confidence: np.ndarray) -> np.ndarray:
    """The readable threshold of each distinct confidence (``readable_threshold``,
    vectorised: a table of 50,000 rows has about as many)."""
    distinct = np.unique(confidence[~np.isnan(confidence)])
    lows = np.concatenate([[-np.inf], distinct[:-1]])
    chosen: np.ndarray = distinct.astype(float)
    todo = np.ones(len(distinct), dtype=bool)
    for digits in range(0, 10):
        t = np.round(np.floor(distinct * 10**digits) / 10**digits, digits)
        fits = todo & (t > lows) & (t <= distinct)
        chosen[fits] = t[fits]
        todo &= ~fits
    return chosen


def recommend(
    points: pd.DataFrame, rows: int, provider_correct: int, provider_cost: float, within: float
) -> int | None:
    """The position in ``points`` of the cheapest threshold whose accuracy is at most
    ``within`` percentage points below the provider's (``provider_correct`` of ``rows``);
    ties go to the more accurate, then the higher threshold. None when none costs less
    than the provider alone (``provider_cost`` per 1,000 rows)."""
    floor = provider_correct - within / 100 * rows - 1e-9
    fit = points[points["correct"] >= floor]
    if fit.empty:
        return None
    ranked = fit.sort_values(
        ["cost_per_1000_usd", "correct", "threshold"], ascending=[True, False, False]
    )
    best = int(ranked.index[0])
    cheaper = ranked.at[best, "cost_per_1000_usd"] < provider_cost - 1e-12
    return best if cheaper else None


@dataclasses.dataclass
class CascadeCurve:
    """The cascade of ``local``'s readings in front of ``provider``'s answers, over
    ``rows`` matched labelled rows (see the module docstring)."""

    local: str
    provider: str
    #: The local table's columns read: ("answer", "confidence") or the local_ ones.
    columns: tuple[str, str]
    rows: int
    within: float
    provider_accuracy: float
    provider_cost_per_1000: float
    #: Every breakpoint, lowest threshold first (``curve_points``' columns).
    points: pd.DataFrame
    #: The readable subset shown (``shown_thresholds``), highest threshold first, with
    #: a ``recommended`` column.
    table: pd.DataFrame
    #: The recommended threshold's row of ``points`` (None: keep sending every row).
    recommended: pd.Series | None

    def to_dict(self) -> dict[str, Any]:
        best = None if self.recommended is None else _metrics.jsonable(self.recommended.to_dict())
        return {
            "local": self.local,
            "provider": self.provider,
            "columns": list(self.columns),
            "rows": self.rows,
            "within_points": self.within,
            "provider_accuracy": _metrics.jsonable(self.provider_accuracy),
            "provider_cost_per_1000_usd": _metrics.jsonable(self.provider_cost_per_1000),
            "recommended": best,
            "table": _metrics.records(self.table),
        }


def cascade_curve(
    local: Report,
    local_at: np.ndarray,
    provider: Report,
    provider_at: np.ndarray,
    *,
    names: tuple[str, str],
    within: float = DEFAULT_WITHIN,
) -> CascadeCurve | None:
    """The curve over the matched rows (``local_at``/``provider_at``: positions of the
    same rows in each table) that the provider ran and that have a label (the
    provider's label column, else the local table's); None without readings or labels."""
    found = readings(local.results)
    judge = provider if provider.has_labels else local
    if found is None or not judge.has_labels:
        return None
    judge_at = provider_at if judge is provider else local_at
    paid = provider.results.iloc[provider_at].reset_index(drop=True)
    paid[_LABEL] = judge.labels.iloc[judge_at].to_numpy(dtype=object)  # type: ignore[union-attr]
    scored = _metrics.score(
        paid,
        _LABEL,
        case_sensitive=judge.case_sensitive,
        kinds=pd.Series(provider.scored["kind"].to_numpy(dtype=object)[provider_at]),
        scoring=judge.scoring,
    )
    keep = scored["labelled"].to_numpy(dtype=bool)
    answers = found.answers.iloc[local_at].reset_index(drop=True)[keep]
    local_correct = score_answers(judge, answers, judge_at[keep])
    confidence = found.confidence[local_at][keep]
    provider_correct = scored["correct"].to_numpy(dtype=bool)[keep]
    cost = np.nan_to_num(scored["cost_usd"].to_numpy(dtype=float)[keep])
    rows = int(keep.sum())
    if rows == 0:
        return None

    def at(thresholds: Sequence[float] | np.ndarray) -> pd.DataFrame:
        grid = np.asarray(thresholds, dtype=float)
        return curve_points(confidence, local_correct, provider_correct, cost, grid)

    points = at(breakpoints(confidence))
    alone_cost = 1000 * float(cost.sum()) / rows
    best = recommend(points, rows, int(provider_correct.sum()), alone_cost, within)
    recommended = None if best is None else points.loc[best]
    extra = [] if recommended is None else [float(recommended["threshold"])]
    table = at(shown_thresholds(confidence, extra))
    table["recommended"] = table["threshold"].isin(extra)
    return CascadeCurve(
        local=names[0],
        provider=names[1],
        columns=found.columns,
        rows=rows,
        within=within,
        provider_accuracy=float(provider_correct.sum()) / rows,
        provider_cost_per_1000=alone_cost,
        points=points,
        table=table,
        recommended=recommended,
    )


def cascade_pair(reports: Sequence[Report]) -> tuple[int, int] | None:
    """Which tables to put in a cascade: the first with local readings (a local run
    with confidences, or a cascade run's ``local_confidence``) and the first other
    one whose answers a provider gave (not a local run, not a cascade run)."""
    local = next(
        (
            i
            for i, r in enumerate(reports)
            if readings(r.results) is not None and (is_local_run(r) or is_cascade_run(r))
        ),
        None,
    )
    if local is None:
        return None
    paid = next(
        (
            i
            for i, r in enumerate(reports)
            if i != local and not is_local_run(r) and not is_cascade_run(r)
        ),
        None,
    )
    return None if paid is None else (local, paid)
