"""The cascade's threshold curve (issue 16, item 3) against values computed by hand.

Six rows, labels ``abc`` to ``pqr``. The local run read five of them (with a confidence)
and failed on the sixth; the provider answered all six and charged per row:

    row  label  local  confidence  right?  provider  right?  cost
    r1   abc    ABC    0.991       yes*    abc       yes     0.001
    r2   def    dxf    0.97        no      def       yes     0.001
    r3   ghi    ghi    0.95        yes     ghi       yes     0.002
    r4   jkl    jkl    0.9         yes     jkx       no      0.001
    r5   mno    mnx    0.8         no      mno       yes     0.001
    r6   pqr    —      —           —       pqr       yes     0.002

    (* case-insensitive, the default rule.) Provider alone: 5 of 6 right (83.3 %),
    $0.008 over 6 rows = $1.3333 per 1,000 rows.

A gate at t keeps the local answer where confidence >= t, the rest go to the provider:

    t      kept     right (local + provider)   accuracy   cost of rows sent on  per 1,000
    0.99   r1       1 + 4 (r2 r3 r5 r6)        5/6        0.007                 1.1667
    0.97   r1-r2    1 + 3 (r3 r5 r6)           4/6        0.006                 1.0
    0.95   r1-r3    2 + 2 (r5 r6)              4/6        0.004                 0.6667
    0.9    r1-r4    3 + 2 (r5 r6)              5/6        0.003                 0.5
    0      r1-r5    3 + 1 (r6)                 4/6        0.002                 0.3333

Within 1 point of 83.3 % means 5 of 6 right: 0.99 and 0.9 qualify, 0.9 is cheaper.
Within 20 points means 4 of 6 (3.8 rounded up): every threshold; 0 is the cheapest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import capbatch
from capbatch import ConfigError
from capbatch._reports import cascade_curve as cc

IDS = ["r1", "r2", "r3", "r4", "r5", "r6"]
LABELS = ["abc", "def", "ghi", "jkl", "mno", "pqr"]
LOCAL_ANSWERS = ["ABC", "dxf", "ghi", "jkl", "mnx", None]
CONFIDENCE = [0.991, 0.97, 0.95, 0.9, 0.8, None]
PROVIDER_ANSWERS = ["abc", "def", "ghi", "jkx", "mno", "pqr"]
COSTS = [0.001, 0.001, 0.002, 0.001, 0.001, 0.002]


def local_run() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": IDS,
            "label": LABELS,
            "answer": LOCAL_ANSWERS,
            "status": ["solved"] * 5 + ["failed"],
            "error_code": [None] * 5 + ["LOCAL_NO_ANSWER"],
            "provider": "local",
            "cost_usd": 0.0,
            "confidence": CONFIDENCE,
        }
    )


def provider_run() -> pd.DataFrame:
    # In another order: rows are matched by id.
    frame = pd.DataFrame(
        {
            "id": IDS,
            "label": LABELS,
            "answer": PROVIDER_ANSWERS,
            "status": "solved",
            "provider": "capsolver",
            "cost_usd": COSTS,
        }
    )
    return frame.iloc[::-1].reset_index(drop=True)


def test_readable_thresholds_keep_the_same_rows() -> None:
    assert cc.readable_threshold(0.97, 0.991) == 0.99
    assert cc.readable_threshold(0.9712, 0.9873) == 0.98
    assert cc.readable_threshold(0.99059, 0.9906) == 0.9906
    assert cc.readable_threshold(-np.inf, 0.8) == 0.0
    assert cc.readable_threshold(0.9997, 1.0) == 1.0
    assert cc.breakpoints(np.array(CONFIDENCE, dtype=float)).tolist() == [
        0.0,
        0.9,
        0.95,
        0.97,
        0.99,
    ]


def test_the_curve_and_the_recommended_threshold_by_hand() -> None:
    comparison = capbatch.compare(local_run(), provider_run(), names=["local", "paid"])
    curve = comparison.cascade
    assert curve is not None
    assert (curve.local, curve.provider, curve.rows) == ("local", "paid", 6)
    assert curve.columns == ("answer", "confidence")
    assert curve.provider_accuracy == pytest.approx(5 / 6)
    assert curve.provider_cost_per_1000 == pytest.approx(1000 * 0.008 / 6)
    points = curve.points.set_index("threshold")
    assert points.index.tolist() == [0.0, 0.9, 0.95, 0.97, 0.99]
    assert points["correct"].tolist() == [4, 5, 4, 4, 5]
    assert points["local_rows"].tolist() == [5, 4, 3, 2, 1]
    assert points["sent_share"].tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert points["accuracy"].tolist() == pytest.approx([4 / 6, 5 / 6, 4 / 6, 4 / 6, 5 / 6])
    hand = [0.002, 0.003, 0.004, 0.006, 0.007]
    assert points["cost_per_1000_usd"].tolist() == pytest.approx([1000 * c / 6 for c in hand])
    best = curve.recommended
    assert best is not None
    assert best["threshold"] == 0.9
    assert best["accuracy"] == pytest.approx(5 / 6)
    assert best["cost_per_1000_usd"] == pytest.approx(0.5)
    # The shown table: the grid (thresholds keeping the same rows merged), the
    # recommended one marked.
    table = curve.table
    assert table["threshold"].tolist() == [0.995, 0.98, 0.97, 0.95, 0.9, 0.0]
    assert table["local_rows"].tolist() == [0, 1, 2, 3, 4, 5]
    assert table["recommended"].tolist() == [False, False, False, False, True, False]
    assert comparison.to_dict()["cascade"]["recommended"]["threshold"] == 0.9


@pytest.mark.parametrize(
    ("within", "threshold", "correct"), [(0.0, 0.9, 5), (1.0, 0.9, 5), (20.0, 0.0, 4)]
)
def test_within_moves_the_recommendation(within: float, threshold: float, correct: int) -> None:
    curve = capbatch.compare(local_run(), provider_run(), within=within).cascade
    assert curve is not None and curve.recommended is not None
    assert curve.recommended["threshold"] == threshold
    assert curve.recommended["correct"] == correct


def test_no_recommendation_when_no_threshold_keeps_the_accuracy() -> None:
    local = local_run()
    local["answer"] = ["x", "x", "x", "x", "x", None]  # every local answer wrong
    curve = capbatch.compare(local, provider_run()).cascade
    assert curve is not None and curve.recommended is None
    assert not curve.table["recommended"].any()
    provider = provider_run().assign(cost_usd=0.0)  # nothing to save
    assert capbatch.compare(local_run(), provider).cascade.recommended is None  # type: ignore[union-attr]


def test_a_cascade_runs_local_readings_make_the_same_curve() -> None:
    """A cascade run keeps the local reading of every row in local_answer and
    local_confidence (its answer is the provider's where the row went on)."""
    cascade = provider_run().iloc[::-1].reset_index(drop=True)
    cascade["local_answer"] = LOCAL_ANSWERS
    cascade["local_confidence"] = CONFIDENCE
    kept = np.array([c is not None and c >= 0.95 for c in CONFIDENCE])
    cascade.loc[kept, "answer"] = np.array(LOCAL_ANSWERS, dtype=object)[kept]
    cascade.loc[kept, "provider"] = "local"
    cascade.loc[kept, "cost_usd"] = 0.0
    curve = capbatch.compare(cascade, provider_run()).cascade
    assert curve is not None and curve.columns == ("local_answer", "local_confidence")
    assert curve.points["correct"].tolist() == [4, 5, 4, 4, 5]
    assert curve.recommended is not None and curve.recommended["threshold"] == 0.9
    # The cascade run's own report: each stage apart (r1-r3 local, r4-r6 paid).
    stages = capbatch.report(cascade).stages
    assert stages is not None
    assert stages.index.tolist() == ["local stage", "provider: capsolver"]
    assert stages["rows"].tolist() == [3, 3]
    assert stages["accuracy"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert stages["cost_usd"].tolist() == pytest.approx([0.0, 0.004])
    assert stages["cost_per_1000_usd"].tolist() == pytest.approx([0.0, 1000 * 0.004 / 3])


def test_the_report_shows_the_gate_per_threshold_by_hand() -> None:
    gate = capbatch.report(local_run()).gate
    assert gate is not None
    assert gate["threshold"].tolist() == [0.995, 0.98, 0.97, 0.95, 0.9, 0.0]
    assert gate["local_rows"].tolist() == [0, 1, 2, 3, 4, 5]
    assert gate["sent_on"].tolist() == [6, 5, 4, 3, 2, 1]
    assert gate["local_share"].tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    accuracy = gate["local_accuracy"].tolist()
    assert np.isnan(accuracy[0])
    assert accuracy[1:] == pytest.approx([1.0, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    # A table without a confidence, or without labels, has no gate.
    assert capbatch.report(provider_run()).gate is None
    assert capbatch.report(local_run().drop(columns="label")).gate is None


def test_no_curve_without_labels_or_without_a_provider() -> None:
    unlabelled = capbatch.compare(local_run().drop(columns="label"), provider_run().drop(
        columns="label"))  # fmt: skip
    assert unlabelled.cascade is None
    assert any("no cascade curve" in n for n in unlabelled.notes)
    assert capbatch.compare(local_run(), local_run()).cascade is None
    with pytest.raises(ConfigError, match="within"):
        capbatch.compare(local_run(), provider_run(), within=-1)
