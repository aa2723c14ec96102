"""The emulator's state: tasks, money, counters and the one seeded RNG.

Everything here runs on the server's event loop thread and never awaits, so no lock is
needed: each method is atomic with respect to other requests. Other threads read the
state only through ``snapshot()`` scheduled onto that loop (see ``_server.py``).

Money is kept in integer nano-dollars so ``charged_total`` is exactly the sum of the
prices charged less the refunds, with no floating-point drift over millions of tasks.

Times are the emulator's clock, ``now()``: the monotonic clock plus the ``clock_offset``
option, so a test moves retention, report windows and bans on without sleeping. What
differs between providers (ids, retention, unsolvable money, bans) comes from the
config's ``Dialect``.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from capbatch.emulator._bans import Bans
from capbatch.emulator._config import EmulatorConfig
from capbatch.emulator._dialects import DIALECTS, ReportKind

#: Most tasks kept for getTaskResult at once (about 400 bytes each).
MAX_LIVE_TASKS = 1_000_000

#: Money unit: 1e-9 USD.
NANO = 1_000_000_000

#: Tasks whose reports ``/_stats`` lists one by one, and reports listed per task; the
#: totals count every report.
MAX_REPORTED_TASKS = 10_000
MAX_REPORTS_LISTED = 20


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def to_usd(nano: int) -> float:
    return nano / NANO


@dataclass(frozen=True, slots=True)
class FaultRolls:
    """The random draws for one createTask/getTaskResult request, always drawn in the
    same order and number, so a run with the same seed makes the same decisions."""

    latency: float
    http_5xx: float
    unavailable: float
    malformed: float
    drop: float


@dataclass(frozen=True, slots=True)
class TaskRolls:
    """The random draws for one accepted createTask (same fixed order and number)."""

    deferred: float
    reply_status: float
    solve_time: float
    sync_latency: float
    unsolvable: float
    error: float
    error_position: float
    error_char: float


@dataclass(slots=True, eq=False)
class Task:
    """One task; kept small (a benchmark can hold hundreds of thousands for the TTL)."""

    #: The id as a string (an integer's digits for the integer-id dialects).
    task_id: str
    created: float
    #: Until then getTaskResult says ``idle``, after it ``processing``.
    idle_until: float
    ready_at: float
    #: The draws still needed to resolve the task; dropped once it is resolved.
    rolls: TaskRolls | None
    callback_url: str | None
    #: Price held back at creation, charged or released when the task resolves.
    reserved: int = 0
    resolved: bool = False
    #: The answer given (after any corruption); None while pending or if unsolvable.
    answer: str | None = None
    #: The shape of its solution (``_task_types.solution_of``): ``text`` for images.
    shape: str = "text"
    polls: int = 0
    #: When it resolved (emulator clock), and its last accepted poll.
    done_at: float = 0.0
    last_poll: float | None = None
    #: The answer given was deliberately made wrong (``error_rate``): what a provider's
    #: moderators would confirm on a report.
    corrupted: bool = False
    #: Nano-dollars charged for it and not refunded.
    charged: int = 0
    #: The address the createTask came from (the ``ip`` of a getTaskResult reply).
    ip: str | None = None
    reports: int = 0


@dataclass
class Counters:
    """What a client did, for tests to prove it (``GET /_stats``)."""

    requests_total: int = 0
    create_calls: int = 0
    create_accepted: int = 0
    deferred_created: int = 0
    creates_by_hash: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    max_polls_per_task: int = 0
    balance_calls: int = 0
    solved: int = 0
    unsolvable: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    dropped_after_create: int = 0
    feedbacks: int = 0
    feedbacks_invalid: int = 0
    reports: int = 0
    reports_refused: int = 0
    reports_by_task: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)
    developer_ids: dict[str, int] = field(default_factory=dict)
    developer_id_ignored: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    callbacks_refused: int = 0
    max_requests_per_second: int = 0
    in_flight_max: int = 0


class EmulatorState:
    """Tasks by id, the account, the counters and the RNG of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.dialect = DIALECTS[config.dialect]
        self.bans = Bans(self.dialect.ban)
        # Wall-clock seconds at monotonic 0, for createTime/endTime.
        self._epoch = time.time() - time.monotonic()
        self._serial = 0
        self.rng = random.Random(config.seed)
        self.tasks: dict[str, Task] = {}
        # Tasks in creation order, to forget expired ones in O(1) each.
        self._by_age: deque[Task] = deque()
        self.balance = to_nano(config.balance)
        self.reserved = 0
        self.charged = 0
        self.refunded = 0
        self.counters = Counters()
        self.in_flight = 0
        # Arrival times of API requests in the last second (for max_requests_per_second)
        # and of admitted ones (for the rate limit).
        self._arrivals: deque[float] = deque()
        self._admitted: deque[float] = deque()

    # --- configuration ----------------------------------------------------------------

    def apply(self, config: EmulatorConfig, changed: set[str]) -> None:
        """Switch to ``config``; a changed ``balance`` sets the account, a changed
        ``seed`` restarts the RNG. Everything that could fail is computed before the
        first assignment, so a failure leaves the state as it was."""
        balance = to_nano(config.balance) if "balance" in changed else self.balance
        self.config = config
        self.balance = balance
        if "seed" in changed:
            self.rng.seed(config.seed)

    # --- the clock --------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock: monotonic seconds plus ``clock_offset``."""
        return time.monotonic() + self.config.clock_offset

    def unix_time(self, at: float) -> int:
        """Emulator-clock time ``at`` as a UNIX timestamp (``createTime``, ``endTime``)."""
        return int(self._epoch + at)

    # --- traffic ----------------------------------------------------------------------

    def arrive(self, now: float) -> bool:
        """Count an API request; False when the rate limit turns it away."""
        c = self.counters
        c.requests_total += 1
        window = self._arrivals
        window.append(now)
        cutoff = now - 1.0
        while window[0] <= cutoff:
            window.popleft()
        c.max_requests_per_second = max(c.max_requests_per_second, len(window))
        limit = self.config.rate_limit
        if limit is None:
            return True
        admitted = self._admitted
        while admitted and admitted[0] <= cutoff:
            admitted.popleft()
        # Only admitted requests fill the window: a client that keeps knocking while
        # limited is not locked out for ever, it just gets ``limit`` requests a second.
        if len(admitted) >= limit:
            return False
        admitted.append(now)
        return True

    def enter(self) -> None:
        self.in_flight += 1
        self.counters.in_flight_max = max(self.counters.in_flight_max, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def count_error(self, code: str) -> None:
        errors = self.counters.errors_by_code
        errors[code] = errors.get(code, 0) + 1

    def count_fault(self, kind: str) -> None:
        faults = self.counters.faults
        faults[kind] = faults.get(kind, 0) + 1

    # --- random decisions -------------------------------------------------------------

    def fault_rolls(self) -> FaultRolls:
        r = self.rng.random
        lo, hi = self.config.latency
        return FaultRolls(lo + (hi - lo) * r(), r(), r(), r(), r())

    def task_rolls(self) -> TaskRolls:
        r = self.rng.random
        cfg = self.config
        return TaskRolls(
            deferred=r(),
            reply_status=r(),
            solve_time=cfg.solve_time[0] + (cfg.solve_time[1] - cfg.solve_time[0]) * r(),
            sync_latency=cfg.sync_latency[0] + (cfg.sync_latency[1] - cfg.sync_latency[0]) * r(),
            unsolvable=r(),
            error=r(),
            error_position=r(),
            error_char=r(),
        )

    # --- money ------------------------------------------------------------------------

    def reserve(self) -> int | None:
        """Hold the price of one task; None when the balance cannot cover it (money
        already held for unfinished tasks counts as spent, so nothing can overdraw)."""
        price = to_nano(self.config.price)
        if self.balance - self.reserved < price:
            return None
        self.reserved += price
        return price

    def settle(self, task: Task, solved: bool) -> None:
        """Charge the held price for a solved task. An unsolvable one is free, charged
        or charged and refunded at once, as the dialect says."""
        self.reserved -= task.reserved
        policy = self.dialect.unsolvable
        if solved or policy != "free":
            self.balance -= task.reserved
            self.charged += task.reserved
            task.charged = task.reserved
        if solved:
            self.counters.solved += 1
        else:
            self.counters.unsolvable += 1
            if policy == "refunded":
                self.refund(task, "unsolvable")
        task.reserved = 0

    def refund(self, task: Task, reason: str) -> bool:
        """Give back what ``task`` was charged; False when nothing is left to refund."""
        amount = task.charged
        if amount <= 0:
            return False
        task.charged = 0
        self.balance += amount
        self.charged -= amount
        self.refunded += amount
        refunds = self.counters.refunds
        refunds[reason] = refunds.get(reason, 0) + 1
        return True

    # --- tasks ------------------------------------------------------------------------

    def new_task(
        self,
        digest: str,
        now: float,
        rolls: TaskRolls,
        *,
        deferred: bool,
        reserved: int,
        callback_url: str | None,
    ) -> Task:
        self._forget_expired(now)
        c = self.counters
        c.create_accepted += 1
        c.creates_by_hash[digest] = c.creates_by_hash.get(digest, 0) + 1
        if deferred:
            c.deferred_created += 1
        solve_time = rolls.solve_time if deferred else 0.0
        serial, self._serial = self._serial, self._serial + 1
        return Task(
            task_id=self.dialect.new_id(serial),
            created=now,
            idle_until=now + 0.2 * solve_time,
            ready_at=now + solve_time,
            rolls=rolls,
            callback_url=callback_url,
            reserved=reserved,
        )

    def store(self, task: Task) -> None:
        """Make ``task`` visible to getTaskResult and feedbackTask."""
        self.tasks[task.task_id] = task
        self._by_age.append(task)
        if len(self._by_age) > MAX_LIVE_TASKS:
            # A memory bound for long benchmarks: the oldest result is lost early.
            self.tasks.pop(self._by_age.popleft().task_id, None)

    def lookup(self, task_id: str | None, now: float) -> Task | None:
        """The live task ``task_id``; None if unknown, expired (``task_ttl`` after its
        creation, or the dialect's ``done_ttl`` after it finished) or forgotten."""
        task = self.tasks.get(task_id) if task_id is not None else None
        if task is None:
            return None
        done_ttl = self.dialect.done_ttl
        if now - task.created > self.config.task_ttl or (
            done_ttl is not None and task.resolved and now - task.done_at > done_ttl
        ):
            del self.tasks[task.task_id]
            return None
        return task

    def forget(self, task: Task) -> None:
        self.tasks.pop(task.task_id, None)

    def _forget_expired(self, now: float) -> None:
        cutoff = now - self.config.task_ttl
        by_age = self._by_age
        while by_age and by_age[0].created < cutoff:
            self.tasks.pop(by_age.popleft().task_id, None)

    # --- what clients sent -----------------------------------------------------------

    def record_report(self, task_id: str | None, kind: ReportKind, outcome: dict[str, Any]) -> None:
        """Count one report of ``task_id`` (``outcome``: accepted, refunded or error); an
        id of the wrong type (None) is counted, not listed."""
        c = self.counters
        if outcome.get("accepted"):
            c.reports += 1
        else:
            c.reports_refused += 1
        if task_id is None:
            return
        listed = c.reports_by_task.get(task_id)
        if listed is None and len(c.reports_by_task) < MAX_REPORTED_TASKS:
            listed = c.reports_by_task[task_id] = []
        if listed is not None and len(listed) < MAX_REPORTS_LISTED:
            listed.append({"kind": kind, **outcome})

    def record_developer_id(self, value: str | None) -> None:
        """Count a createTask's developer id (None: sent in a form the dialect ignores)."""
        c = self.counters
        if value is None:
            c.developer_id_ignored += 1
        else:
            c.developer_ids[value] = c.developer_ids.get(value, 0) + 1

    # --- reporting --------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter, ``charged_total`` and ``refunded_total``; tasks, balance
        and a ban in force stay."""
        self.counters = Counters()
        self.charged = 0
        self.refunded = 0
        self.bans.reset_counts()
        self._arrivals.clear()

    def snapshot(self) -> dict[str, Any]:
        """Every counter as JSON-ready values (copies, safe to keep)."""
        c = self.counters
        return {
            "dialect": self.dialect.name,
            "requests_total": c.requests_total,
            "create_calls": c.create_calls,
            "create_accepted": c.create_accepted,
            "deferred_created": c.deferred_created,
            "creates_by_hash": dict(c.creates_by_hash),
            "polls": c.polls,
            "max_polls_per_task": c.max_polls_per_task,
            "balance_calls": c.balance_calls,
            "solved": c.solved,
            "unsolvable": c.unsolvable,
            "charged_total": to_usd(self.charged),
            "balance": to_usd(self.balance),
            "reserved": to_usd(self.reserved),
            "errors_by_code": dict(c.errors_by_code),
            "faults": dict(c.faults),
            "dropped_after_create": c.dropped_after_create,
            "feedbacks": c.feedbacks,
            "feedbacks_invalid": c.feedbacks_invalid,
            "reports": c.reports,
            "reports_refused": c.reports_refused,
            "reports_by_task": {k: [dict(r) for r in v] for k, v in c.reports_by_task.items()},
            "refunds": dict(c.refunds),
            "refunded_total": to_usd(self.refunded),
            "developer_ids": dict(c.developer_ids),
            "developer_id_ignored": c.developer_id_ignored,
            **self.bans.snapshot(self.now()),
            "callbacks_sent": c.callbacks_sent,
            "callbacks_failed": c.callbacks_failed,
            "callbacks_refused": c.callbacks_refused,
            "max_requests_per_second": c.max_requests_per_second,
            "in_flight": self.in_flight,
            "in_flight_max": c.in_flight_max,
            "tasks_live": len(self.tasks),
        }
