"""Whether one answer matches its label: the report's rule, for one row at a time.

``_reports.metrics.score`` applies the rule to whole columns (vectorised); this is the
same rule for a run that reports wrong answers as they arrive (``run --report-wrong``),
which cannot wait for a whole table. ``tests/unit/test_wrong_answers.py`` checks that
the two agree. The rule: surrounding whitespace is ignored; a missing or empty label
makes the row unlabelled (never wrong); the comparison is case-insensitive
(``str.casefold``) unless ``case_sensitive``.
"""

from __future__ import annotations

from collections.abc import Mapping


def is_labelled(label: object) -> bool:
    return isinstance(label, str) and bool(label.strip())


def answer_is_wrong(answer: str | None, label: object, *, case_sensitive: bool) -> bool:
    """True when ``label`` is a label and ``answer`` does not match it."""
    if not isinstance(label, str) or not is_labelled(label):
        return False
    given, truth = (answer or "").strip(), label.strip()
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
