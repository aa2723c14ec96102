"""Solving one task: submit, poll, retry, record. The per-row state machine.

``TaskSolver.solve(job)`` drives one content key from its first ``createTask`` to a
final ``RowResult``, writing the journal before each paid step. Every decision about
an error comes from ``_providers.errors.classify``; every request leaves through the
run's one ``RequestGate`` (stop, outage, in-flight cap, ``RateLimiter``, pause); money
goes through the ``SpendGuard``. The back-off is ``retry.RetryPolicy``'s; the row
results are built by ``results``.

Errors that doom the run raise ``RunStopped`` out of every job at once.
"""

from __future__ import annotations

import random
import time
from typing import NoReturn

from capbatch._exceptions import APIError, CapbatchError, RequestTimeout, TransportError
from capbatch._io.record import RowResult
from capbatch._providers.client import TaskService
from capbatch._providers.errors import Action, classify
from capbatch._providers.profiles import ProviderProfile
from capbatch._providers.protocol import TaskReply
from capbatch._run.control import RunControl
from capbatch._run.gate import RequestGate, RunStopped
from capbatch._run.job import Job, JobState
from capbatch._run.journal import Journal
from capbatch._run.limits import POLL, Clock, Limits, RateLimiter
from capbatch._run.outage import OutageGate, is_outage_error
from capbatch._run.polling import PollPacer
from capbatch._run.results import (
    MAX_ATTEMPTS,
    POLL_LIMIT,
    failed_result,
    journal_result,
    row_result,
)
from capbatch._run.retry import RetryPolicy
from capbatch._run.spend import SpendGuard
from capbatch._run.spend_watch import MAX_TASK_PRICE, SpendWatch
from capbatch._run.tally import Tally


class SpendCapReached(Exception):
    """The spend cap leaves no room for this row's next paid request."""


