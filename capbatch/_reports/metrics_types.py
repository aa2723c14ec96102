"""Metrics per answer type: object sets, yes/no, distances, angles, points and boxes.

Each row has a *kind*, read from its ``solution`` object's keys (``objects``,
``hasObject``, ``distance``, ``angle``, ``box``, ``text``); a row without a solution
(a failed row) takes the run's kind, from its task type and parameters (``kind_of_task``),
else the most common kind among the table's solutions, else ``text``. Text rows keep
the text metrics of ``metrics``; for the other kinds a row is *correct* as follows, and
``accuracy`` counts these (a failed row is wrong, as for text):

* ``objects``: the answer's set of 0-based tile indexes equals the label's (exact set
  match). Precision, recall and F1 over indexes are **micro-averaged**: true positives,
  false positives and false negatives are summed over the rows first, then divided, so
  a row with more tiles weighs more. A failed row predicts nothing (its label's tiles
  count as false negatives). An answer ``""`` is the empty set; a label ``"[]"`` too
  (a label ``""`` is no label).
* ``has_object``: the answer's true/false equals the label's.
* ``distance`` (px), ``angle`` (degrees), ``point`` (px): the absolute error is within
  the tolerance (``Scoring.tolerance``, default 5; inclusive). An angle's error goes the
  short way round the circle (350 against 10 is 20 degrees); a point's is the Euclidean
  distance. Error statistics (mean, p50, p90, numpy's linear interpolation) are over the
  rows with a readable answer; the hit rate is over all labelled rows.
* ``box`` (``x1,y1,x2,y2``, corners in px): intersection over union at least the
  threshold (``Scoring.iou_threshold``, default 0.5). Mean IoU is over the rows with a
  readable box; a box given as two numbers is a point (AWS's toy-car answer).

Labels are JSON (``[1,4,7]``, ``123``, ``[10,20,30,40]``, ``true``) or comma-separated
(``1,4,7``). A label that cannot be read as its row's kind leaves the row unlabelled
(not scored), and a note names the rows. Each row is read and judged by ``_io.labels``
(``parse``, ``judge``), the one rule ``run --report-wrong`` applies too.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# How one row is judged lives in ``_io.labels``, shared with ``run --report-wrong``.
from capbatch._io.labels import NUMERIC_UNITS, Scoring, judge, kind_of_solution, kind_of_task

KINDS = ("text", "objects", "has_object", "distance", "angle", "point", "box")


#: The typed metric columns of a summary, in display order, with their names for people.
LABELS: Mapping[str, str] = {
    "set_exact_rate": "exact set match",
    "set_precision": "index precision (micro)",
    "set_recall": "index recall (micro)",
    "set_f1": "index F1 (micro)",
    "has_object_rate": "yes/no accuracy",
    **{
        column: f"{kind} {what}"
        for kind in NUMERIC_UNITS
        for column, what in (
            (f"{kind}_hit_rate", "within tolerance"),
            (f"{kind}_error_mean", "error mean"),
            (f"{kind}_error_p50", "error p50"),
            (f"{kind}_error_p90", "error p90"),
        )
    },
    "box_hit_rate": "IoU at or above threshold",
    "iou_mean": "mean IoU",
}
#: The columns each kind adds to a summary.
KIND_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "text": (),
    "objects": ("set_exact_rate", "set_precision", "set_recall", "set_f1"),
    "has_object": ("has_object_rate",),
    **{k: tuple(c for c in LABELS if c.startswith(f"{k}_")) for k in NUMERIC_UNITS},
    "box": ("box_hit_rate", "iou_mean"),
}


def fmt(column: str, v: float) -> str | None:
    """A typed metric as text ("83.3 %", "4.2 px", "3.0°", "0.712"), None for others."""
    if column not in LABELS:
        return None
    if column == "iou_mean":
        return f"{v:.3f}"
    kind = column.split("_", maxsplit=1)[0]
    if "_error_" in column:
        unit = NUMERIC_UNITS[kind]
        return f"{v:,.1f}{unit}" if unit == "°" else f"{v:,.1f} {unit}"
    return f"{100 * v:.1f} %"


# -- which kind a row is ----------------------------------------------------------------


#: ``{"text": "..."}`` with no escape in it: a text solution, known without parsing.
_PLAIN_TEXT = r'\{\s*"text"\s*:\s*"[^"\\]*"\s*\}'


def solution_kinds(solutions: pd.Series) -> pd.Series:
    """``kind_of_solution`` of each value (None where missing). Plain text solutions,
    most of a text run, are recognised by one vectorised match; the others are parsed
    once per distinct value."""
    is_text = solutions.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    strings = solutions.where(is_text).astype("string")
    plain = strings.str.fullmatch(_PLAIN_TEXT).to_numpy(dtype=bool, na_value=False)
    kinds = np.full(len(solutions), None, dtype=object)
    kinds[plain] = "text"
    others = np.flatnonzero(~plain & solutions.notna().to_numpy(dtype=bool))
    known: dict[str, str | None] = {}
    for at in others:
        value = solutions.iloc[at]
        if not isinstance(value, str):
            kinds[at] = kind_of_solution(value)
        else:
            kinds[at] = known[value] if value in known else known.setdefault(
                value, kind_of_solution(value))  # fmt: skip
    found: pd.Series = pd.Series(kinds, index=solutions.index, dtype=object)
    return found


def row_kinds(
    frame: pd.DataFrame, task_type: Any = None, params: Mapping[str, Any] | None = None
) -> pd.Series:
    """Each row's kind: its solution's; else its task's (``task_type`` with ``params``,
    and the row's own ``question`` when the table has that column); else the most
    common kind among the solutions; else text."""
    params = dict(params or {})
    task_kind = kind_of_task(task_type, params)
    kinds = pd.Series(None, index=frame.index, dtype=object)
    if "solution" in frame.columns:
        kinds = solution_kinds(frame["solution"])
    if task_type and "question" in frame.columns:
        asked = {q: kind_of_task(task_type, {**params, "question": q})
                 for q in pd.unique(frame["question"].dropna())}  # fmt: skip
        kinds = kinds.fillna(frame["question"].map(asked))
    usual = kinds.dropna().mode()
    default = task_kind or (str(usual.iloc[0]) if len(usual) else "text")
    filled: pd.Series = kinds.fillna(default).astype(object)
    return filled


# -- reading answers and labels ---------------------------------------------------------


def as_text(values: pd.Series) -> pd.Series:
    """``values`` with each list (a Parquet list column, read as numpy arrays) written as
    JSON, so ``[1, 4, 7]`` reads as a set of tiles rather than as ``"[1 4 7]"``."""
    if values.dtype != object:
        return values
    listed = values.map(lambda v: isinstance(v, (list, tuple, np.ndarray)))
    if not listed.any():
        return values
    dumped = values[listed].map(lambda v: json.dumps(np.asarray(v).tolist()))
    out: pd.Series = values.where(~listed, dumped)
    return out


# -- scoring ----------------------------------------------------------------------------


def _columns(n: int) -> dict[str, np.ndarray]:
    out = {"typed_hit": np.zeros(n, bool), "label_unreadable": np.zeros(n, bool)}
    for kind in KINDS[1:]:
        out[f"{kind}_labelled"] = np.zeros(n, bool)
    for name in ("set_tp", "set_fp", "set_fn"):
        out[name] = np.zeros(n, float)
    for name in (*(f"{k}_error" for k in NUMERIC_UNITS), "iou"):
        out[name] = np.full(n, np.nan)
    return out


def score_typed(
    answers: pd.Series, truths: pd.Series, kinds: pd.Series, labelled: np.ndarray, scoring: Scoring
) -> pd.DataFrame:
    """Per row: the typed flags and numbers ``aggregate_typed`` sums (module docstring).

    Only ``labelled`` rows of a kind other than text are read; ``typed_hit`` says a row
    is correct, ``label_unreadable`` that its label could not be read as its kind.
    """
    out = _columns(len(answers))
    kind_of = kinds.to_numpy(dtype=object)
    given, wanted = answers.to_numpy(dtype=object), truths.to_numpy(dtype=object)
    for i in np.flatnonzero(labelled & (kind_of != "text")):
        kind = str(kind_of[i])
        judged = judge(kind, given[i], wanted[i], scoring)  # the one rule (``_io.labels``)
        if judged.truth is None:
            out["label_unreadable"][i] = True
            continue
        out[f"{kind}_labelled"][i] = True
        out["typed_hit"][i] = judged.hit
        if kind == "objects":
            guess, truth = judged.answer, judged.truth
            out["set_tp"][i] = len(guess & truth)
            out["set_fp"][i] = len(guess - truth)
            out["set_fn"][i] = len(truth - guess)
        elif kind == "box":
            out["iou"][i] = judged.measure
        elif kind in NUMERIC_UNITS:
            out[f"{kind}_error"][i] = judged.measure
    out["typed_hit"] &= ~out["label_unreadable"]
    table: pd.DataFrame = pd.DataFrame(out, index=answers.index)
    return table


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    ratio: pd.Series = (num / den.where(den > 0)).astype(float)
    return ratio


def aggregate_typed(scored: pd.DataFrame, keys: pd.Series, index: pd.Index) -> pd.DataFrame:
    """The typed metric columns (``LABELS``) of ``scored`` grouped by ``keys``."""
    groups = scored.groupby(keys, dropna=False, sort=True, observed=True)
    flags = [f"{k}_labelled" for k in KINDS[1:]]
    hits = {k: scored["typed_hit"] & scored[f"{k}_labelled"] for k in KINDS[1:]}
    hit = pd.DataFrame(hits).groupby(keys, dropna=False, sort=True, observed=True).sum()
    sums = groups[[*flags, "set_tp", "set_fp", "set_fn"]].sum()
    out = pd.DataFrame(index=sums.index)
    tp, fp, fn = sums["set_tp"], sums["set_fp"], sums["set_fn"]
    out["set_exact_rate"] = _ratio(hit["objects"], sums["objects_labelled"])
    out["set_precision"] = _ratio(tp, tp + fp)
    out["set_recall"] = _ratio(tp, tp + fn)
    out["set_f1"] = _ratio(2 * tp, 2 * tp + fp + fn)  # = 2PR / (P + R), micro
    out["has_object_rate"] = _ratio(hit["has_object"], sums["has_object_labelled"])
    for kind in NUMERIC_UNITS:
        errors = groups[f"{kind}_error"]
        out[f"{kind}_hit_rate"] = _ratio(hit[kind], sums[f"{kind}_labelled"])
        out[f"{kind}_error_mean"] = errors.mean()
        out[f"{kind}_error_p50"] = errors.quantile(0.5)
        out[f"{kind}_error_p90"] = errors.quantile(0.9)
    out["box_hit_rate"] = _ratio(hit["box"], sums["box_labelled"])
    out["iou_mean"] = groups["iou"].mean()
    typed: pd.DataFrame = out.reindex(index)
    return typed


# -- what to show -----------------------------------------------------------------------

#: Summary columns that mean something only with labels, or only for text answers.
TEXT_ONLY = frozenset({"exact_accuracy", "ci_accuracy", "cer", "cer_solved"})
NEED_LABELS = frozenset(
    {"labelled", "unlabelled", "correct", "accuracy", "accuracy_solved", "cost_per_correct_usd"}
) | TEXT_ONLY | frozenset(LABELS)  # fmt: skip


def kinds_present(scored: pd.DataFrame) -> list[str]:
    """The kinds of the labelled rows (of every row if none is labelled), in KINDS order."""
    rows = scored[scored["labelled"]] if scored["labelled"].any() else scored
    seen = set(rows["kind"].dropna())
    return [k for k in KINDS if k in seen] or ["text"]


def relevant(columns: Sequence[str], kinds: Collection[str], labelled: bool) -> list[str]:
    """The summary ``columns`` worth showing for these kinds, with or without labels."""
    typed = {c for k in kinds for c in KIND_COLUMNS.get(k, ())}
    out = []
    for column in columns:
        if column in LABELS and column not in typed:
            continue
        if column in TEXT_ONLY and "text" not in kinds:
            continue
        if column in NEED_LABELS and not labelled:
            continue
        out.append(column)
    return out


def unreadable_note(scored: pd.DataFrame, limit: int = 5) -> list[str]:
    """A note naming rows whose label could not be read as their kind, if any."""
    rows = scored.index[scored["label_unreadable"].to_numpy(dtype=bool)]
    if not len(rows):
        return []
    kinds = ", ".join(sorted(set(scored.loc[rows, "kind"].astype(str))))
    named = ", ".join(str(r) for r in rows[:limit]) + (", ..." if len(rows) > limit else "")
    return [
        f"{len(rows)} labels could not be read as {kinds} (rows {named}): not scored; "
        "write them as JSON ([1,4,7], 123, [10,20,30,40]) or comma-separated (1,4,7)"
    ]
