"""Progress displays: counters, the resumed start, tqdm text output, callbacks."""

from __future__ import annotations

import io

from capbatch._io.record import RowResult
from capbatch._run.progress import CallbackProgress, RunCounters, TqdmProgress

SOLVED = RowResult(status="solved", answer="a", cost_usd=0.5)
FAILED = RowResult(status="failed", error_code="X")


def test_counters_tally_rows_spend_and_cache() -> None:
    counters = RunCounters(total=4)
    counters.add(SOLVED)
    counters.add(FAILED)
    counters.add(RowResult(status="solved", from_cache=True))
    assert (counters.done, counters.solved, counters.failed, counters.from_cache) == (3, 2, 1, 1)
    assert counters.spend == 0.5


def test_a_resumed_bar_starts_at_the_earlier_done_count_and_does_not_double_count() -> None:
    out = io.StringIO()
    counters = RunCounters(total=10, resumed=6)
    bar = TqdmProgress(file=out)
    bar.start(counters)
    assert bar._bar.n == 6
    for _ in range(6):  # the earlier run's rows come back from the journal first
        counters.add(SOLVED)
        bar.update(counters, SOLVED)
    assert bar._bar.n == 6
    for _ in range(4):
        counters.add(FAILED)
        bar.update(counters, FAILED)
    assert bar._bar.n == 10
    bar.close(counters)
    text = out.getvalue()
    assert "10/10" in text and "failed=4" in text and "solved=6" in text


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
