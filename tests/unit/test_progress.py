"""Progress displays: counters, the resumed start, row-by-row steps, tqdm text output,
the widget bar's closing line, callbacks."""

from __future__ import annotations

import io

import pytest

from capbatch._io.record import RowResult
from capbatch._run.progress import CallbackProgress, RunCounters, TqdmProgress
from capbatch._run.spend import SpendGuard
from capbatch._run.summary import RunSummary

SOLVED = RowResult(status="solved", answer="a", cost_usd=0.5)
FAILED = RowResult(status="failed", error_code="X")


def test_counters_tally_rows_spend_and_cache() -> None:
    counters = RunCounters(total=4)
    counters.add(SOLVED)
    counters.add(FAILED)
    counters.add(RowResult(status="solved", from_cache=True))
    assert (counters.done, counters.solved, counters.failed, counters.from_cache) == (3, 2, 1, 1)
    assert counters.spend == 0.5


def test_an_earlier_runs_rows_are_counted_apart_and_their_cost_is_not_this_runs() -> None:
    counters = RunCounters(total=4)
    counters.add(SOLVED, earlier=True)
    counters.add(RowResult(status="solved", from_cache=True, cost_usd=0.0), earlier=True)
    counters.add(SOLVED)
    assert (counters.earlier, counters.earlier_solved, counters.this_run) == (2, 2, 1)
    assert counters.from_cache == 0  # an earlier run's answer is not this run's cache
    assert counters.spend == 0.5
    assert len(counters.latencies) == 0  # SOLVED has no latency; earlier rows add none


def test_the_bar_spend_is_the_spend_guards_figure() -> None:
    money = SpendGuard(None, price=0.25, spent_before=1.0)
    counters = RunCounters(total=2, money=money)
    money.charge(0.25, 0.25)
    money.observe_spent(0.75)  # the provider's balance said more than the rows' costs
    counters.add(SOLVED)
    assert counters.spend == 0.75
    summary = RunSummary(provider="p", task_type="t")
    counters.fill(summary)
    assert (summary.spend_usd, summary.spend_before_usd) == (0.75, 1.0)


def test_a_resumed_bar_starts_at_the_earlier_done_count_and_moves_row_by_row() -> None:
    out = io.StringIO()
    counters = RunCounters(total=10, expected_earlier=6)
    bar = TqdmProgress(file=out)
    bar.start(counters)
    assert bar._bar.n == 6
    positions = []
    for _ in range(6):  # the earlier run's rows come back from the journal first
        counters.add(SOLVED, earlier=True)
        bar.update(counters, SOLVED)
        positions.append(bar._bar.n)
    assert positions == [6] * 6
    for _ in range(4):
        counters.add(FAILED)
        bar.update(counters, FAILED)
        positions.append(bar._bar.n)
    assert positions[6:] == [7, 8, 9, 10]
    bar.close(counters)
    text = out.getvalue()
    assert "10/10" in text and "failed=4" in text and "solved=6" in text


def test_rows_sent_again_and_pending_rows_do_not_move_the_bar_on() -> None:
    counters = RunCounters(total=10, expected_earlier=9)
    assert counters.shown == 9
    counters.retried_failed += 1  # one of the nine had failed for a passing reason
    assert counters.shown == 8
    counters.add(SOLVED)
    counters.add(RowResult(status="pending", error_code="PENDING"))
    assert counters.shown == 9 and counters.this_run == 1


def test_more_earlier_rows_than_the_journal_said_still_count() -> None:
    counters = RunCounters(total=10, expected_earlier=2)
    for _ in range(5):
        counters.add(SOLVED, earlier=True)
    counters.add(SOLVED)
    assert counters.shown == 6


def test_a_widget_bar_leaves_a_text_line_when_it_closes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tqdm.notebook

    class FakeWidgetBar(tqdm.notebook.tqdm_notebook):  # what tqdm.auto gives in a kernel
        def __init__(self) -> None:
            self.n = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.n += int(n or 0)
            return None

        def set_postfix(self, *args: object, **values: object) -> None:
            pass

        def close(self) -> None:
            pass

    bar = TqdmProgress()
    monkeypatch.setattr(bar, "_make_bar", lambda counters: FakeWidgetBar())
    counters = RunCounters(total=3)
    bar.start(counters)
    counters.add(SOLVED, earlier=True)
    counters.add(SOLVED)
    counters.add(FAILED)
    bar.close(counters)
    assert capsys.readouterr().out == (
        f"capbatch: 3/3 rows done: 2 solved, 1 failed (1 by earlier runs); spend $0.5000; "
        f"{counters.elapsed:.1f} s\n"
    )


def test_a_text_bar_prints_no_extra_line(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(file=io.StringIO())
    counters = RunCounters(total=1)
    bar.start(counters)
    counters.add(SOLVED)
    bar.close(counters)
    assert capsys.readouterr().out == ""


def test_callback_progress_reports_each_row_and_the_end() -> None:
    seen: list[object] = []
    progress = CallbackProgress(lambda counters, result: seen.append(result))
    counters = RunCounters()
    progress.start(counters)
    progress.update(counters, SOLVED)
    progress.close(counters)
    assert seen == [SOLVED, None]


def test_eta_from_the_row_rate() -> None:
    counters = RunCounters(total=100)
    assert counters.eta() is None
    counters.started -= 10  # ten seconds ago
    for _ in range(50):
        counters.add(SOLVED)
    eta = counters.eta()
    assert eta is not None and 9 < eta < 11
