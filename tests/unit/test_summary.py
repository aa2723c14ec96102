"""The end-of-run summary's lines (issue 14, items 5, 9, 12): what earlier runs did and
what this one did, one spend figure with the provider's balance change labelled as
such, accuracy against the label column, every count grammatical and true."""

from __future__ import annotations

import pytest

from capbatch._exceptions import ConfigError
from capbatch._io.record import RowResult
from capbatch._run.summary import RunSummary, counted
from capbatch._run.tally import LabelRule, Tally, label_rule


def summary(**values: object) -> RunSummary:
    made = RunSummary(provider="capsolver", task_type="ImageToTextTask", duration_s=2.0)
    for name, value in values.items():
        setattr(made, name, value)
    return made


def lines(made: RunSummary) -> list[str]:
    return made.format().splitlines()


def test_counted_is_singular_for_one() -> None:
    assert [counted(n, "request") for n in (0, 1, 2)] == ["0 requests", "1 request", "2 requests"]


def test_a_fresh_run_has_one_spend_figure_and_the_balance_change_labelled() -> None:
    made = summary(
        rows=240, solved=240, spend_usd=0.096, balance_before=100.0, balance_after=99.904,
        requests=240, creates=240, achieved_rate=120.0,
    )  # fmt: skip
    text = lines(made)
    assert text[0] == "rows 240: 240 solved, 0 failed"
    assert text[1] == (
        "spend $0.0960 (provider balance change during this run: -$0.0960, $100.0000 -> $99.9040)"
    )
    assert "earlier runs" not in made.format() and "provider says" not in made.format()
    assert text[2] == "240 requests (240 createTask, 0 polls) in 2.0 s: 120.0 req/s"


def test_a_resumed_run_says_what_earlier_runs_did_and_what_this_one_did() -> None:
    made = summary(
        rows=240, solved=238, failed=2, resumed=28, earlier_solved=27, spend_usd=0.0848,
        spend_before_usd=0.0112, balance_before=99.99, balance_after=99.9064,
        requests=230, creates=212, polls=18, achieved_rate=11.5,
    )  # fmt: skip
    text = lines(made)
    assert text[1] == "28 rows done by earlier runs (27 solved, cost $0.0112); 212 by this run"
    spend = next(line for line in text if line.startswith("spend"))
    assert spend.startswith("spend $0.0848 this run (provider balance change during this run:")
    assert "-$0.0836" in spend
    assert made.format().count("$0.0848") == 1


def test_one_row_fixed_after_an_earlier_run_reads_right() -> None:
    made = summary(
        rows=9, solved=9, resumed=8, earlier_solved=8, spend_usd=0.0004,
        spend_before_usd=0.0032, requests=1, creates=1, achieved_rate=0.5,
    )  # fmt: skip
    text = lines(made)
    assert text[1] == "8 rows done by earlier runs (8 solved, cost $0.0032); 1 by this run"
    assert "1 request (1 createTask, 0 polls) in 2.0 s: 0.5 req/s" in text
    one = summary(rows=1, solved=1, resumed=1, earlier_solved=1)
    assert lines(one)[1] == "1 row done by earlier runs (1 solved, cost $0.0000); none by this run"


def test_a_run_that_sent_nothing_has_no_rate_line() -> None:
    made = summary(rows=240, solved=240, resumed=240, earlier_solved=240)
    text = made.format()
    assert "no requests sent, in 2.0 s" in text.splitlines()
    assert "req/s" not in text and "0 requests" not in text


def test_the_cap_is_over_every_run_and_said_so() -> None:
    made = summary(rows=3, resumed=1, spend_usd=0.2, spend_before_usd=0.1, spend_cap_usd=0.5)
    spend = next(line for line in lines(made) if line.startswith("spend"))
    assert spend == "spend $0.2000 this run; $0.3000 with earlier runs, of the $0.5000 cap"
    fresh = summary(rows=3, spend_usd=0.2, spend_cap_usd=0.5)
    assert "spend $0.2000 of the $0.5000 cap" in lines(fresh)


def test_rare_lines_are_grammatical() -> None:
    made = summary(outages=1, bad_costs=1, spend_cap_reached=True, rows_not_sent=1)
    text = made.format()
    assert "unreachable 1 time:" in text
    assert "1 cost reported by the provider was not a usable amount" in text
    assert "spend cap reached: 1 row not sent" in text


def test_accuracy_line_by_the_report_rule() -> None:
    tally = Tally(total=5, labels=LabelRule("label"))
    tally.add(RowResult(status="solved", answer="AbC"), label=" abc ")
    tally.add(RowResult(status="solved", answer="xyz"), label="abc")
    tally.add(RowResult(status="failed", error_code="X"), label="abc")  # ran: wrong
    tally.add(RowResult(status="solved", answer="q"), label="")  # unlabelled
    tally.add(RowResult(status="pending", error_code="PENDING"), label="abc")  # did not run
    made = summary()
    tally.fill(made)
    assert (made.labelled, made.correct, made.label_column) == (3, 1, "label")
    assert made.accuracy == pytest.approx(1 / 3)
    assert "accuracy 33.3% (1 of 3 labelled rows right; column 'label', case-insensitive)" in (
        made.format()
    )


class Options:
    def __init__(
        self,
        label_column: str | None,
        task_params: dict[str, object],
        task_type: str = "ImageToTextTask",
    ) -> None:
        self.label_column, self.task_params = label_column, task_params
        self.task_type = task_type


def test_the_label_column_is_the_named_one_or_a_label_column() -> None:
    assert label_rule(Options(None, {}), ["image", "label"]) == LabelRule("label", False)
    assert label_rule(Options(None, {"case": True}), ["label"]) == LabelRule("label", True)
    assert label_rule(Options("truth", {}), ["truth", "label"]) == LabelRule("truth", False)
    assert label_rule(Options(None, {}), ["image"]) is None
    # Grid tiles or slider distances are not text: the report judges them by kind.
    assert label_rule(Options(None, {}, "ReCaptchaV2Classification"), ["label"]) is None
    with pytest.raises(ConfigError, match="'truth' is not in the input"):
        label_rule(Options("truth", {}), ["image"])


def test_no_label_column_no_accuracy_line() -> None:
    assert "accuracy" not in summary(rows=1, solved=1).format()
