"""Whether one answer matches its label: the report's rule, one row at a time.

``_reports.metrics.score`` applies the rule to whole columns; this module holds the
rule for one row, which the report's typed scoring (``_reports.metrics_types``) calls
for each row of a kind other than text, and which a run that reports wrong answers as
they arrive (``run --report-wrong``) calls for each row, so the two can never differ.
``tests/unit/test_wrong_answers.py`` checks that they agree.

The rule: surrounding whitespace is ignored; a missing or empty label makes the row
unlabelled (never wrong). A row's *kind* comes from its solution's keys
(``kind_of_solution``), else from its task type (``kind_of_task``), else it is text.
Text is compared case-insensitively (``str.casefold``) unless ``case_sensitive``.
The other kinds are read from the answer and the label (``parse``: JSON or
comma-separated) and judged with a ``Scoring`` (``judge``): object sets by exact set
match, yes/no by equality, distances, angles (the short way round) and points within
a tolerance, boxes by intersection over union. A label that cannot be read as its
row's kind leaves the row unscored (never wrong).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

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


def row_kind(solution: Any, task_type: Any = None, params: Mapping[str, Any] | None = None) -> str:
    """One row's kind: its solution's, else its task's, else text."""
    return kind_of_solution(solution) or kind_of_task(task_type, params) or "text"


# -- reading answers and labels ---------------------------------------------------------


def label_text(label: object) -> str | None:
    """A label as text: a list (a Parquet list column's cell) as JSON, text as it is,
    anything else None (no label)."""
    if isinstance(label, str):
        return label
    if isinstance(label, (list, tuple)):
        return json.dumps(list(label))
    if hasattr(label, "tolist") and isinstance(values := label.tolist(), list):
        return json.dumps(values)  # a numpy array (a list column read through pandas)
    return None


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


# -- judging ----------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class Judged:
    """One row of a kind other than text, judged: the label and the answer as read
    (None: unreadable; a failed row's answer is None, an object row's then the empty
    set), whether the answer is right, and its error or IoU (NaN when not measured)."""

    truth: Any
    answer: Any
    hit: bool
    measure: float = math.nan


def judge(kind: str, answer: Any, label: str, scoring: Scoring) -> Judged:
    """``answer`` (text, or None for a failed row) against ``label`` for a row of
    ``kind`` other than text (the module docstring's rule)."""
    truth = parse(kind, label)
    if truth is None:
        return Judged(None, None, False)
    given = parse(kind, answer) if isinstance(answer, str) else None
    if kind == "objects":
        guess = given if given is not None else frozenset()
        return Judged(truth, guess, given == truth)
    if given is None:
        return Judged(truth, None, False)
    if kind == "has_object":
        return Judged(truth, given, given == truth)
    if kind == "box":
        overlap = iou(given, truth)
        return Judged(truth, given, overlap >= scoring.iou_threshold, overlap)
    gap = error(kind, given, truth)
    return Judged(truth, given, gap <= scoring.tolerance, gap)


def is_labelled(label: object) -> bool:
    return isinstance(label, str) and bool(label.strip())


def answer_is_wrong(
    answer: str | None,
    label: object,
    *,
    case_sensitive: bool,
    kind: str = "text",
    scoring: Scoring | None = None,
) -> bool:
    """True when ``label`` is a label and ``answer`` does not match it, for a row of
    ``kind`` (``row_kind``), judged with ``scoring`` (default ``Scoring()``)."""
    text = label_text(label)
    if text is None or not is_labelled(text):
        return False
    if kind != "text":
        judged = judge(kind, answer, text, scoring or Scoring())
        return judged.truth is not None and not judged.hit
    given, truth = (answer or "").strip(), text.strip()
    if case_sensitive:
        return given != truth
    return given.casefold() != truth.casefold()


def case_sensitive_run(task_params: object) -> bool:
    """Whether a run asked the provider for case (``case`` task parameter true, as
    ``--task-param case=true`` or a JSON ``true``): its answers are then compared with
    their case."""
    value = task_params.get("case") if isinstance(task_params, Mapping) else None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True or value == 1
