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
(not scored), and a note names the rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("text", "objects", "has_object", "distance", "angle", "point", "box")
#: The kinds scored by an absolute error, and the unit of that error.
NUMERIC_UNITS: Mapping[str, str] = {"distance": "px", "angle": "°", "point": "px"}
DEFAULT_TOLERANCE = 5.0
DEFAULT_IOU_THRESHOLD = 0.5
_SEPARATORS = re.compile(r"[\s,;]+")
_TRUE, _FALSE = frozenset({"true", "1", "yes", "y", "t"}), frozenset({"false", "0", "no", "n", "f"})
_SOLUTION_KEYS = (("objects", "objects"), ("hasObject", "has_object"), ("distance", "distance"),
                  ("angle", "angle"))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How typed answers are judged: the tolerance (px for distances and points,
    degrees for angles) and the IoU a box needs."""

    tolerance: float = DEFAULT_TOLERANCE
    iou_threshold: float = DEFAULT_IOU_THRESHOLD

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"the tolerance must be a number >= 0, not {self.tolerance!r}")
        if not (0 < self.iou_threshold <= 1):
            raise ValueError(f"the IoU threshold must be in (0, 1], not {self.iou_threshold!r}")


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


def kind_of_solution(solution: Any) -> str | None:
    """The kind a solution object (a dict, or its JSON text) says, None if it says none."""
    if isinstance(solution, str):
        try:
            solution = json.loads(solution)
        except ValueError:
            return None
    if not isinstance(solution, Mapping):
        return None
    for key, kind in _SOLUTION_KEYS:
        if key in solution:
            return kind
    if "box" in solution:
        box = solution["box"]
        return "point" if isinstance(box, (list, tuple)) and len(box) == 2 else "box"
    return "text" if "text" in solution else None


def kind_of_task(task_type: Any, params: Mapping[str, Any] | None = None) -> str | None:
    """The kind of answer a task type (and its ``module``/``question``) gives, if known."""
    if not isinstance(task_type, str) or not task_type:
        return None
    name, params = task_type.lower(), params or {}
    if name in {"recaptchav2classification", "hcaptchaclassification", "funcaptchaclassification"}:
        return "objects"
    if name == "awswafclassification":
        question = str(params.get("question") or "")
        if question.startswith("aws:grid:"):
            return "objects"
        return "point" if question.startswith("aws:toycarcity") else None
    if name == "visionengine":
        module = str(params.get("module") or "")
        for prefix, kind in (("slider", "distance"), ("rotate", "angle"), ("space", "box")):
            if module.startswith(prefix):
                return kind
        return None
    return "text" if "text" in name else None


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


def _values(text: str) -> list[Any] | None:
    """A JSON value or comma/space-separated text as a list of values, None if neither."""
    text = text.strip()
    if text.startswith(("[", "{")) or text in {"true", "false"}:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, list) else [value]
    return [part for part in _SEPARATORS.split(text) if part]


def _numbers(text: str) -> list[float] | None:
    values = _values(text)
    if values is None:
        return None
    try:
        numbers = [float(v) for v in values if not isinstance(v, (bool, dict, list))]
    except (TypeError, ValueError):
        return None
    ok = len(numbers) == len(values) and all(map(math.isfinite, numbers))
    return numbers if ok else None


def parse(kind: str, text: Any) -> Any:
    """An answer or label of ``kind`` as a value to score, None if it cannot be read:
    a frozenset of indexes, a bool, a float (distance, angle) or a tuple of numbers."""
    if not isinstance(text, str):
        return None
    if kind == "has_object":
        word = text.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    numbers = _numbers(text)
    if numbers is None:
        return None
    if kind == "objects":
        whole = all(n.is_integer() and n >= 0 for n in numbers)
        return frozenset(int(n) for n in numbers) if whole else None
    if kind in {"distance", "angle"}:
        return numbers[0] if len(numbers) == 1 else None
    size = 2 if kind == "point" else 4
    return tuple(numbers) if len(numbers) == size else None


# -- scoring ----------------------------------------------------------------------------


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x1,y1,x2,y2`` boxes (corners in either order)."""
    ax1, ax2 = sorted((a[0], a[2]))
    ay1, ay2 = sorted((a[1], a[3]))
    bx1, bx2 = sorted((b[0], b[2]))
    by1, by2 = sorted((b[1], b[3]))
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else float(a == b)


def error(kind: str, answer: Any, truth: Any) -> float:
    """The absolute error of a distance, angle (the short way round) or point."""
    if kind == "point":
        return math.dist(answer, truth)
    gap = abs(float(answer) - float(truth))
    return min(gap % 360, 360 - gap % 360) if kind == "angle" else gap


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
        truth = parse(kind, wanted[i])
        if truth is None:
            out["label_unreadable"][i] = True
            continue
        out[f"{kind}_labelled"][i] = True
        answer = parse(kind, given[i]) if isinstance(given[i], str) else None
        if kind == "objects":
            guess = answer if answer is not None else frozenset()
            out["set_tp"][i] = len(guess & truth)
            out["set_fp"][i] = len(guess - truth)
            out["set_fn"][i] = len(truth - guess)
            out["typed_hit"][i] = answer == truth
        elif answer is None:
            continue
        elif kind == "has_object":
            out["typed_hit"][i] = answer == truth
        elif kind == "box":
            out["iou"][i] = iou(answer, truth)
            out["typed_hit"][i] = out["iou"][i] >= scoring.iou_threshold
        else:
            out[f"{kind}_error"][i] = error(kind, answer, truth)
            out["typed_hit"][i] = out[f"{kind}_error"][i] <= scoring.tolerance
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
