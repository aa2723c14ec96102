"""Solving one task: submit, poll, retry, record. The per-row state machine.

``TaskSolver.solve(job)`` drives one content key from its first ``createTask`` to a
final ``RowResult``, writing the journal before each paid step. Every decision about
an error comes from ``_protocol.classify``; every request waits for the run's one
``RateLimiter`` and in-flight cap; money goes through the ``SpendGuard``.

Errors that doom the run raise ``RunStopped`` out of every job at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from capbatch._exceptions import APIError, CapbatchError, RequestTimeout, RunFailed, TransportError
from capbatch._io.record import RowResult
from capbatch._providers.client import TaskService
from capbatch._providers.errors import Action, action_for_code, classify
from capbatch._providers.profiles import ProviderProfile
from capbatch._providers.protocol import TaskReply
from capbatch._run.control import RunControl, RunStoppedByUser
from capbatch._run.journal import Journal, JournalEntry
from capbatch._run.limits import CREATE, POLL, Clock, Limits, PrioritySemaphore, RateLimiter
from capbatch._run.outage import OutageGate, ProviderOutage, is_outage_error
from capbatch._run.polling import PollPacer
from capbatch._run.spend import SpendGuard
from capbatch._run.spend_watch import MAX_TASK_PRICE, SpendWatch
from capbatch._run.tally import SPEND_CAP_REACHED, Tally

T = TypeVar("T")

#: Error codes of capbatch's own for rows the run could not finish.
PENDING = "PENDING"
MAX_ATTEMPTS = "MAX_ATTEMPTS_EXCEEDED"
POLL_LIMIT = "POLL_LIMIT_REACHED"

def failed_for_good(error_code: str | None) -> bool:
    """True when a row that failed with ``error_code`` would fail the same way again
    (unsolvable after its retries, a refused image or task); False for passing causes
    (network, HTTP 5xx, rate limits, an unavailable service, an outage, attempts or
    polls used up). Unknown codes are kept: re-sending blindly could pay again for
    nothing."""
    if error_code is None:
        return True
    if error_code in (MAX_ATTEMPTS, POLL_LIMIT):
        return False
    action = action_for_code(error_code)
    return action is None or action in (Action.RECORD, Action.RETRY_BOUNDED)




class RunStopped(Exception):
    """Raised inside jobs when the run must stop; carries the run-fatal error."""

    def __init__(self, error: CapbatchError) -> None:
        super().__init__(str(error))
        self.error = error


class SpendCapReached(Exception):
    """The spend cap leaves no room for this row's next paid request."""


