"""The readable answer per solution shape, and the one warning for an unknown shape."""

from __future__ import annotations

from typing import Any

import pytest

from capbatch._io.record import RowResult
from capbatch._providers.answers import readable_answer, unknown_shape
from capbatch._run.unknown_shapes import watch_shapes


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ({"text": "abc12", "confidence": 0.9}, "abc12"),
        ({"objects": [7, 1, 4], "type": "multi", "size": 3}, "1,4,7"),
        ({"objects": []}, ""),
        ({"hasObject": True, "type": "single", "size": 1}, "true"),
        ({"hasObject": False}, "false"),
        ({"distance": 213}, "213"),
        ({"distance": 213.0}, "213"),
        ({"angle": 12.5}, "12.5"),
        ({"box": [116.7, 164.0]}, "116.7,164"),
        ({"answers": ["100", "7"]}, '["100","7"]'),
        ({"gRecaptchaResponse": "tok"}, "tok"),
        ({"objects": ["a"]}, None),
        ({"distance": True}, None),
        ({"distance": float("nan")}, None),
        ({"clicks": [[1, 2]]}, None),
        ({}, None),
        (None, None),
    ],
)
def test_each_shape_reads_as_its_answer(
    solution: dict[str, Any] | None, answer: str | None
) -> None:
    assert readable_answer(solution) == answer


def test_unknown_shape_names_the_keys_only_when_nothing_is_readable() -> None:
    assert unknown_shape({"clicks": [1], "extra": 2}) == ["clicks", "extra"]
    assert unknown_shape({"objects": []}) is None
    assert unknown_shape(None) is None


def test_an_unknown_shape_is_said_once_and_every_row_still_reaches_the_callback() -> None:
    said: list[str] = []
    seen: list[int] = []
    watch = watch_shapes(lambda row, result: seen.append(row), said.append)
    odd = RowResult(status="solved", answer=None, solution={"clicks": [[1, 2]]})
    watch(0, RowResult(status="solved", answer="1,4", solution={"objects": [1, 4]}))
    watch(1, odd)
    watch(2, odd)
    assert seen == [0, 1, 2]
    assert len(said) == 1 and "row 1" in said[0] and "clicks" in said[0]
    assert "solution column" in said[0]
