"""Accuracy, latency and cost metrics of a results table: pure functions on DataFrames.

``score`` turns a results table into one row of flags and numbers per input row, all
vectorised; ``aggregate`` sums those overall or per group into the metric columns
below (answers other than text: ``metrics_types``); ``errors_by_code`` counts failures
(``tables`` makes the confusions and the agreement between runs);
``notes`` says what a reader must know (a run that stopped part-way, unlabelled rows).
``LABELS``, ``fmt`` and ``shown`` put metrics and untrusted text in front of people
(terminal and HTML alike).

Definitions (the README and ``capbatch.report`` document the same):

* Answers and labels are compared as text with surrounding whitespace stripped. A null
  or empty label makes the row *unlabelled*: it is counted, never scored as wrong.
* A row *ran* when it has a result (``status`` not null) and was not skipped by the
  spend cap (``SPEND_CAP_REACHED``); other rows are ``not_run`` and stay out of every
  rate. ``rows = labelled + unlabelled + not_run``.
* ``solved_rate`` = solved / rows that ran.
* ``accuracy`` = correct / labelled, a null answer (failed row) counting as wrong;
  ``accuracy_solved`` = correct / labelled solved rows. "Correct" is ``exact`` with
  ``case_sensitive=True``, else case-insensitive (``str.casefold``). ``exact_accuracy``
  and ``ci_accuracy`` are always reported, whatever the flag.
* ``cer`` = mean over labelled rows of Levenshtein distance(answer, label) / len(label),
  on the strings the headline compares (casefolded unless case-sensitive); a failed
  row's answer is ``""`` (CER 1.0). ``cer_solved`` is the mean over solved rows.
* Latency percentiles (linear interpolation, as numpy) and max over rows with a
  latency; cache hits have none and are left out.
* ``throughput_rps`` = rows the run sent itself (not cache hits) with both times /
  (latest ``finished_at`` - earliest ``submitted_at``) of those rows.
* ``cost_usd`` = sum of ``cost_usd``; ``cost_per_1000_usd`` = 1000 x cost / rows that
  ran; ``cost_per_correct_usd`` = cost of labelled rows / correct answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from capbatch._io.labels import Scoring
from capbatch._reports import metrics_types as _types

PERCENTILES = (50, 90, 95, 99)
#: Rows left unfinished: not sent for the spend cap, or pending after an interrupted run.
NOT_RUN_CODES = frozenset({"SPEND_CAP_REACHED", "PENDING"})
UNKNOWN_CODE = "UNKNOWN"
LABEL_LENGTH = "label_length"

#: The metric columns of a summary, in display order, with their names for people.
LABELS: Mapping[str, str] = {
    "rows": "rows",
    "labelled": "labelled rows",
    "unlabelled": "unlabelled rows",
    "not_run": "rows not run",
    "solved": "solved",
    "failed": "failed",
    "correct": "correct",
    "solved_rate": "solved rate",
    "accuracy": "accuracy",
    "accuracy_solved": "accuracy over solved rows",
    "exact_accuracy": "exact accuracy (case-sensitive)",
    "ci_accuracy": "case-insensitive accuracy",
    "cer": "character error rate",
    "cer_solved": "character error rate, solved rows",
    **{f"latency_p{p}_ms": f"latency p{p}" for p in PERCENTILES},
    "latency_max_ms": "latency max",
    "throughput_rps": "throughput",
    "cost_usd": "total cost",
    "cost_per_1000_usd": "cost per 1,000 rows",
    "cost_per_correct_usd": "cost per correct answer",
    **_types.LABELS,
}
SUMMARY_COLUMNS: tuple[str, ...] = tuple(LABELS)
COUNT_COLUMNS = frozenset(SUMMARY_COLUMNS[:7])

_EPOCH = pd.Timestamp(0, tz="UTC")
_FLAGS = (
    "ran",
    "solved",
    "labelled",
    "unlabelled",
    "correct",
    "exact",
    "ci",
    "labelled_solved",
    "correct_solved",
    "timed",
)


def text(values: pd.Series) -> pd.Series:
    """``values`` as Arrow-backed strings, missing values kept (any pandas >= 2)."""
    return values.astype("string[pyarrow]")


def flag(values: pd.Series) -> np.ndarray:
    """A boolean Series (NA as False) as a numpy array."""
    return values.to_numpy(dtype=bool, na_value=False)


def _column(frame: pd.DataFrame, name: str, dtype: str) -> pd.Series:
    """A column of ``frame``, or an all-missing one when the table lacks it."""
    column: pd.Series = (
        frame[name] if name in frame.columns else pd.Series(None, index=frame.index, dtype=dtype)
    )
    return column


def _seconds(values: pd.Series) -> np.ndarray:
    """Timestamps (or ISO text) as unix seconds, NaN where missing."""
    stamps = pd.to_datetime(values, utc=True, errors="coerce")
    seconds: np.ndarray = (stamps - _EPOCH).dt.total_seconds().to_numpy(float, na_value=np.nan)
    return seconds


def _number(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def score(
    frame: pd.DataFrame,
    label: str | None,
    *,
    case_sensitive: bool = False,
    by: Sequence[str] = (),
    kinds: pd.Series | None = None,
    scoring: Scoring | None = None,
) -> pd.DataFrame:
    """One row per row of ``frame``: what it counts towards (see the module docstring).

    ``frame`` needs an ``answer`` column and the ``label`` column (None: no labels, every
    row unlabelled); other result columns are optional. ``kinds``: each row's kind of
    answer (default ``metrics_types.row_kinds``), judged with ``scoring``. The ``by``
    columns are copied through for grouping, plus ``label_length`` (text rows only).
    """
    status = text(_column(frame, "status", "string"))
    code = text(_column(frame, "error_code", "string"))
    answer = text(_types.as_text(frame["answer"])).str.strip()
    no_labels = pd.Series(pd.NA, index=frame.index, dtype="string")
    truth = text(_types.as_text(frame[label]) if label is not None else no_labels).str.strip()
    kinds = _types.row_kinds(frame) if kinds is None else kinds
    is_text = kinds.to_numpy(dtype=object) == "text"
    ran = flag(status.notna()) & ~flag(code.isin(NOT_RUN_CODES))
    solved = ran & flag(status == "solved")
    length = truth.str.len()
    typed = _types.score_typed(answer, truth, kinds, ran & flag(length > 0), scoring or Scoring())
    has_label = flag(length > 0) & ~typed["label_unreadable"].to_numpy(dtype=bool)
    labelled = ran & has_label
    hit = typed["typed_hit"].to_numpy(dtype=bool)
    exact = labelled & np.where(is_text, flag(answer == truth), hit)
    folded_answer, folded_truth = answer.str.casefold(), truth.str.casefold()
    ci = labelled & np.where(is_text, flag(folded_answer == folded_truth), hit)
    correct = exact if case_sensitive else ci
    norm_answer = answer if case_sensitive else folded_answer
    norm_truth = truth if case_sensitive else folded_truth
    cer = _char_error_rate(norm_answer, norm_truth, labelled & is_text)
    flags = {
        "ran": ran,
        "solved": solved,
        "labelled": labelled,
        "unlabelled": ran & ~has_label,
        "correct": correct,
        "exact": exact,
        "ci": ci,
        "labelled_solved": labelled & solved,
        "correct_solved": correct & solved,
        "cer": cer,
        "cer_solved": np.where(solved, cer, np.nan),
        "error_code": code.fillna(UNKNOWN_CODE).where(flag(status.notna()) & ~solved),
        "answer": norm_answer,
        "label": norm_truth,
        LABEL_LENGTH: length.where(has_label & is_text).astype("Int64"),
        "kind": kinds.to_numpy(dtype=object),
    }
    scored = pd.concat([_measures(frame, flags), typed], axis=1)
    for column in by:
        if column != LABEL_LENGTH:
            scored[column] = frame[column]
    return scored


def _measures(frame: pd.DataFrame, flags: dict[str, Any]) -> pd.DataFrame:
    """``flags`` with the row's latency, times and cost beside them, as one table."""
    ran, labelled = flags["ran"], flags["labelled"]
    timed, submitted, finished = _timing(frame, ran)
    cost = np.nan_to_num(_number(_column(frame, "cost_usd", "float64")))
    measures = {
        "latency_ms": _number(_column(frame, "latency_ms", "float64")),
        "timed": timed,
        "t_submitted": submitted,
        "t_finished": finished,
        "cost_usd": cost,
        "cost_labelled": np.where(labelled, cost, 0.0),
    }
    table: pd.DataFrame = pd.DataFrame({**flags, **measures}, index=frame.index)
    return table


