"""``run --report-wrong`` judges each row by its kind, as ``capbatch feedback`` does:
one rule (``_io.labels.judge``) for the report's typed scoring and the live path.

A grid answered ``1,4,7`` against the label ``[1,4,7]`` is right (the live path used to
compare it as text, and report it as wrong); a slider 2 px off is right within the
report's default tolerance (5 px).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from capbatch._io.labels import Scoring as LabelScoring
from capbatch._io.labels import answer_is_wrong, judge, label_text, row_kind
from capbatch._io.record import RowResult
from capbatch._providers.profiles import CAPSOLVER
from capbatch._reports.metrics import score
from capbatch._reports.metrics_types import Scoring
from capbatch._run.journal import Journal
from capbatch._run.live_reports import LiveReports
from tests.unit.test_wrong_answers import Provider, reporter

# (solution, answer, label, wrong?) worked out by hand.
TYPED: list[tuple[dict[str, Any], str | None, Any, bool]] = [
    ({"objects": [1, 4, 7]}, "1,4,7", "[1,4,7]", False),  # the same set
    ({"objects": [1, 4, 7]}, "1,4,7", [7, 4, 1], False),  # a list label, any order
    ({"objects": [3]}, "3", "[2]", True),
    ({"objects": []}, "", "[]", False),  # nothing chosen, nothing to choose
    ({"distance": 102}, "102", "100", False),  # 2 px off: within 5
    ({"distance": 110}, "110", "100", True),
    ({"angle": 358}, "358", "2", False),  # 4 degrees the short way round
    ({"angle": 10}, "10", "20", True),
    ({"hasObject": True}, "true", "yes", False),
    ({"hasObject": False}, "false", "true", True),
    ({"box": [0, 0, 10, 10]}, "0,0,10,10", "[0,0,10,12]", False),  # IoU 0.83
    ({"box": [0, 0, 10, 10]}, "0,0,10,10", "[5,5,15,15]", True),  # IoU 0.14
    ({"box": [3, 4]}, "3,4", "[6,8]", False),  # a point 5 px off
    ({"objects": [1]}, "1", "cars", False),  # an unreadable label: not scored
    ({"objects": [1]}, "1", None, False),  # no label
    ({"text": "AbC"}, "AbC", "abc", False),  # text: case-insensitive
    ({"text": "abd"}, "abd", "abc", True),
]


def test_the_live_rule_agrees_with_the_report_for_every_kind() -> None:
    frame = pd.DataFrame(
        {
            "status": "solved",
            "answer": [answer for _, answer, _, _ in TYPED],
            "solution": [json.dumps(solution) for solution, _, _, _ in TYPED],
            "label": [label for _, _, label, _ in TYPED],
        }
    )
    scored = score(frame, "label")
    by_report = (scored["labelled"] & ~scored["correct"]).tolist()
    by_row = [
        answer_is_wrong(answer, label, case_sensitive=False, kind=row_kind(solution))
        for solution, answer, label, _ in TYPED
    ]
    assert by_row == [wrong for *_, wrong in TYPED]
    assert by_row == by_report


def test_one_judge_and_one_scoring() -> None:
    assert Scoring is LabelScoring  # the report's Scoring is the live path's
    judged = judge("distance", "104", "100", Scoring(tolerance=3))
    assert (judged.hit, judged.measure) == (False, 4.0)
    assert answer_is_wrong("104", "100", case_sensitive=False, kind="distance",
                           scoring=Scoring(tolerance=3))  # fmt: skip
    assert judge("objects", None, "[1]", Scoring()).answer == frozenset()  # a failed row
    assert label_text([1, 2]) == "[1, 2]" and label_text(7) is None


@pytest.mark.parametrize(
    ("solution", "task_type", "params", "kind"),
    [
        ({"objects": [1]}, None, None, "objects"),
        ({"unknown": 1}, "VisionEngine", {"module": "slider_1"}, "distance"),
        (None, "ReCaptchaV2Classification", None, "objects"),
        (None, "ImageToTextTask", None, "text"),
        (None, None, None, "text"),
    ],
)
def test_a_rows_kind(solution: Any, task_type: Any, params: Any, kind: str) -> None:
    assert row_kind(solution, task_type, params) == kind


async def test_live_reports_judge_grids_and_sliders_by_kind(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    provider = Provider()
    labels: list[object] = [[1, 4, 7], "[2]", "100", "100", "abc"]
    live = LiveReports(
        reporter(provider, CAPSOLVER, journal),
        labels,
        case_sensitive=False,
        task_type="VisionEngine",
        task_params={"module": "slider_1"},
    )

    def row(answer: str, solution: dict[str, Any], task_id: str) -> RowResult:
        return RowResult(status="solved", answer=answer, solution=solution, task_id=task_id)

    live.on_result(0, row("1,4,7", {"objects": [1, 4, 7]}, "t0"))  # right as a set
    live.on_result(1, row("3", {"objects": [3]}, "t1"))  # wrong
    live.on_result(2, row("102", {"distance": 102}, "t2"))  # within 5 px
    live.on_result(3, row("130", {"gap": 130}, "t3"))  # the task says distance: wrong
    live.on_result(4, row("abc", {"text": "abc"}, "t4"))  # text, right
    await live.drain(5.0)
    reported = sorted(json.loads(r.content)["taskId"] for r in provider.requests)
    assert reported == ["t1", "t3"]
    assert live.wrong == 2 and live.rows == {1: "t1", 3: "t3"}
    journal.close()
