"""Metric functions on small hand-made results tables.

Every expected value is worked out in the test itself (by hand, or with the tiny
reference edit distance below), never by calling the code under test a second way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from capbatch._reports import metrics as _metrics
from capbatch._reports.metrics import aggregate, errors_by_code, score
from capbatch._reports.tables import agreement, confusions

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def reference_distance(a: str, b: str) -> int:
    """Textbook Levenshtein distance, the independent check for rapidfuzz's."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A results table: defaults for every result column a row does not give."""
    filled = []
    for i, row in enumerate(rows):
        solved = row.get("answer") is not None
        filled.append(
            {
                "id": f"r{i}",
                "label": None,
                "answer": None,
                "status": "solved" if solved else "failed",
                "error_code": None if solved else "ERROR_CAPTCHA_UNSOLVABLE",
                "latency_ms": 100.0,
                "cost_usd": 0.0,
                "from_cache": False,
                "submitted_at": T0,
                "finished_at": T0 + pd.Timedelta(seconds=1),
                **row,
            }
        )
    return pd.DataFrame(filled)


def summary(frame: pd.DataFrame, **kwargs: Any) -> pd.Series:
    return aggregate(score(frame, "label", **kwargs)).iloc[0]


def test_exact_case_insensitive_and_solved_accuracy() -> None:
    frame = table(
        [
            {"label": "abcd", "answer": "abcd"},  # exact
            {"label": "abcd", "answer": "ABCD"},  # right but for case
            {"label": "abcd", "answer": "abce"},  # wrong
            {"label": "abcd", "answer": None},  # failed: wrong, not solved
        ]
    )
    s = summary(frame)
    assert (s["rows"], s["labelled"], s["solved"], s["failed"]) == (4, 4, 3, 1)
    assert s["correct"] == 2
    assert s["accuracy"] == pytest.approx(2 / 4)
    assert s["accuracy_solved"] == pytest.approx(2 / 3)
    assert s["exact_accuracy"] == pytest.approx(1 / 4)
    assert s["ci_accuracy"] == pytest.approx(2 / 4)
    assert s["solved_rate"] == pytest.approx(3 / 4)

    strict = summary(frame, case_sensitive=True)
    assert strict["accuracy"] == pytest.approx(1 / 4)
    assert strict["accuracy_solved"] == pytest.approx(1 / 3)
    assert strict["ci_accuracy"] == pytest.approx(2 / 4)  # reported whatever the flag


def test_surrounding_whitespace_is_ignored() -> None:
    s = summary(table([{"label": " k7mq ", "answer": "k7mq\n"}]))
    assert s["exact_accuracy"] == 1.0


def test_empty_and_null_labels_are_unlabelled_not_wrong() -> None:
    frame = table(
        [
            {"label": "abcd", "answer": "abcd"},
            {"label": None, "answer": "zzzz"},
            {"label": "", "answer": "zzzz"},
            {"label": "   ", "answer": None},
        ]
    )
    s = summary(frame)
    assert (s["rows"], s["labelled"], s["unlabelled"]) == (4, 1, 3)
    assert s["accuracy"] == 1.0
    assert s["cer"] == 0.0


def test_cer_matches_a_reference_edit_distance() -> None:
    pairs = [
        ("abcd", "abcd"),
        ("abcd", "abed"),
        ("abcd", "ab"),
        ("k7mq", "zzzzzzzzz"),
        ("wxyz", "zyxw"),
        ("pq", None),
    ]
    frame = table([{"label": label, "answer": answer} for label, answer in pairs])
    s = summary(frame)
    per_row = [reference_distance(a or "", t) / len(t) for t, a in pairs]
    assert per_row[3] > 1  # a long wrong answer costs more than the label's length
    assert per_row[5] == 1.0  # a failed row reads as the empty answer
    assert s["cer"] == pytest.approx(sum(per_row) / len(per_row))
    assert s["cer_solved"] == pytest.approx(sum(per_row[:5]) / 5)


def test_cer_follows_the_case_flag() -> None:
    frame = table([{"label": "abcd", "answer": "ABCd"}])
    assert summary(frame)["cer"] == 0.0
    assert summary(frame, case_sensitive=True)["cer"] == pytest.approx(3 / 4)


