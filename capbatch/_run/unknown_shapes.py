"""One warning per run for answers capbatch cannot read: a solution of a shape it does
not know (``_providers.answers``) is kept whole in ``solution``, the row is solved
(the provider answered and charged), its ``answer`` is empty, and the user is told
once, with the solution's keys, so that a new shape is seen and not lost."""

from __future__ import annotations

from collections.abc import Callable

from capbatch._io.record import RowResult
from capbatch._providers.answers import unknown_shape

OnResult = Callable[[int, RowResult], None]


def watch_shapes(on_result: OnResult | None, tell: Callable[[str], None]) -> OnResult:
    """``on_result`` (if any), after a look at each row for an unknown solution shape;
    ``tell`` says the first one."""
    warned = False

    def check(row: int, result: RowResult) -> None:
        nonlocal warned
        if not warned and result.status == "solved" and result.answer is None:
            keys = unknown_shape(result.solution)
            if keys is not None:
                warned = True
                tell(
                    f"row {row}: the provider's solution has a shape capbatch cannot read "
                    f"(keys: {', '.join(keys) or 'none'}); such rows are kept as solved "
                    "with an empty answer and the whole solution in the solution column"
                )
        if on_result is not None:
            on_result(row, result)

    return check
