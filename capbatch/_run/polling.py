"""When to poll a deferred task: the provider's schedule, with the first poll learned.

A poll that finds its task not ready costs a rate slot a new task could have used, and
one that comes long after the answer was ready adds that wait to the row's latency.
Tasks of one run tend to take alike, so the first poll moves towards the age by which
``READY_SHARE`` of this run's deferred tasks have been ready: each first poll that finds
its task ready brings it a little earlier, each that does not moves it later (a
stochastic quantile tracker, Robbins-Monro). It needs no model of the solve time and
follows it when it drifts. It never goes earlier than the provider's advice, nor later
than ``MAX_FIRST_DELAY`` or the schedule's ``max_gap`` (a quarter of what the provider
keeps: for Anti-Captcha, which forgets a finished task after 60 s, 15 s); later polls
keep the provider's interval.

The summary says what was used: the median age of tasks at their first poll (what
the schedule and the rate limiter together gave), and the delay learned by the end,
which only tasks created after it was learned waited for.
"""

from __future__ import annotations

import math
import statistics
from array import array

from capbatch._providers.profiles import PollSchedule
from capbatch._run.summary import RunSummary

#: Share of deferred tasks the first poll should find ready. The rest cost one more poll
#: each; a higher share would add latency to most rows to save polls on a few.
READY_SHARE = 0.8
#: Log-step per observation: small, because a burst of tasks created together reports
#: together (30 outcomes at once move the delay by at most e**(30 * STEP * 0.8) = 2x).
STEP = 0.03
MAX_FIRST_DELAY = 60.0


class PollPacer:
    """The first-poll delay of one run, learned from its first polls."""

    def __init__(self, schedule: PollSchedule) -> None:
        self.schedule = schedule
        self.floor = schedule.first_delay
        # Never so late that a task finished at once is forgotten first (``max_gap``).
        self.ceiling = max(self.floor, min(MAX_FIRST_DELAY, schedule.max_gap))
        self._delay = self.floor
        self.first_polls = 0
        #: Each first poll's task age in seconds (packed doubles, 8 bytes a task).
        self.first_poll_ages: array[float] = array("d")

    @property
    def first_delay(self) -> float:
        """Seconds from createTask's reply to a new task's first poll."""
        return self._delay

    def observe_first_poll(self, ready: bool, *, age: float | None = None) -> None:
        """A task's first poll, sent ``age`` seconds after createTask's reply, found it
        ready (or not): move the first delay."""
        self.first_polls += 1
        if age is not None:
            self.first_poll_ages.append(max(0.0, age))
        if self.floor <= 0.0:
            return  # a provider that answers at once: nothing to learn
        exponent = -STEP * (1.0 - READY_SHARE) if ready else STEP * READY_SHARE
        delay = self._delay * math.exp(exponent)
        self._delay = min(self.ceiling, max(self.floor, delay))

    def fill(self, summary: RunSummary) -> None:
        """The first-poll delay used (the median age at a first poll) and the one
        learned by the end, into the summary; nothing when no task was polled."""
        if self.first_polls:
            summary.first_poll_s = round(self.first_delay, 3)
        if self.first_poll_ages:
            summary.first_poll_median_s = round(statistics.median(self.first_poll_ages), 3)