def test_latency_percentiles_skip_cache_hits_without_latency() -> None:
    latencies = [40.0, 10.0, 30.0, 20.0, None]
    frame = table([{"label": "ab", "answer": "ab", "latency_ms": v} for v in latencies])
    frame.loc[4, "from_cache"] = True
    s = summary(frame)
    # Sorted 10, 20, 30, 40; linear interpolation at (n - 1) * q = 3q.
    assert s["latency_p50_ms"] == pytest.approx(25.0)
    assert s["latency_p90_ms"] == pytest.approx(37.0)
    assert s["latency_p95_ms"] == pytest.approx(38.5)
    assert s["latency_p99_ms"] == pytest.approx(39.7)
    assert s["latency_max_ms"] == 40.0


def test_throughput_counts_rows_sent_over_the_run_window() -> None:
    rows = [
        {"answer": "a", "submitted_at": T0, "finished_at": T0 + pd.Timedelta(seconds=2)},
        {
            "answer": "b",
            "submitted_at": T0 + pd.Timedelta(seconds=1),
            "finished_at": T0 + pd.Timedelta(seconds=4),
        },
        {
            "answer": "c",
            "submitted_at": T0 + pd.Timedelta(seconds=3),
            "finished_at": T0 + pd.Timedelta(seconds=5),
        },
        # A cache hit answered by an earlier run: not sent, and its time is not this run's.
        {
            "answer": "d",
            "from_cache": True,
            "submitted_at": None,
            "finished_at": T0 + pd.Timedelta(hours=5),
            "latency_ms": None,
        },
        # An input error: never sent, no times.
        {"answer": None, "submitted_at": None, "finished_at": None, "latency_ms": None},
    ]
    s = summary(table(rows))
    assert s["throughput_rps"] == pytest.approx(3 / 5.0)


def test_cost_totals_per_thousand_and_per_correct() -> None:
    frame = table(
        [
            {"label": "ab", "answer": "ab", "cost_usd": 0.001},
            {"label": "ab", "answer": "ax", "cost_usd": 0.001},
            {"label": "cd", "answer": "cd", "cost_usd": 0.001},
            {"label": "cd", "answer": None, "cost_usd": 0.0},
            {"label": None, "answer": "zz", "cost_usd": 0.002},  # unlabelled: not per correct
        ]
    )
    s = summary(frame)
    assert s["cost_usd"] == pytest.approx(0.005)
    assert s["cost_per_1000_usd"] == pytest.approx(0.005 / 5 * 1000)
    assert s["cost_per_correct_usd"] == pytest.approx(0.003 / 2)


def test_all_failed() -> None:
    frame = table([{"label": "abcd", "answer": None, "latency_ms": None, "cost_usd": 0.0}] * 3)
    s = summary(frame)
    assert (s["solved"], s["failed"], s["correct"]) == (0, 3, 0)
    assert s["solved_rate"] == 0.0
    assert s["accuracy"] == 0.0
    assert s["cer"] == 1.0
    for undefined in ("accuracy_solved", "cer_solved", "latency_p50_ms", "cost_per_correct_usd"):
        assert math.isnan(s[undefined]), undefined


def test_empty_table_has_one_summary_row_of_zeros() -> None:
    s = summary(table([]).reindex(columns=["label", "answer", "status"]))
    assert (s["rows"], s["labelled"], s["solved"], s["cost_usd"]) == (0, 0, 0, 0.0)
    assert math.isnan(s["accuracy"])


def test_unicode_labels_answers_and_caseless_matching() -> None:
    frame = table(
        [
            {"label": "日本語", "answer": "日本誤"},
            {"label": "ÄÖÜ", "answer": "äöü"},
            {"label": "straße", "answer": "STRASSE"},  # casefold: ß matches ss
            {"label": "🙂ab", "answer": "🙂ab"},
        ]
    )
    scored = score(frame, "label")
    s = aggregate(scored).iloc[0]
    assert s["ci_accuracy"] == pytest.approx(3 / 4)
    assert s["exact_accuracy"] == pytest.approx(1 / 4)
    assert scored["cer"].iloc[0] == pytest.approx(1 / 3)
    assert list(scored["label_length"]) == [3, 3, 6, 3]
    wrong = scored[scored["labelled"] & ~scored["correct"]]
    got = confusions(wrong["answer"].tolist(), wrong["label"].tolist())
    assert got.to_dict("records") == [{"label_char": "語", "answer_char": "誤", "count": 1}]


def test_rows_not_run_stay_out_of_every_rate() -> None:
    frame = table(
        [
            {"label": "ab", "answer": "ab"},
            {"label": "ab", "answer": "xx"},
            {"label": "ab", "answer": None, "error_code": "SPEND_CAP_REACHED", "latency_ms": None},
            {"label": "ab", "answer": None, "status": None, "error_code": None, "latency_ms": None},
        ]
    )
    s = summary(frame)
    assert (s["rows"], s["not_run"], s["labelled"], s["failed"]) == (4, 2, 2, 0)
    assert s["accuracy"] == pytest.approx(1 / 2)
    assert s["solved_rate"] == 1.0