@dataclass(frozen=True)
class Job:
    """One content key to solve, on behalf of the row ``row_key``."""

    key: str
    row_key: str
    task: Mapping[str, Any]
    #: An earlier run's unfinished journal entry for this key, if any.
    resumed: JournalEntry | None = None


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: Rate-limit answers do not use up ``max_attempts`` but are bounded too.
    max_rate_limited: int = 50
    #: Keep this much of the task's lifetime spare when deciding to poll a resumed id.
    ttl_margin: float = 10.0

    def backoff(self, failures: int, retry_after: float | None, rng: random.Random) -> float:
        """Exponential backoff with equal jitter: a delay drawn uniformly from the upper
        half of the exponential ceiling (never less than half of it, unlike full
        jitter's zero to the ceiling); never shorter than ``Retry-After``."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** max(0, failures - 1)))
        delay = rng.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after or 0.0)


@dataclass
class _JobState:
    """Everything one job knows while it runs: its attempts, its task, its money."""

    calls: int = 0  # createTask calls (the ``attempts`` column)
    budget: int = 0  # attempts counted against --max-attempts
    failures: int = 0  # consecutive transient failures, for backoff
    rate_limited: int = 0
    polls: int = 0
    queue_s: float = 0.0
    cost: float = 0.0
    task_id: str | None = None
    created_wall: float | None = None
    created_mono: float | None = None
    submitted_at: float | None = None
    last_error: CapbatchError | None = None
    reserved: float = 0.0
    #: This job's createTask went as the spend cap's price probe (see ``SpendWatch``).
    probe: bool = False
    #: When the task may be polled next (run clock), once it has a task id.
    next_poll: float | None = None
    #: The next poll is the task's first: its outcome teaches the ``PollPacer``.
    paced: bool = False


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
        self.limiter = limiter
        self.spend = spend
        spend.price = price
        self.clock = clock
        self.policy = policy or RetryPolicy()
        #: The run's one tally: requests are counted here as they leave.
        self.tally = tally if tally is not None else Tally()
        self._in_flight = PrioritySemaphore(limits.max_in_flight)
        self.pacer = PollPacer(profile.poll)
        self._rng = random.Random(seed)
        self.stopped: CapbatchError | None = None
        self.control = control
        self._sending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.watch = watch or SpendWatch(
            spend, balance_before=None, check_balance=None, cost_in_reply=False, clock=clock
        )
        #: Provider-reported costs that were not a usable amount (NaN, negative, absurd).
        self.bad_costs = 0
        self.outage = outage or OutageGate(clock)

    # --- the request gate -------------------------------------------------------------

    async def _request(
        self,
        state: _JobState,
        call: Callable[[], Awaitable[T]],
        before_send: Callable[[], None] | None = None,
        *,
        priority: int = CREATE,
    ) -> T:
        """One request: in-flight slot, then rate slot, then ``before_send`` (the journal
        write that must precede it), then send. Adds the wait to the row's queue time.
        Polls (``POLL``) wait ahead of new tasks at both gates."""
        if self.stopped is not None:
            raise RunStopped(self.stopped)
        started = self.clock.now()
        try:
            probe = await self.outage.admit()
        except ProviderOutage as outage:
            self.stop(outage)
            raise RunStopped(outage) from None
        try:
            return await self._send(state, call, before_send, priority, started, probe)
        except CapbatchError as exc:
            if is_outage_error(exc):
                self.outage.failed(exc, probe)
            else:
                self.outage.succeeded(probe)  # it answered: it is up
            raise
        except BaseException:
            self.outage.abandoned(probe)
            raise

    async def _send(
        self,
        state: _JobState,
        call: Callable[[], Awaitable[T]],
        before_send: Callable[[], None] | None,
        priority: int,
        started: float,
        probe: bool,
    ) -> T:
        await self._in_flight.acquire(priority)
        try:
            while True:
                await self.limiter.acquire(priority)
                if self.control is None:
                    break
                # Checked after the slot waits, right before sending: a pause pressed
                # while this request queued must still hold it back. A request held by a
                # pause queues for a fresh slot afterwards, or on Resume every held
                # request would leave at once, above the rate.
                held = self.control.paused
                try:
                    await self.control.checkpoint()
                except RunStoppedByUser as stop:
                    self.stop(stop)
                    raise RunStopped(stop) from None
                if not held:
                    break
            state.queue_s += self.clock.now() - started
            if self.stopped is not None:
                raise RunStopped(self.stopped)
            if before_send is not None:
                try:
                    before_send()
                except Exception as exc:
                    # The journal could not record the step it must record before the
                    # send (a full disk, an I/O error): sending now could pay for an
                    # answer no later run would find, so the whole run stops here.
                    error = exc if isinstance(exc, CapbatchError) else RunFailed.of(exc)
                    self.stop(error)
                    raise RunStopped(error) from exc
            if state.submitted_at is None:
                state.submitted_at = time.time()  # latency runs from the first send
            self.tally.requests += 1
            self._sending += 1
            self._idle.clear()
            try:
                reply = await call()
                self.outage.succeeded(probe)
                return reply
            finally:
                self._sending -= 1
                if self._sending == 0:
                    self._idle.set()
        finally:
            self._in_flight.release()

    @property
    def sending(self) -> int:
        """Requests sent whose reply has not come back yet."""
        return self._sending

    async def wait_idle(self) -> None:
        """Until no request is out (after ``stop``, no new one leaves)."""
        await self._idle.wait()

    def stop(self, error: CapbatchError) -> None:
        if self.stopped is None:
            self.stopped = error

    # --- one job ----------------------------------------------------------------------

    async def solve(self, job: Job) -> RowResult:
        state = _JobState()
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

    def _adopt_resumed(self, job: Job, state: _JobState) -> None:
        """Pick up an earlier run's unfinished task: poll it while the provider keeps it."""
        entry = job.resumed
        if entry is None:
            return
        state.calls = entry.attempts
        state.submitted_at = entry.submitted_at
        state.cost = entry.cost or 0.0
        age = time.time() - (entry.created_at or 0.0)
        usable = (
            entry.state == "created"
            and entry.task_id is not None
            and age < self.profile.poll.task_ttl - self.policy.ttl_margin
        )
        if usable:
            state.task_id = entry.task_id
            state.created_wall = entry.created_at
            state.created_mono = self.clock.now() - age
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

    async def _create(self, job: Job, state: _JobState) -> TaskReply | None:
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
            reply = await self._request(
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

    def _settle_failed_create(self, job: Job, state: _JobState, exc: CapbatchError) -> None:
        """Money and bookkeeping for a createTask that raised."""
        if isinstance(exc, TransportError) and exc.maybe_sent:
            self.spend.mark_uncertain(state.reserved)
            self._settle_probe(state)
            self.tally.lost_sends += 1
            # Also marks the entry "lost", so a resume does not count this send again.
            self.journal.record_uncertain(job.key)
        else:
            self.spend.release(state.reserved)
            self._settle_probe(state)
        state.reserved = 0.0

    async def _poll(self, job: Job, state: _JobState) -> TaskReply | None:
        assert state.task_id is not None and state.created_mono is not None
        poll = self.profile.poll
        next_poll = state.next_poll if state.next_poll is not None else self.clock.now()
        wait = next_poll - self.clock.now()
        if wait > 0:
            await self.clock.sleep(wait)
        age = self.clock.now() - state.created_mono
        if state.polls >= poll.max_polls or age >= poll.task_ttl:
            # The provider forgets the task now: a new one is the only way to an answer.
            self._release_task_money(state)
            state.last_error = APIError(
                f"no answer after {state.polls} polls in {age:.0f} s",
                error_code=POLL_LIMIT,
                task_id=state.task_id,
            )
            self._forget_task(state)
            return None
        state.polls += 1
        self.tally.polls += 1
        task_id = state.task_id
        try:
            reply = await self._request(
                state, lambda: self.service.get_task_result(task_id), priority=POLL
            )
        except CapbatchError as exc:
            state.paced = False  # an error says nothing about the solve time
            state.next_poll = self.clock.now() + poll.interval
            await self._handle(job, state, exc, creating=False)
            return None
        state.failures = 0
        self.limiter.record_success()
        if state.paced:
            state.paced = False
            self.pacer.observe_first_poll(reply.ready)
        if not reply.ready:
            state.next_poll = self.clock.now() + poll.interval
        return reply

    def _forget_task(self, state: _JobState) -> None:
        state.task_id = None
        state.created_mono = None
        state.created_wall = None
        state.next_poll = None
        state.paced = False

    # --- errors -----------------------------------------------------------------------

    async def _handle(
        self, job: Job, state: _JobState, exc: CapbatchError, *, creating: bool
    ) -> None:
        """Act on an error by the classification table; return to retry, or raise."""
        action = classify(exc)
        state.last_error = exc
        retry_after = exc.retry_after if isinstance(exc, APIError) else None
        if action is Action.FATAL:
            self.stop(exc)
            raise RunStopped(exc)
        if action is Action.RECORD:
            self._release_task_money(state)
            raise _RowFailed(self._failed(state, exc))
        if action is Action.SLOW_DOWN:
            self.tally.rate_limited += 1
            state.rate_limited += 1
            if retry_after is not None and retry_after > OutageGate.LONG_RETRY_AFTER:
                reason = f"{exc.error_code}: Retry-After {retry_after:.0f} s"
                self.outage.long_pause(retry_after, reason)
                retry_after = None
            self.limiter.slow_down(retry_after)
            if creating:
                state.budget -= 1  # nothing was created: it does not use up an attempt
            if state.rate_limited > self.policy.max_rate_limited:
                self._release_task_money(state)
                raise _RowFailed(self._failed(state, exc))
            return
        if action is Action.PAUSE:
            pause = retry_after if retry_after is not None else 300.0
            if pause > OutageGate.LONG_RETRY_AFTER:
                self.outage.long_pause(pause, f"{exc.error_code}: blocked for {pause:.0f} s")
            else:
                self.limiter.pause(pause)
            if creating:
                state.budget -= 1
            return
        if action is Action.RETRY and self.outage.down and is_outage_error(exc):
            # The provider is down, not this row: the outage gate paces the retries
            # and bounds them in time, so the row's attempts are not used up.
            if creating:
                state.budget -= 1
            return
        if action is Action.RETRY:
            state.failures += 1
            if not creating and state.failures >= self.limits.max_attempts:
                self._release_task_money(state)
                raise _RowFailed(self._failed(state, exc))
            await self.clock.sleep(self.policy.backoff(state.failures, retry_after, self._rng))
            return
        if action is Action.RETRY_BOUNDED:
            # Unsolvable: charged by some providers; a new task may succeed.
            if self.profile.unsolvable_charged:
                self._charge(job, state, self.spend.price)
                await self.watch.charged()
                self._settle_probe(state)
            else:
                self._release_task_money(state)
            self._forget_task(state)
            if state.budget >= self.limits.max_attempts:
                raise _RowFailed(self._failed(state, exc))
            await self.clock.sleep(self.policy.backoff(1, retry_after, self._rng))
            return
        if action is Action.RECREATE:
            self._release_task_money(state)
            self._forget_task(state)
            return
        raise _RowFailed(self._failed(state, exc))  # pragma: no cover - table is total

    def _release_task_money(self, state: _JobState) -> None:
        self.spend.release(state.reserved)
        state.reserved = 0.0
        self._settle_probe(state)

    def _settle_probe(self, state: _JobState) -> None:
        if state.probe:
            state.probe = False
            self.watch.release_probe()

    def _charge(self, job: Job, state: _JobState, amount: float) -> None:
        """Count a charged task; a probe is settled by the caller once the watch has
        learned the price from it (see ``SpendWatch``)."""
        self.spend.charge(state.reserved, amount)
        state.reserved = 0.0
        state.cost += amount
        self.journal.record_spent(job.key, amount)

    def _give_up(self, state: _JobState) -> RowResult:
        error = state.last_error
        if error is None:
            error = APIError("no attempts left", error_code=MAX_ATTEMPTS)
        return self._failed(state, error)

    # --- results ----------------------------------------------------------------------

    def _finish_solved(self, job: Job, state: _JobState, reply: TaskReply) -> RowResult:
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
        if reply.task_id:
            state.task_id = reply.task_id
        result = self._result(
            state, "solved", answer=reply.answer, solution=reply.solution, task_id=state.task_id
        )
        self._journal_result(job, result, cost=cost)
        return result

    def _failed(self, state: _JobState, error: CapbatchError) -> RowResult:
        task_id = state.task_id or (error.task_id if isinstance(error, APIError) else None)
        return self._result(
            state,
            "failed",
            error_code=error.error_code,
            error_message=str(error),
            task_id=task_id,
        )

    def _result(self, state: _JobState, status: str, **fields: Any) -> RowResult:
        """The row result of ``state``, finished now."""
        finished = time.time()
        return RowResult(
            status=status,
            provider=self.profile.name,
            attempts=state.calls,
            polls=state.polls,
            submitted_at=state.submitted_at,
            finished_at=finished,
            latency_ms=_latency_ms(state.submitted_at, finished),
            queue_ms=state.queue_s * 1000.0,
            cost_usd=state.cost,
            **fields,
        )

    def record_failure(self, job: Job, result: RowResult) -> None:
        """Journal a final failure so a re-run does not pay for it again. Charged
        attempts were journaled by ``record_spent`` as they happened."""
        self._journal_result(job, result, cost=0.0)

    def _journal_result(self, job: Job, result: RowResult, *, cost: float) -> None:
        """Write ``result`` as the key's final entry; ``cost`` is added to its spend."""
        self.journal.record_result(
            job.key,
            status=result.status,
            answer=result.answer,
            solution=result.solution,
            error_code=result.error_code,
            error_message=result.error_message,
            cost=cost,
            task_id=result.task_id,
            polls=result.polls,
            finished_at=result.finished_at or time.time(),
            latency_ms=result.latency_ms,
            queue_ms=result.queue_ms,
            owner=job.row_key,
            provider=self.profile.name,
            submitted_at=result.submitted_at,
        )


class _RowFailed(Exception):
    """Internal: the job ended with a failed row result."""

    def __init__(self, result: RowResult) -> None:
        super().__init__(result.error_code)
        self.result = result


def _latency_ms(submitted: float | None, finished: float) -> float | None:
    if submitted is None:
        return None
    return max(0.0, (finished - submitted) * 1000.0)


async def solve_job(solver: TaskSolver, job: Job) -> RowResult:
    """Run one job to a final row result; failures are journaled as final too."""
    try:
        return await solver.solve(job)
    except _RowFailed as failed:
        solver.record_failure(job, failed.result)
        return failed.result


def spend_cap_result(profile: ProviderProfile, cap: float | None) -> RowResult:
    """The row result of a row not sent because the spend cap was reached."""
    return RowResult(
        status="failed",
        error_code=SPEND_CAP_REACHED,
        error_message=f"not sent: the spend cap of ${cap:.4f} was reached"
        if cap is not None
        else "not sent: the spend cap was reached",
        provider=profile.name,
    )


def pending_result(provider: str) -> RowResult:
    """The row result of a row an interrupted run did not finish."""
    return RowResult(
        status="pending",
        error_code=PENDING,
        error_message="not finished: the run was interrupted; run the same command to resume",
        provider=provider,
    )
