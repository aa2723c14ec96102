"""The first-poll pacer: it learns when this run's deferred tasks are ready."""

from __future__ import annotations

import random

import pytest

from capbatch._providers.profiles import PollSchedule
from capbatch._run.polling import MAX_FIRST_DELAY, READY_SHARE, PollPacer

SCHEDULE = PollSchedule(first_delay=1.0, interval=2.0, task_ttl=300.0)


def settle(
    pacer: PollPacer, solve_time: random.Random, low: float, high: float, n: int
) -> list[tuple[float, bool]]:
    """Feed ``n`` first polls of tasks ready after U(low, high) s; return each poll's
    delay and whether it found its task ready."""
    polls = []
    for _ in range(n):
        delay = pacer.first_delay
        ready = solve_time.uniform(low, high) <= delay
        pacer.observe_first_poll(ready)
        polls.append((delay, ready))
    return polls


@pytest.mark.parametrize(("low", "high"), [(1.0, 3.0), (5.0, 25.0)])
def test_the_first_poll_moves_to_when_most_tasks_are_ready(low: float, high: float) -> None:
    pacer = PollPacer(SCHEDULE)
    polls = settle(pacer, random.Random(4), low, high, 3000)
    target = low + READY_SHARE * (high - low)  # the READY_SHARE quantile of U(low, high)
    late = [delay for delay, _ in polls[-1000:]]
    assert sum(late) / len(late) == pytest.approx(target, rel=0.1)
    assert pacer.first_polls == len(polls)
    ready = sum(found for _, found in polls) / len(polls)
    assert ready > 0.6  # the learning phase included


def test_it_follows_a_drift_back_down_but_never_below_the_providers_advice() -> None:
    pacer = PollPacer(SCHEDULE)
    rng = random.Random(5)
    settle(pacer, rng, 8.0, 12.0, 2000)
    assert pacer.first_delay > 8.0
    settle(pacer, rng, 0.1, 0.4, 2000)  # tasks got fast: everything ready at once
    assert pacer.first_delay == SCHEDULE.first_delay


def test_it_never_waits_past_the_ceiling() -> None:
    pacer = PollPacer(SCHEDULE)
    for _ in range(5000):
        pacer.observe_first_poll(False)
    assert pacer.first_delay == min(MAX_FIRST_DELAY, SCHEDULE.task_ttl / 4)
    short_lived = PollPacer(PollSchedule(first_delay=1.0, interval=1.0, task_ttl=20.0))
    for _ in range(5000):
        short_lived.observe_first_poll(False)
    assert short_lived.first_delay == 5.0


def test_a_burst_of_outcomes_moves_the_delay_gently() -> None:
    # Tasks created together report together: 30 "not ready" in a row must not
    # send the next tasks' first poll far past where the tasks are ready.
    pacer = PollPacer(SCHEDULE)
    for _ in range(30):
        pacer.observe_first_poll(False)
    assert 1.5 < pacer.first_delay < 2.5


def test_a_provider_that_answers_at_once_keeps_its_schedule() -> None:
    pacer = PollPacer(PollSchedule(first_delay=0.0, interval=0.1))
    for ready in (False, True, False):
        pacer.observe_first_poll(ready)
    assert pacer.first_delay == 0.0


def test_the_summary_says_the_delay_used_and_the_one_learned() -> None:
    from capbatch._run.summary import RunSummary

    pacer = PollPacer(SCHEDULE)
    # Tasks polled at about 1 s and 3 s (a second, later wave), none ready at first:
    # the learned delay climbs past what any task waited for.
    for age in [1.0] * 30 + [3.0] * 11:
        pacer.observe_first_poll(False, age=age)
    summary = RunSummary(provider="capsolver", task_type="ImageToTextTask")
    pacer.fill(summary)
    assert summary.first_poll_median_s == 1.0
    assert summary.first_poll_s == pytest.approx(pacer.first_delay, abs=1e-3)
    assert summary.first_poll_s > 2.5  # learned, but used by no task yet
    summary.requests, summary.creates, summary.polls = 82, 41, 41
    line = next(x for x in summary.format().splitlines() if x.startswith("82 requests"))
    assert (
        f"first poll a median 1.0 s after createTask, {summary.first_poll_s:.1f} s learned "
        "by the end" in line
    )


def test_no_deferred_task_leaves_no_polling_figures() -> None:
    from capbatch._run.summary import RunSummary

    summary = RunSummary(provider="capsolver", task_type="ImageToTextTask")
    PollPacer(SCHEDULE).fill(summary)
    assert summary.first_poll_s is None and summary.first_poll_median_s is None