def test_metrics_per_group() -> None:
    frame = table(
        [
            {"label": "abcd", "answer": "abcd", "style": "plain", "latency_ms": 10.0},
            {"label": "abcd", "answer": "abcx", "style": "plain", "latency_ms": 30.0},
            {"label": "abcde", "answer": "abcde", "style": "noisy", "latency_ms": 50.0},
            {"label": None, "answer": "q", "style": "noisy", "latency_ms": 70.0},
            {"label": "xy", "answer": None, "style": None, "latency_ms": 90.0},
        ]
    )
    scored = score(frame, "label", by=["style"])
    by_style = aggregate(scored, "style")
    plain, noisy = by_style.loc["plain"], by_style.loc["noisy"]
    assert (plain["rows"], plain["accuracy"], plain["cer"]) == (2, 0.5, pytest.approx(1 / 8))
    assert plain["latency_p50_ms"] == pytest.approx(20.0)
    assert (noisy["rows"], noisy["labelled"], noisy["unlabelled"]) == (2, 1, 1)
    assert noisy["accuracy"] == 1.0
    missing = by_style[by_style.index.isna()].iloc[0]  # rows without a style: own group
    assert (missing["rows"], missing["accuracy"], missing["cer"]) == (1, 0.0, 1.0)

    by_length = aggregate(scored, _metrics.LABEL_LENGTH)
    assert by_length.loc[4, "rows"] == 2
    assert by_length.loc[4, "accuracy"] == 0.5
    assert by_length.loc[5, "accuracy"] == 1.0
    assert by_length.loc[2, "cer"] == 1.0
    assert by_length[by_length.index.isna()]["unlabelled"].iloc[0] == 1


def test_errors_by_code() -> None:
    frame = table(
        [
            {"answer": None, "error_code": "ERROR_CAPTCHA_UNSOLVABLE"},
            {"answer": None, "error_code": "ERROR_CAPTCHA_UNSOLVABLE"},
            {"answer": None, "error_code": "INPUT_FILE_NOT_FOUND"},
            {"answer": None, "error_code": None},
            {"answer": "ok"},
        ]
    )
    got = errors_by_code(score(frame, "label"))
    assert got.to_dict("records") == [
        {"error_code": "ERROR_CAPTCHA_UNSOLVABLE", "rows": 2, "share": 2 / 5},
        {"error_code": "INPUT_FILE_NOT_FOUND", "rows": 1, "share": 1 / 5},
        {"error_code": "UNKNOWN", "rows": 1, "share": 1 / 5},
    ]


def test_confusions_position_by_position_and_aligned() -> None:
    answers = ["abed", "bcda", "axcde", "8bcd", "8bcd"]
    labels = ["abcd", "abcd", "abcd", "bbcd", "bbcd"]
    got = confusions(answers, labels, top=3)
    # Same length: c->e; a->b, b->c, c->d, d->a; different length: b->x (plus an insert).
    # b->8 twice comes first, then ties by characters.
    assert got.to_dict("records") == [
        {"label_char": "b", "answer_char": "8", "count": 2},
        {"label_char": "a", "answer_char": "b", "count": 1},
        {"label_char": "b", "answer_char": "c", "count": 1},
    ]
    assert len(confusions(answers, labels, top=20)) == 7


def test_agreement_between_runs() -> None:
    answers = pd.DataFrame(
        {
            "a": ["x", "y", None, "", "p"],
            "b": ["x", "z", None, "", "p"],
            "c": ["x", "y", "q", "", "p"],
        }
    )
    every, pairs = agreement(answers)
    assert every.tolist() == [True, False, False, False, True]
    assert pairs.to_dict("records") == [
        {"run_a": "a", "run_b": "b", "rows": 5, "agree": 2, "agreement": 2 / 5},
        {"run_a": "a", "run_b": "c", "rows": 5, "agree": 3, "agreement": 3 / 5},
        {"run_a": "b", "run_b": "c", "rows": 5, "agree": 2, "agreement": 2 / 5},
    ]


def test_score_keeps_input_order_and_index() -> None:
    frame = table([{"label": "ab", "answer": "ab"}, {"label": "cd", "answer": "xx"}])
    frame.index = pd.Index([10, 3])
    scored = score(frame, "label")
    assert list(scored.index) == [10, 3]
    assert scored["correct"].tolist() == [True, False]
    assert np.isnan(scored["cer"]).sum() == 0