class TaskSolver:
    """Solves jobs against one ``TaskService`` within the run's limits."""

    def __init__(
        self,
        service: TaskService,
        profile: ProviderProfile,
        journal: Journal,
        limits: Limits,
        limiter: RateLimiter,
        spend: SpendGuard,
        *,
        price: float,
        clock: Clock,
        policy: RetryPolicy | None = None,
        seed: int | None = None,
        control: RunControl | None = None,
        watch: SpendWatch | None = None,
        outage: OutageGate | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.service = service
        self.profile = profile
        self.journal = journal
        self.limits = limits
        self.spend = spend
        spend.price = price
        self.clock = clock
        self.policy = policy or RetryPolicy()
        #: The run's one tally: requests are counted here as they leave.
        self.tally = tally if tally is not None else Tally()
        self.pacer = PollPacer(profile.poll)
        self._rng = random.Random(seed)
        self.watch = watch or SpendWatch(
            spend, balance_before=None, check_balance=None, cost_in_reply=False, clock=clock
        )
        #: Provider-reported costs that were not a usable amount (NaN, negative, absurd).
        self.bad_costs = 0
        self.outage = outage or OutageGate(clock)
        self.gate = RequestGate(
            max_in_flight=limits.max_in_flight,
            limiter=limiter,
            clock=clock,
            tally=self.tally,
            outage=self.outage,
            control=control,
        )

    # --- what the request gate holds for the whole run --------------------------------

    @property
    def limiter(self) -> RateLimiter:
        """The run's one rate limiter, which the gate holds: setting it sets the gate's."""
        return self.gate.limiter

    @limiter.setter
    def limiter(self, limiter: RateLimiter) -> None:
        self.gate.limiter = limiter

    @property
    def stopped(self) -> CapbatchError | None:
        """The run-fatal error once the run must stop."""
        return self.gate.stopped

    @property
    def sending(self) -> int:
        """Requests sent whose reply has not come back yet."""
        return self.gate.sending

    async def wait_idle(self) -> None:
        """Until no request is out (after ``stop``, no new one leaves)."""
        await self.gate.wait_idle()

    def stop(self, error: CapbatchError) -> None:
        self.gate.stop(error)

    # --- one job ----------------------------------------------------------------------

    async def solve(self, job: Job) -> RowResult:
        state = JobState()
        self._adopt_resumed(job, state)
        try:
            while True:
                if state.task_id is None:
                    reply = await self._create(job, state)
                else:
                    reply = await self._poll(job, state)
                if reply is None:
                    continue
                if reply.ready:
                    if state.probe:
                        await self.watch.probe_charged(reply.cost)
                        return self._finish_solved(job, state, reply)
                    result = self._finish_solved(job, state, reply)
                    await self.watch.charged(reply.cost)
                    return result
        finally:
            # However the job ends (cancelled in a shutdown too), a price probe it holds
            # must let the next createTask go.
            self._settle_probe(state)

    def _adopt_resumed(self, job: Job, state: JobState) -> None:
        """Pick up an earlier run's unfinished task: poll it while the provider keeps it."""
        entry = job.resumed
        if entry is None:
            return
        state.calls = entry.result.attempts
        state.submitted_at = entry.result.submitted_at
        state.cost = entry.result.cost_usd
        age = time.time() - (entry.created_at or 0.0)
        # Younger than the provider surely keeps it (for Anti-Captcha 60 s: a finished
        # task is gone a minute later, and it may have finished at once); older is lost.
        usable = (
            entry.state == "created"
            and entry.result.task_id is not None
            and age < self.profile.poll.retention - self.policy.ttl_margin
        )
        if usable:
            state.task_id = entry.result.task_id
            state.created_wall = entry.created_at
            state.created_mono = self.clock.now() - age
            # Its last poll was the earlier run's, maybe a moment ago: keep the floor.
            state.next_poll = self.clock.now() + self.profile.poll.min_interval
            # Re-reserve its price: it is committed money until its outcome is known.
            state.reserved = self.spend.adopt()
            return
        if entry.state == "lost":
            return  # its unknown outcome was counted when the reply was lost
        # Sent before the crash with no usable task id: it may have been paid for, and
        # sending it again may pay twice. Count it, in the journal too, so the summary
        # can say so even if this run is killed in its turn.
        self.tally.lost_sends += 1
        self.spend.adopt_lost()
        self.journal.record_uncertain(job.key)

    async def _create(self, job: Job, state: JobState) -> TaskReply | None:
        if state.budget >= self.limits.max_attempts:
            raise _RowFailed(self._give_up(state))
        state.probe = await self.watch.gate()
        reserved = self.spend.reserve()
        if reserved is None:
            self._settle_probe(state)
            raise SpendCapReached()
        state.reserved = reserved
        sent = False

        def record_intent() -> None:
            # Written after the wait for a send slot, just before the request leaves;
            # "sent" only once the journal holds the intent.
            nonlocal sent
            self.journal.record_intent(
                job.key,
                owner=job.row_key,
                provider=self.profile.name,
                submitted_at=state.submitted_at or time.time(),
            )
            sent = True
            state.calls += 1
            self.tally.creates += 1

        state.budget += 1
        try:
            reply = await self.gate.request(
                state, lambda: self.service.create_task(job.task), before_send=record_intent
            )
        except RunStopped:
            self._release_task_money(state)
            raise
        except CapbatchError as exc:
            self._settle_failed_create(job, state, exc)
            await self._handle(job, state, exc, creating=True)
            return None
        except BaseException:
            if not sent:
                self._release_task_money(state)
                raise
            # Cancelled while the request was out: its outcome is unknown.
            self._settle_failed_create(job, state, RequestTimeout("cancelled in flight"))
            raise
        state.failures = 0
        self.limiter.record_success()
        if reply.ready:
            return reply
        assert reply.task_id is not None  # parse_create_task guarantees it when deferred
        state.task_id = reply.task_id
        state.created_wall = time.time()
        state.created_mono = self.clock.now()
        state.next_poll = state.created_mono + self.pacer.first_delay
        state.paced = True
        self.journal.record_created(job.key, reply.task_id, created_at=state.created_wall)
        return None

    def _settle_failed_create(self, job: Job, state: JobState, exc: CapbatchError) -> None:
        """Money and bookkeeping for a createTask that raised."""
        if isinstance(exc, TransportError) and exc.maybe_sent:
            self._count_uncertain(job, state)
        else:
            self._release_task_money(state)

    def _count_uncertain(self, job: Job, state: JobState) -> None:
        """Maybe charged, with no answer: a lost reply, or a task the provider forgot (it
        may have finished, and been charged, first). Counted possibly spent, journal too."""
        self.spend.mark_uncertain(state.reserved)
        state.reserved = 0.0
        self._settle_probe(state)
        self.tally.lost_sends += 1
        self.journal.record_uncertain(job.key)

    def _poll_due(self, state: JobState) -> float:
        """When the next poll may go: as scheduled, never inside the provider's floor."""
        due = state.next_poll if state.next_poll is not None else self.clock.now()
        if state.last_poll is not None:
            due = max(due, state.last_poll + self.profile.poll.min_interval)
        return due

    async def _poll(self, job: Job, state: JobState) -> TaskReply | None:
        assert state.task_id is not None and state.created_mono is not None
        poll = self.profile.poll
        wait = self._poll_due(state) - self.clock.now()
        if wait > 0:
            await self.clock.sleep(wait)
        age = self.clock.now() - state.created_mono
        if state.polls >= poll.max_polls or age >= poll.task_ttl:
            # The provider forgets the task now: a new one is the only way to an answer.
            self._count_uncertain(job, state)
            state.last_error = APIError(
                f"no answer after {state.polls} polls in {age:.0f} s",
                error_code=POLL_LIMIT,
                task_id=state.task_id,
            )
            state.forget_task()
            return None
        state.polls += 1
        self.tally.polls += 1
        task_id = state.task_id
        try:
            reply = await self.gate.request(
                state, lambda: self.service.get_task_result(task_id), priority=POLL
            )
        except CapbatchError as exc:
            state.paced = False  # an error says nothing about the solve time
            now = self.clock.now()
            state.next_poll, state.last_poll = now + poll.interval, now
            await self._handle(job, state, exc, creating=False)
            return None
        state.last_poll = self.clock.now()
        state.failures = 0
        self.limiter.record_success()
        if state.paced:
            state.paced = False
            self.pacer.observe_first_poll(reply.ready, age=age)
        if not reply.ready:
            state.next_poll = self.clock.now() + poll.interval
        return reply

    # --- errors -----------------------------------------------------------------------

    async def _handle(
        self, job: Job, state: JobState, exc: CapbatchError, *, creating: bool
    ) -> None:
        """Act on an error by the classification table; return to retry, or raise.

        A wait on the provider's side (``SLOW_DOWN``, ``PAUSE``, a ``RETRY`` during an
        outage) holds every request back through the gate, and hands a createTask's
        attempt back: nothing was created, and it is not this row's fault."""
        action = classify(exc)
        state.last_error = exc
        retry_after = exc.retry_after if isinstance(exc, APIError) else None
        if action is Action.FATAL:
            self.stop(exc)
            raise RunStopped(exc)
        if action is Action.RECORD:
            self._fail_row(state, exc)
        if action is Action.SLOW_DOWN:
            self.gate.slow_down(exc, retry_after)
            state.rate_limited += 1
            if creating:
                state.budget -= 1  # nothing was created: it does not use up an attempt
            if state.rate_limited > self.policy.max_rate_limited:
                self._fail_row(state, exc)  # rate-limit answers are bounded per row too
        elif action is Action.PAUSE:
            self.gate.pause(exc, retry_after)
            if creating:
                state.budget -= 1
        elif action is Action.RETRY and self.outage.down and is_outage_error(exc):
            # The provider is down, not this row: the outage gate paces the retries
            # and bounds them in time, so the row's attempts are not used up.
            if creating:
                state.budget -= 1
        elif action is Action.RETRY:
            await self._retry(state, exc, retry_after, creating=creating)
        elif action is Action.RETRY_BOUNDED:
            await self._retry_unsolvable(job, state, exc, retry_after)
        elif action is Action.RECREATE:
            self._count_uncertain(job, state)
            state.forget_task()
        else:  # pragma: no cover - table is total
            raise _RowFailed(self._failed(state, exc))

    async def _retry(
        self, state: JobState, exc: CapbatchError, retry_after: float | None, *, creating: bool
    ) -> None:
        """A passing failure: back off, then try the same step again. A poll gives up
        after ``max_attempts`` failures in a row (``_create`` counts createTask's)."""
        state.failures += 1
        if not creating and state.failures >= self.limits.max_attempts:
            self._fail_row(state, exc)
        delay = self.policy.backoff(state.failures, retry_after, self._rng)
        # A task waiting for its poll may finish and be forgotten (Anti-Captcha: 60 s).
        await self.clock.sleep(delay if creating else min(delay, self.profile.poll.max_gap))

    async def _retry_unsolvable(
        self, job: Job, state: JobState, exc: CapbatchError, retry_after: float | None
    ) -> None:
        """Unsolvable: charged by some providers; a new task may succeed."""
        if self.profile.unsolvable_charged:
            self._charge(job, state, self.spend.price)
            await self.watch.charged()
            self._settle_probe(state)
        else:
            self._release_task_money(state)
        state.forget_task()
        if state.budget >= self.limits.max_attempts:
            raise _RowFailed(self._failed(state, exc))
        await self.clock.sleep(self.policy.backoff(1, retry_after, self._rng))

    def _fail_row(self, state: JobState, exc: CapbatchError) -> NoReturn:
        """End the row failed with ``exc``; its reserved money goes back."""
        self._release_task_money(state)
        raise _RowFailed(self._failed(state, exc))

    def _release_task_money(self, state: JobState) -> None:
        self.spend.release(state.reserved)
        state.reserved = 0.0
        self._settle_probe(state)

    def _settle_probe(self, state: JobState) -> None:
        if state.probe:
            state.probe = False
            self.watch.release_probe()

    def _charge(self, job: Job, state: JobState, amount: float) -> None:
        """Count a charged task; a probe is settled by the caller once the watch has
        learned the price from it (see ``SpendWatch``)."""
        self.spend.charge(state.reserved, amount)
        state.reserved = 0.0
        state.cost += amount
        self.journal.record_spent(job.key, amount)

    def _give_up(self, state: JobState) -> RowResult:
        error = state.last_error or APIError("no attempts left", error_code=MAX_ATTEMPTS)
        return self._failed(state, error)

    # --- results ----------------------------------------------------------------------

    def _finish_solved(self, job: Job, state: JobState, reply: TaskReply) -> RowResult:
        cost = reply.cost
        if cost is not None and not 0 <= cost <= MAX_TASK_PRICE:
            cost = None  # nonsense is recorded as unknown, never summed
        if cost is None:
            if reply.cost is not None or getattr(reply, "cost_rejected", False):
                self.bad_costs += 1
            cost = self.spend.price
        self.spend.charge(state.reserved, cost)
        state.reserved = 0.0
        state.cost += cost
        state.task_id = reply.task_id or state.task_id
        result = row_result(
            state,
            self.profile.name,
            "solved",
            answer=reply.answer,
            solution=reply.solution,
            task_id=state.task_id,
        )
        journal_result(self.journal, job, result, cost=cost, provider=self.profile.name)
        return result

    def _failed(self, state: JobState, error: CapbatchError) -> RowResult:
        return failed_result(state, self.profile.name, error)

    def record_failure(self, job: Job, result: RowResult) -> None:
        """Journal a final failure so a re-run does not pay for it again. Charged
        attempts were journaled by ``record_spent`` as they happened."""
        journal_result(self.journal, job, result, cost=0.0, provider=self.profile.name)


class _RowFailed(Exception):
    """Internal: the job ended with a failed row result."""

    def __init__(self, result: RowResult) -> None:
        super().__init__(result.error_code)
        self.result = result


async def solve_job(solver: TaskSolver, job: Job) -> RowResult:
    """Run one job to a final row result; failures are journaled as final too."""
    try:
        return await solver.solve(job)
    except _RowFailed as failed:
        solver.record_failure(job, failed.result)
        return failed.result
