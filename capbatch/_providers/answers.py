"""The readable ``answer`` of a solution object, per solution shape.

``solution`` keeps the whole object (JSON); ``answer`` is what a person or a metric
compares with a label:

| shape | answer |
|---|---|
| ``text`` (and token-like ``gRecaptchaResponse``, ``token``, ``answer``) | the text |
| ``answers`` (ImageToTextTask, module ``number``) | the list as JSON |
| ``objects`` (grids) | the sorted indexes joined by ``,`` (``1,4,7``; none: empty) |
| ``hasObject`` (one reCAPTCHA tile) | ``true`` or ``false`` |
| ``box`` | its numbers joined by ``,`` |
| ``distance``, ``angle`` | the number (``123``, ``12.5``: no ``.0`` on integers) |

Any other shape has no readable answer (``None``): the row is still solved, because
the provider answered and charged for it, and its ``solution`` keeps what it said
(``unknown_shape`` names its keys, for the run's one warning).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

#: Fields holding the answer as text, in order of preference.
_TEXT_FIELDS = ("text", "gRecaptchaResponse", "token", "answer")


def readable_answer(solution: Mapping[str, Any] | None) -> str | None:
    """The answer text of a solution object, by its shape (module docstring)."""
    if not solution:
        return None
    for name in _TEXT_FIELDS:
        value = solution.get(name)
        if isinstance(value, str):
            return value
    answers = solution.get("answers")
    if answers is not None:
        return json.dumps(answers, ensure_ascii=False, separators=(",", ":"))
    objects = solution.get("objects")
    if _numbers(objects):
        return ",".join(number_text(n) for n in sorted(objects))
    has_object = solution.get("hasObject")
    if isinstance(has_object, bool):
        return "true" if has_object else "false"
    box = solution.get("box")
    if _numbers(box) and box:
        return ",".join(number_text(n) for n in box)
    for name in ("distance", "angle"):
        value = solution.get(name)
        if _number(value):
            return number_text(value)
    return None


def unknown_shape(solution: Mapping[str, Any] | None) -> list[str] | None:
    """The keys of a solution with no readable answer (sorted), or None when it has
    one (or there is no solution at all)."""
    if not solution or readable_answer(solution) is not None:
        return None
    return sorted(str(key) for key in solution)


def number_text(value: float) -> str:
    """A number as an answer: integers without ``.0`` (``123``), others as Python
    writes them (``12.5``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: object) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _numbers(value: object) -> TypeGuard[Sequence[float]]:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(map(_number, value))
