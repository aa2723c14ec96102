"""Metrics of answers other than text (object sets, distances, angles, points, boxes), on
small hand-made tables. Every expected value is worked out by hand in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import capbatch
from capbatch import ConfigError
from capbatch._io import labels
from capbatch._reports import metrics_types as _types
from capbatch._reports.metrics import aggregate, score
from capbatch._reports.metrics_types import Scoring


def typed(kind_key: str, rows: list[tuple[Any, Any]], **extra: list[Any]) -> pd.DataFrame:
    """(label, answer) rows of one kind: the solution object carries ``kind_key``;
    a None answer is a failed row (no solution)."""
    frame = pd.DataFrame(rows, columns=["label", "answer"])
    solved = frame["answer"].notna()
    frame["status"] = np.where(solved, "solved", "failed")
    frame["error_code"] = np.where(solved, None, "ERROR_CAPTCHA_UNSOLVABLE")
    answers = frame["answer"].tolist()
    frame["solution"] = [None if a is None else json.dumps({kind_key: a}) for a in answers]
    for name, values in extra.items():
        frame[name] = values
    return frame


def summary(frame: pd.DataFrame, **kwargs: Any) -> pd.Series:
    kinds = _types.row_kinds(frame)
    return aggregate(score(frame, "label", kinds=kinds, **kwargs)).iloc[0]


OBJECTS = typed(
    "objects",
    [
        ("[1,4,7]", "1,4,7"),  # exact: tp 3
        ("1,4", "1,4,7"),  # tp 2, fp 1 (7)
        ("[0, 2, 5]", "2"),  # tp 1, fn 2 (0, 5)
        ("[3]", None),  # failed: fn 1
        ("[]", ""),  # the empty set, answered empty: exact
        ("", "1"),  # no label: not scored
    ],
)


def test_object_sets_exact_match_and_micro_precision_recall_f1() -> None:
    s = summary(OBJECTS)
    assert (s["labelled"], s["unlabelled"], s["correct"]) == (5, 1, 2)
    assert s["set_exact_rate"] == pytest.approx(2 / 5)
    assert s["accuracy"] == pytest.approx(2 / 5)  # the headline counts exact sets
    # tp = 3 + 2 + 1 = 6, fp = 1, fn = 2 + 1 = 3, summed over rows before dividing.
    assert s["set_precision"] == pytest.approx(6 / 7)
    assert s["set_recall"] == pytest.approx(6 / 9)
    assert s["set_f1"] == pytest.approx(2 * 6 / (2 * 6 + 1 + 3))  # 0.75
    assert math.isnan(s["cer"])  # no text rows: no character error rate
    assert math.isnan(s["distance_hit_rate"])


def test_object_sets_per_group_are_micro_averaged_within_each_group() -> None:
    frame = OBJECTS.assign(grid=["a", "a", "b", "b", "b", "b"])
    scored = score(frame, "label", kinds=_types.row_kinds(frame), by=["grid"])
    groups = aggregate(scored, "grid")
    # a: tp 5, fp 1, fn 0; b: tp 1, fp 0, fn 3.
    assert groups.loc["a", "set_precision"] == pytest.approx(5 / 6)
    assert groups.loc["a", "set_recall"] == 1.0
    assert groups.loc["b", "set_precision"] == 1.0
    assert groups.loc["b", "set_recall"] == pytest.approx(1 / 4)
    assert groups.loc["b", "set_f1"] == pytest.approx(2 / (2 + 0 + 3))


DISTANCES = typed(
    "distance",
    [("100", "103"), ("50", "56"), ("200", "200"), ("[30]", "24.5"), ("10", None)],
)


def test_distances_within_tolerance_and_error_statistics() -> None:
    s = summary(DISTANCES)
    # errors 3, 6, 0, 5.5; the failed row has none and misses.
    assert s["distance_hit_rate"] == pytest.approx(2 / 5)
    assert s["accuracy"] == pytest.approx(2 / 5)
    assert s["distance_error_mean"] == pytest.approx((3 + 6 + 0 + 5.5) / 4)
    assert s["distance_error_p50"] == pytest.approx((3 + 5.5) / 2)  # sorted 0, 3, 5.5, 6
    assert s["distance_error_p90"] == pytest.approx(5.5 + 0.7 * (6 - 5.5))  # position 2.7
    wider = summary(DISTANCES, scoring=Scoring(tolerance=6))
    assert wider["distance_hit_rate"] == pytest.approx(4 / 5)  # inclusive: 6 and 5.5 hit


def test_angles_go_the_short_way_round() -> None:
    frame = typed("angle", [("350", "10"), ("90", "92"), ("0", "180"), ("45", "40")])
    s = summary(frame)
    # errors 20, 2, 180, 5: within 5 degrees, rows 2 and 4.
    assert s["angle_hit_rate"] == pytest.approx(2 / 4)
    assert s["angle_error_mean"] == pytest.approx((20 + 2 + 180 + 5) / 4)


def test_boxes_by_intersection_over_union() -> None:
    frame = typed(
        "box",
        [
            ("[0,0,10,10]", "5,5,15,15"),  # inter 25, union 175: 1/7
            ("[0,0,10,10]", "0,0,10,5"),  # inter 50, union 100: 0.5, a hit at 0.5
            ("10,10,20,20", "[10,10,20,20]"),  # 1.0
            ("[0,0,10,10]", None),  # failed
        ],
    )
    frame.loc[:2, "solution"] = [json.dumps({"box": [1, 2, 3, 4]})] * 3
    s = summary(frame)
    assert s["box_hit_rate"] == pytest.approx(2 / 4)
    assert s["iou_mean"] == pytest.approx((1 / 7 + 0.5 + 1.0) / 3)
    strict = summary(frame, scoring=Scoring(iou_threshold=0.6))
    assert strict["box_hit_rate"] == pytest.approx(1 / 4)


def test_iou_by_hand() -> None:
    assert labels.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert labels.iou((0, 0, 2, 2), (2, 2, 4, 4)) == 0.0  # touching corners only
    assert labels.iou((2, 2, 0, 0), (0, 0, 2, 2)) == 1.0  # corners in either order


def test_points_and_yes_no() -> None:
    points = typed("box", [("[100,100]", "103,104"), ("[0,0]", "6,8")])
    points["solution"] = [json.dumps({"box": [1.0, 2.0]})] * 2  # two numbers: a point
    s = summary(points)
    assert _types.row_kinds(points).tolist() == ["point", "point"]
    assert s["point_error_mean"] == pytest.approx((5 + 10) / 2)
    assert s["point_hit_rate"] == pytest.approx(1 / 2)  # 5 px is within 5 px
    yes_no = typed("hasObject", [("true", "true"), ("false", "true"), ("0", "false")])
    assert summary(yes_no)["has_object_rate"] == pytest.approx(2 / 3)


def test_an_unreadable_label_is_not_scored_and_named_in_a_note() -> None:
    frame = typed("distance", [("abc", "3"), ("10", "12"), ("1,2", "1")])
    rep = capbatch.report(frame)
    s = rep.metrics()
    assert (s["labelled"], s["unlabelled"], s["correct"]) == (1, 2, 1)
    assert any("2 labels could not be read as distance (rows 0, 2)" in n for n in rep.notes)


def test_mixed_text_and_objects_share_the_headline_accuracy() -> None:
    frame = pd.DataFrame(
        {
            "label": ["ab", "xy", "[1,2]", "[3]"],
            "answer": ["AB", "xz", "2,1", "3,4"],
            "status": "solved",
            "solution": [
                json.dumps({"text": "AB"}),
                json.dumps({"text": "xz"}),
                json.dumps({"objects": [1, 2]}),
                json.dumps({"objects": [3, 4]}),
            ],
        }
    )
    rep = capbatch.report(frame)
    s = rep.metrics()
    assert rep.kinds == ["text", "objects"]
    assert s["accuracy"] == pytest.approx(2 / 4)  # "AB" (case-insensitive) and {1, 2}
    assert s["exact_accuracy"] == pytest.approx(1 / 4)  # "AB" is not "ab" exactly
    assert s["cer"] == pytest.approx((0 + 1 / 2) / 2)  # over the two text rows only
    assert s["set_precision"] == pytest.approx(3 / 4)
    assert list(rep.groups) == ["label_length"]
    assert "cer" in rep.columns() and "set_f1" in rep.columns()
    assert "distance_hit_rate" not in rep.columns()


def test_failed_rows_take_the_run_task_kind() -> None:
    frame = pd.DataFrame(
        {
            "label": ["120", "80"],
            "answer": [None, None],
            "status": "failed",
            "error_code": "ERROR_CAPTCHA_UNSOLVABLE",
        }
    )
    frame.attrs["capbatch"] = {
        "task_type": "VisionEngine",
        "settings": {"task_params": {"module": "slider_1"}},
    }
    rep = capbatch.report(frame)
    assert rep.kinds == ["distance"]
    assert rep.metrics()["distance_hit_rate"] == 0.0
    assert "label_length" not in rep.groups  # label length means nothing for numbers


def test_failed_rows_take_their_own_question_kind() -> None:
    frame = pd.DataFrame(
        {
            "question": ["aws:grid:bed", "aws:toycarcity:carcity", "aws:grid:bag", "other"],
            "solution": [None, None, '{"box": [1, 2]}', None],
        }
    )
    kinds = _types.row_kinds(frame, "AwsWafClassification", {})
    # the unknown question takes the most common kind of the solutions (the point)
    assert kinds.tolist() == ["objects", "point", "point", "point"]


@pytest.mark.parametrize(
    ("task", "params", "kind"),
    [
        ("ImageToTextTask", {}, "text"),
        ("ReCaptchaV2Classification", {}, "objects"),
        ("AwsWafClassification", {"question": "aws:grid:bed"}, "objects"),
        ("AwsWafClassification", {"question": "aws:toycarcity:carcity"}, "point"),
        ("AwsWafClassification", {}, None),
        ("VisionEngine", {"module": "slider_1"}, "distance"),
        ("VisionEngine", {"module": "rotate_1"}, "angle"),
        ("VisionEngine", {"module": "space_detection"}, "box"),
        (None, {}, None),
    ],
)
def test_kind_of_task(task: str | None, params: dict[str, str], kind: str | None) -> None:
    assert _types.kind_of_task(task, params) == kind


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("objects", "[1, 4, 7]", frozenset({1, 4, 7})),
        ("objects", "7,1,4", frozenset({1, 4, 7})),
        ("objects", "", frozenset()),
        ("objects", "1.5", None),
        ("objects", "[true]", None),
        ("distance", "123", 123.0),
        ("distance", "[12.5]", 12.5),
        ("distance", "1,2", None),
        ("distance", "nan", None),
        ("box", "[10,20,30,40]", (10.0, 20.0, 30.0, 40.0)),
        ("box", "10 20 30", None),
        ("has_object", "True", True),
        ("has_object", "maybe", None),
    ],
)
def test_parse_labels_and_answers(kind: str, text: str, value: object) -> None:
    assert labels.parse(kind, text) == value


def test_bad_tolerance_or_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        capbatch.report(DISTANCES, tolerance=-1)
    with pytest.raises(ConfigError, match="IoU"):
        capbatch.report(DISTANCES, iou_threshold=0)


def test_format_of_typed_metrics() -> None:
    assert _types.fmt("distance_error_p50", 4.25) == "4.2 px"
    assert _types.fmt("angle_error_mean", 3.0) == "3.0°"
    assert _types.fmt("set_f1", 0.75) == "75.0 %"
    assert _types.fmt("iou_mean", 0.5) == "0.500"
    assert _types.fmt("accuracy", 0.5) is None


def test_score_reads_kinds_from_solutions_by_default() -> None:
    """``capbatch feedback`` scores with ``score(frame, label)``: a grid answered "1,4,7"
    against the label "[1,4,7]" must not be reported as wrong."""
    frame = typed("objects", [("[1,4,7]", "1,4,7"), ("[2]", "3")])
    scored = score(frame, "label")
    assert scored["correct"].tolist() == [True, False]
    assert scored["kind"].tolist() == ["objects", "objects"]


def test_solution_kinds_fast_path_agrees_with_parsing() -> None:
    values = [
        '{"text": "ab12"}',  # plain: matched without parsing
        '{"text":"a\\"b"}',  # an escape: parsed
        '{"text": "x", "confidence": 0.9}',
        '{"type": "multi", "objects": [1], "size": 3}',
        {"angle": 30},  # a dict, as a DataFrame made in Python may hold
        None,
        "not json",
    ]
    kinds = _types.solution_kinds(pd.Series(values, dtype=object))
    assert kinds.tolist() == ["text", "text", "text", "objects", "angle", None, None]


def test_a_parquet_list_column_of_labels_reads_as_tile_sets(tmp_path: Path) -> None:
    table = pa.table(
        {
            "label": pa.array([[1, 4, 7], [2], []], pa.list_(pa.int64())),
            "answer": ["1,4,7", "3", ""],
            "status": ["solved"] * 3,
            "solution": ['{"objects": [1, 4, 7]}', '{"objects": [3]}', '{"objects": []}'],
        }
    )
    pq.write_table(table, tmp_path / "lists.results.parquet")
    rep = capbatch.report(tmp_path / "lists.results.parquet")
    s = rep.metrics()
    assert (s["labelled"], s["correct"]) == (3, 2)  # [1,4,7] and the empty set
    assert s["set_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # tp 3, fp 1, fn 1
    assert rep.notes == []
    assert rep.labels is not None and rep.labels.tolist() == ["[1, 4, 7]", "[2]", "[]"]