def _char_error_rate(answers: pd.Series, truths: pd.Series, labelled: np.ndarray) -> np.ndarray:
    """Levenshtein distance / label length for the ``labelled`` rows (a missing answer
    as ``""``), NaN for the others: ``cer`` in the module docstring."""
    cer = np.full(len(answers), np.nan)
    rows = np.flatnonzero(labelled)
    if rows.size:
        given = answers.iloc[rows].fillna("").tolist()
        wanted = truths.iloc[rows].tolist()
        distance = process.cpdist(given, wanted, scorer=Levenshtein.distance, workers=-1)
        lengths = truths.iloc[rows].str.len().to_numpy(dtype=float)
        cer[rows] = distance / lengths
    return cer


def _timing(frame: pd.DataFrame, ran: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which rows' submit and finish times count (they ran, were not answered from the
    cache and have both times), and those times in seconds (NaN for the others)."""
    from_cache = flag(_column(frame, "from_cache", "boolean").astype("boolean"))
    submitted = _seconds(_column(frame, "submitted_at", "object"))
    finished = _seconds(_column(frame, "finished_at", "object"))
    timed = ran & ~from_cache & ~np.isnan(submitted) & ~np.isnan(finished)
    return timed, np.where(timed, submitted, np.nan), np.where(timed, finished, np.nan)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    ratio: pd.Series = (num / den.where(den > 0)).astype(float)
    return ratio


def aggregate(scored: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """The ``SUMMARY_COLUMNS`` of ``scored``: one row ``all``, or one per value of ``by``.

    Missing group values form their own group (index value ``<NA>``).
    """
    if by is None:
        keys = pd.Series(np.zeros(len(scored), np.int8), index=scored.index)
    else:
        keys = scored[by]
    groups = scored.groupby(keys, dropna=False, sort=True, observed=True)
    sums = groups[[*_FLAGS, "cost_usd", "cost_labelled"]].sum()
    means = groups[["cer", "cer_solved"]].mean()
    latency = groups["latency_ms"]
    quantiles = latency.quantile(np.array([p / 100 for p in PERCENTILES])).unstack()
    span = groups["t_finished"].max() - groups["t_submitted"].min()
    if by is None and sums.empty:  # an empty table still has one summary row, of zeros
        sums = pd.DataFrame(0, index=[0], columns=sums.columns)
    index = sums.index
    out = pd.DataFrame(index=index)
    out["rows"] = groups.size().reindex(index, fill_value=0)
    out["labelled"] = sums["labelled"]
    out["unlabelled"] = sums["unlabelled"]
    out["not_run"] = out["rows"] - sums["ran"]
    out["solved"] = sums["solved"]
    out["failed"] = sums["ran"] - sums["solved"]
    out["correct"] = sums["correct"]
    out["solved_rate"] = _ratio(sums["solved"], sums["ran"])
    out["accuracy"] = _ratio(sums["correct"], sums["labelled"])
    out["accuracy_solved"] = _ratio(sums["correct_solved"], sums["labelled_solved"])
    out["exact_accuracy"] = _ratio(sums["exact"], sums["labelled"])
    out["ci_accuracy"] = _ratio(sums["ci"], sums["labelled"])
    out["cer"] = means["cer"].reindex(index)
    out["cer_solved"] = means["cer_solved"].reindex(index)
    for p in PERCENTILES:
        out[f"latency_p{p}_ms"] = quantiles.get(p / 100, pd.Series(dtype=float)).reindex(index)
    out["latency_max_ms"] = latency.max().reindex(index)
    out["throughput_rps"] = _ratio(sums["timed"], span.reindex(index))
    out["cost_usd"] = sums["cost_usd"].astype(float)
    out["cost_per_1000_usd"] = 1000 * _ratio(sums["cost_usd"], sums["ran"])
    out["cost_per_correct_usd"] = _ratio(sums["cost_labelled"], sums["correct"])
    out = out.join(_types.aggregate_typed(scored, keys, index))
    for column in COUNT_COLUMNS:
        out[column] = out[column].astype("int64")
    if by is None:
        out.index = pd.Index(["all"])
    else:
        out.index.name = by
    ordered: pd.DataFrame = out[list(SUMMARY_COLUMNS)]
    return ordered


def errors_by_code(scored: pd.DataFrame) -> pd.DataFrame:
    """Failed rows per ``error_code`` (``UNKNOWN`` when missing): ``rows`` and ``share``.

    ``share`` is of all rows of the table. Most frequent first, then by code.
    """
    counts = scored["error_code"].dropna().value_counts()
    out: pd.DataFrame = pd.DataFrame(
        {"error_code": counts.index.astype(str), "rows": counts.to_numpy()}
    )
    out = out.sort_values(["rows", "error_code"], ascending=[False, True], ignore_index=True)
    out["rows"] = out["rows"].astype("int64")
    out["share"] = out["rows"] / len(scored) if len(scored) else np.nan
    return out


def jsonable(value: Any) -> Any:
    """A value fit for ``json.dumps``: NaN and NA become None, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` (index included when named) as JSON-ready dicts."""
    flat = frame.reset_index() if frame.index.name is not None else frame
    return [jsonable(row) for row in flat.to_dict(orient="records")]


def notes(
    frame: pd.DataFrame, scored: pd.DataFrame, run: dict[str, Any], label: str | None = "label"
) -> tuple[list[str], bool]:
    """Notes for the reader of a report, and whether the run stopped part-way.

    Part-way: the run's own summary (``run["summary"]``) counts more rows than the
    table has or names what stopped it, rows were not sent for the spend cap, or rows
    have no result (``status`` null). ``label`` None: the table has no label column.
    """
    out: list[str] = []
    summary = run.get("summary") or {}
    recorded = summary.get("rows")
    if isinstance(recorded, int) and recorded > len(frame):
        out.append(
            f"the run recorded {recorded} rows but the table has {len(frame)}: "
            "this reports on the rows present"
        )
    if summary.get("stopped_by"):
        out.append(f"the run was stopped by {summary['stopped_by']}")
    spend_cap = int((scored["error_code"] == "SPEND_CAP_REACHED").sum())
    no_result = int(len(scored) - scored["ran"].sum()) - spend_cap
    if spend_cap:
        out.append(f"{spend_cap} rows not sent: the spend cap was reached")
    if no_result:
        out.append(f"{no_result} rows have no result: the run did not reach them")
    partial = bool(out)
    if partial:
        out.insert(
            0,
            "the run stopped part-way: rows that did not run are left out of "
            "every rate and counted as not_run",
        )
    if "status" not in frame.columns:
        out.append("no status column: rows with an answer count as solved")
    if label is None:
        out.append("no label column: accuracy needs labels (name one with --label-column)")
        return out, partial
    out += _types.unreadable_note(scored)
    unlabelled = int(scored["unlabelled"].sum() - scored["label_unreadable"].sum())
    if unlabelled:
        out.append(f"{unlabelled} rows have no label: reported as unlabelled, not scored")
    if len(frame) and not scored["labelled"].any():
        out.append("no labelled rows that ran: accuracy cannot be measured")
    return out, partial


# -- shown to people ---------------------------------------------------------------------


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def shown(value: Any, limit: int = 80) -> str:
    """Untrusted text made visible: control characters escaped, long text cut."""
    if missing(value):
        return "—"
    string = str(value)
    if not string.isprintable():
        string = "".join(c if c.isprintable() else repr(c)[1:-1] for c in string)
    return string if len(string) <= limit else string[: limit - 1] + "…"


def usd(v: float) -> str:
    """Dollars with cents, and three significant digits below a dollar ($0.0015)."""
    decimals = 2 if abs(v) >= 1 or v == 0 else max(2, 2 - math.floor(math.log10(abs(v))))
    digits = f"{v:,.{decimals}f}"
    while decimals > 2 and digits.endswith("0"):
        digits, decimals = digits[:-1], decimals - 1
    return f"${digits}"


def fmt(column: str, value: Any) -> str:
    """A metric value as text for people ("87.5 %", "120 ms", "$0.0004")."""
    if missing(value):
        return "—"
    v = float(value)
    if (typed := _types.fmt(column, v)) is not None:
        return typed
    if column in COUNT_COLUMNS or column in {"count", "agree"}:
        return f"{int(v):,}"
    if column.endswith("_rate") or "accuracy" in column or column in {"share", "agreement"}:
        return f"{100 * v:.1f} %"
    if column.startswith("cer"):
        return f"{v:.3f}"
    if column.endswith("_ms"):
        return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"
    if column.endswith("_rps"):
        return f"{v:,.1f} rows/s"
    if column.endswith("_usd"):
        return usd(v)
    return shown(value)
