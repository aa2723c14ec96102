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
"""

from __future__ import annotations

import math

from capbatch._providers.profiles import PollSchedule

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

    @property
    def first_delay(self) -> float:
        """Seconds from createTask's reply to a new task's first poll."""
        return self._delay

    def observe_first_poll(self, ready: bool) -> None:
        """A task's first poll found it ready (or not): move the first delay."""
        self.first_polls += 1
        if self.floor <= 0.0:
            return  # a provider that answers at once: nothing to learn
        exponent = -STEP * (1.0 - READY_SHARE) if ready else STEP * READY_SHARE
        delay = self._delay * math.exp(exponent)
        self._delay = min(self.ceiling, max(self.floor, delay))
