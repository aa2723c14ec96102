"""The per-row state machine against a faked provider (MockTransport) and a fake clock."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pandas as pd
import pytest
from PIL import Image

import capbatch
from capbatch._io.record import RowResult
from capbatch._providers.client import ProviderClient
from capbatch._providers.profiles import (
    ANTICAPTCHA,
    CAPMONSTER,
    CAPSOLVER,
    TWOCAPTCHA,
    ProviderProfile,
)
from capbatch._run.batches import SYSTEMATIC_RUN, RunAborted
from capbatch._run.gate import RunStopped
from capbatch._run.job import Job
from capbatch._run.journal import Journal, JournalEntry
from capbatch._run.limits import Limits, RateLimiter
from capbatch._run.results import POLL_LIMIT
from capbatch._run.retry import RetryPolicy, failed_for_good
from capbatch._run.spend import SpendGuard
from capbatch._run.task import SpendCapReached, TaskSolver, solve_job
from tests.fakes import FakeClock, SteppedClock

KEY = "sk-SCHEDULER-SECRET"
PRICE = 0.0004

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]


def ok_ready(text: str = "ab12", task_id: str = "t-1") -> Reply:
    body = {"errorId": 0, "status": "ready", "solution": {"text": text}, "taskId": task_id}
    return 200, body, {}


def deferred(task_id: str = "t-1") -> Reply:
    return 200, {"errorId": 0, "taskId": task_id}, {}


def pending(status: str = "processing") -> Reply:
    return 200, {"errorId": 0, "status": status}, {}


def error(code: str, http: int = 400, headers: dict[str, str] | None = None) -> Reply:
    return http, {"errorId": 1, "errorCode": code, "errorDescription": "d"}, headers or {}


class FakeProvider:
    """Answers each endpoint from a script (the last reply repeats)."""

    def __init__(self, **scripts: list[Reply | Exception]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def count(self, endpoint: str) -> int:
        return sum(1 for e, _ in self.calls if e == endpoint)

    def handler(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.strip("/")
        body = json.loads(request.content)
        self.calls.append((endpoint, body))
        script = self.scripts[endpoint]
        item = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(item, Exception):
            raise item
        status, payload, headers = item
        content = payload if isinstance(payload, str) else json.dumps(payload)
        return httpx.Response(status, content=content, headers=headers)


def make_solver(
    provider: FakeProvider,
    *,
    profile: ProviderProfile = CAPSOLVER,
    max_attempts: int = 3,
    cap: float | None = None,
    clock: FakeClock | None = None,
) -> tuple[TaskSolver, Journal, FakeClock]:
    clock = clock or FakeClock()
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handler))
    client = ProviderClient(profile, KEY, base_url="http://127.0.0.1:9", http_client=http)
    journal = Journal(":memory:")
    limits = Limits(rate=100, max_in_flight=4, max_attempts=max_attempts, max_spend=cap)
    solver = TaskSolver(
        client,
        profile,
        journal,
        limits,
        RateLimiter(100, clock=clock),
        SpendGuard(cap),
        price=PRICE,
        clock=clock,
        policy=RetryPolicy(backoff_base=0.5, backoff_cap=8.0),
        seed=1,
    )
    return solver, journal, clock


JOB = Job(key="key-1", row_key="0", task={"type": "ImageToTextTask", "body": "aGVsbG8="})


async def test_synchronous_answer_is_recorded_at_once() -> None:
    provider = FakeProvider(createTask=[ok_ready("xy9z")])
    solver, journal, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.answer == "xy9z"
    assert (result.attempts, result.polls) == (1, 0)
    assert result.cost_usd == pytest.approx(PRICE)
    assert provider.count("getTaskResult") == 0
    entry = journal.get_many([JOB.key]).get(JOB.key)
    assert entry is not None and entry.done and entry.result.answer == "xy9z"
    assert solver.spend.spent == pytest.approx(PRICE) and solver.spend.reserved == 0


async def test_deferred_task_is_polled_on_the_profile_schedule() -> None:
    provider = FakeProvider(
        createTask=[deferred("t-9")],
        getTaskResult=[pending("idle"), pending("processing"), ok_ready("q1w2", "t-9")],
    )
    solver, _, clock = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.answer == "q1w2" and result.task_id == "t-9"
    assert result.polls == 3 and result.attempts == 1
    assert [b["taskId"] for e, b in provider.calls if e == "getTaskResult"] == ["t-9"] * 3
    poll_waits = [s for s in clock.sleeps if s >= 0.5]
    assert poll_waits[0] == pytest.approx(CAPSOLVER.poll.first_delay, abs=0.05)
    assert all(w == pytest.approx(CAPSOLVER.poll.interval, abs=0.05) for w in poll_waits[1:])


async def test_service_unavailable_is_retried_with_backoff_then_succeeds() -> None:
    provider = FakeProvider(
        createTask=[
            error("ERROR_SERVICE_UNAVALIABLE"),
            error("ERROR_SERVICE_UNAVALIABLE", 503),
            ok_ready(),
        ]
    )
    solver, _, clock = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.attempts == 3
    backoffs = [s for s in clock.sleeps if s >= 0.2]
    assert len(backoffs) == 2 and backoffs[1] > backoffs[0] * 0.9  # grows (with jitter)


async def test_retries_stop_at_max_attempts_with_the_real_error_code() -> None:
    provider = FakeProvider(createTask=[error("ERROR_SERVICE_UNAVALIABLE")])
    solver, journal, _ = make_solver(provider, max_attempts=3)
    result = await solve_job(solver, JOB)
    assert result.status == "failed" and result.error_code == "ERROR_SERVICE_UNAVALIABLE"
    assert provider.count("createTask") == 3 and result.attempts == 3
    assert result.cost_usd == 0 and solver.spend.committed() == 0
    assert journal.get_many([JOB.key])[JOB.key].done


async def test_rate_limit_slows_the_run_honours_retry_after_and_costs_no_attempt() -> None:
    provider = FakeProvider(
        createTask=[
            error("ERROR_RATE_LIMIT", 429, {"Retry-After": "2"}),
            error("ERROR_RATE_LIMIT", 429, {"Retry-After": "2"}),
            error("ERROR_RATE_LIMIT", 429, {"Retry-After": "2"}),
            ok_ready(),
        ]
    )
    solver, _, clock = make_solver(provider, max_attempts=1)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.attempts == 4
    assert solver.limiter.rate < 100 and solver.tally.rate_limited == 3
    assert sum(1 for s in clock.sleeps if s == pytest.approx(2.0, abs=0.05)) >= 3


async def test_no_slot_slows_the_whole_run_down_and_costs_the_row_no_attempt() -> None:
    # 2Captcha: "no slot" is capacity; wait 5 s (TC-limits), then go on. The row keeps
    # its attempts (max_attempts=1) and the run's rate comes down.
    provider = FakeProvider(
        createTask=[error("ERROR_NO_SLOT_AVAILABLE", 200)] * 3
        + [(200, {"errorId": 0, "taskId": 5}, {})],
        getTaskResult=[ok_ready("n0sl0t", "5")],
    )
    solver, _, clock = make_solver(provider, profile=TWOCAPTCHA, max_attempts=1)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.answer == "n0sl0t"
    assert solver.tally.rate_limited == 3 and solver.limiter.rate < 100
    assert sum(1 for s in clock.sleeps if s == pytest.approx(5.0, abs=0.05)) >= 3


@pytest.mark.parametrize(("profile", "raw"), [(ANTICAPTCHA, "0.000700"), (TWOCAPTCHA, "0.00299")])
async def test_a_cost_reported_as_a_string_is_the_rows_cost(
    profile: ProviderProfile, raw: str
) -> None:
    ready = {"errorId": 0, "status": "ready", "solution": {"text": "c0st"}, "cost": raw}
    provider = FakeProvider(createTask=[deferred("77")], getTaskResult=[(200, ready, {})])
    solver, journal, _ = make_solver(provider, profile=profile)
    result = await solve_job(solver, JOB)
    assert result.cost_usd == pytest.approx(float(raw)) and solver.bad_costs == 0
    assert solver.spend.spent == pytest.approx(float(raw))
    assert journal.get_many([JOB.key])[JOB.key].result.cost_usd == pytest.approx(float(raw))


@pytest.mark.parametrize(
    "code",
    [
        "ERROR_INVALID_IMAGE",
        "ERROR_INVALID_TASK_DATA",
        "ERROR_TASK_NOT_SUPPORTED",
        # createTask without its task (gap G1): not an expired id to create again.
        "ERROR_TASK_ABSENT",
    ],
)
async def test_request_errors_fail_the_row_once_without_retry(code: str) -> None:
    provider = FakeProvider(createTask=[error(code)])
    solver, _, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "failed" and result.error_code == code
    assert provider.count("createTask") == 1 and result.cost_usd == 0


@pytest.mark.parametrize(
    ("code", "http"),
    [("ERROR_KEY_DENIED_ACCESS", 401), ("ERROR_ZERO_BALANCE", 400), ("ERROR_IP_BANNED", 403)],
)
async def test_run_fatal_errors_stop_everything(code: str, http: int) -> None:
    provider = FakeProvider(createTask=[error(code, http)])
    solver, journal, _ = make_solver(provider)
    with pytest.raises(RunStopped) as info:
        await solve_job(solver, JOB)
    assert info.value.error.error_code == code and solver.stopped is not None
    assert KEY not in str(info.value.error)
    assert not journal.get_many([JOB.key])[JOB.key].done  # resumable
    with pytest.raises(RunStopped):  # later jobs stop before sending anything
        await solve_job(solver, replace(JOB, key="key-2"))
    assert provider.count("createTask") == 1


@pytest.mark.parametrize(("profile", "charged"), [(CAPSOLVER, False), (ANTICAPTCHA, True)])
async def test_unsolvable_is_retried_a_bounded_number_of_times(
    profile: ProviderProfile, charged: bool
) -> None:
    provider = FakeProvider(createTask=[error("ERROR_CAPTCHA_UNSOLVABLE")])
    solver, journal, _ = make_solver(provider, profile=profile, max_attempts=3)
    result = await solve_job(solver, JOB)
    assert result.status == "failed" and result.error_code == "ERROR_CAPTCHA_UNSOLVABLE"
    assert provider.count("createTask") == 3
    expected = 3 * PRICE if charged else 0.0
    assert result.cost_usd == pytest.approx(expected)
    assert journal.get_many([JOB.key])[JOB.key].result.cost_usd == pytest.approx(expected)


async def test_unsolvable_then_solved_on_a_new_task() -> None:
    provider = FakeProvider(
        createTask=[deferred("t-1"), deferred("t-2")],
        getTaskResult=[error("ERROR_CAPTCHA_UNSOLVABLE"), ok_ready("good", "t-2")],
    )
    solver, _, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.answer == "good" and result.attempts == 2


async def test_expired_task_id_is_recreated() -> None:
    provider = FakeProvider(
        createTask=[deferred("t-1"), deferred("t-2")],
        getTaskResult=[error("ERROR_TASKID_INVALID"), ok_ready("fresh", "t-2")],
    )
    solver, journal, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.answer == "fresh" and result.attempts == 2 and result.task_id == "t-2"
    # The forgotten task may have finished, and been charged, before it was forgotten:
    # its price stays counted as possibly spent (this run and the journal), never released.
    assert solver.spend.spent == pytest.approx(PRICE)
    assert solver.spend.uncertain == pytest.approx(PRICE)
    assert solver.tally.lost_sends == 1 and journal.total_uncertain() == 1


@pytest.mark.parametrize("code", ["ERROR_NO_SUCH_CAPCHA_ID", "ERROR_TASKID_INVALID"])
async def test_a_task_forgotten_mid_run_keeps_the_spend_cap(code: str) -> None:
    # Room for exactly one task: the first may have been charged before the provider
    # forgot it, so a second would risk paying past the cap. Releasing its money (the
    # old behaviour) sent the second one.
    provider = FakeProvider(
        createTask=[deferred("t-1"), ok_ready("second", "t-2")],
        getTaskResult=[error(code)],
    )
    solver, journal, _ = make_solver(provider, cap=PRICE * 1.5)
    with pytest.raises(SpendCapReached):
        await solve_job(solver, JOB)
    assert provider.count("createTask") == 1
    assert solver.spend.committed() == pytest.approx(PRICE)
    assert journal.total_uncertain() == 1


async def test_poll_limit_gives_up_after_max_polls_per_task() -> None:
    provider = FakeProvider(createTask=[deferred()], getTaskResult=[pending()])
    solver, _, _ = make_solver(provider, max_attempts=2)
    result = await solve_job(solver, JOB)
    assert result.status == "failed" and result.error_code == POLL_LIMIT
    assert provider.count("createTask") == 2
    assert provider.count("getTaskResult") <= 2 * CAPSOLVER.poll.max_polls
    # Each task the provider stopped keeping may yet have been solved, and charged.
    assert solver.spend.committed() == pytest.approx(2 * PRICE)
    assert solver.spend.uncertain == pytest.approx(2 * PRICE) and solver.spend.spent == 0


async def test_transient_poll_errors_are_retried_without_recreating() -> None:
    provider = FakeProvider(
        createTask=[deferred()],
        getTaskResult=[
            httpx.ReadTimeout("slow"),
            error("ERROR_SERVICE_UNAVALIABLE", 502),
            ok_ready(),
        ],
    )
    solver, _, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.attempts == 1 and result.polls == 3


async def test_lost_create_reply_is_counted_as_a_possible_double_payment() -> None:
    provider = FakeProvider(createTask=[httpx.RemoteProtocolError("dropped"), ok_ready()])
    solver, journal, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and result.attempts == 2
    assert solver.tally.lost_sends == 1
    assert journal.get_many([JOB.key])[JOB.key].uncertain == 1


async def test_connect_failure_is_not_a_double_payment() -> None:
    provider = FakeProvider(createTask=[httpx.ConnectError("refused"), ok_ready()])
    solver, _, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.status == "solved" and solver.tally.lost_sends == 0


async def test_spend_cap_counts_money_in_flight() -> None:
    provider = FakeProvider(createTask=[deferred()], getTaskResult=[pending()])
    solver, _, _ = make_solver(provider, cap=2.5 * PRICE)
    assert solver.spend.reserve() and solver.spend.reserve()  # two in flight
    with pytest.raises(SpendCapReached):
        await solve_job(solver, JOB)
    assert provider.count("createTask") == 0 and solver.spend.cap_reached


def entry(state: str, created_ago: float, **kw: Any) -> JournalEntry:
    """An unfinished task an earlier run left in the journal."""
    result: dict[str, Any] = {
        "status": "pending",
        "task_id": "t-old",
        "attempts": 1,
        "provider": "capsolver",
        "submitted_at": time.time() - created_ago,
    }
    result.update(kw)
    return JournalEntry(
        key=JOB.key,
        state=state,
        owner="0",
        created_at=time.time() - created_ago,
        uncertain=0,
        result=RowResult(**result),
    )


async def test_resume_polls_a_journaled_task_instead_of_creating_it_again() -> None:
    provider = FakeProvider(createTask=[ok_ready("new")], getTaskResult=[ok_ready("old", "t-old")])
    solver, _, _ = make_solver(provider)
    result = await solve_job(solver, replace(JOB, resumed=entry("created", 5)))
    assert result.answer == "old" and provider.count("createTask") == 0
    assert solver.tally.lost_sends == 0 and result.attempts == 1


@pytest.mark.parametrize(
    ("resumed", "earlier_uncertain"),
    [
        (entry("created", 3600), 0),
        (entry("intent", 5, task_id=None), 0),
        (entry("intent", 5, task_id=None), 2),
    ],
)
async def test_resume_recreates_lost_or_expired_tasks_and_counts_them_in_the_journal(
    resumed: JournalEntry, earlier_uncertain: int
) -> None:
    provider = FakeProvider(createTask=[ok_ready("new")])
    solver, journal, _ = make_solver(provider)
    # The earlier run's journal row (a killed run may already have counted some sends).
    journal.record_intent(JOB.key, owner="0", provider="capsolver", submitted_at=1.0)
    for _ in range(earlier_uncertain):
        journal.record_uncertain(JOB.key)
    result = await solve_job(solver, replace(JOB, resumed=resumed))
    assert result.answer == "new" and provider.count("createTask") == 1
    assert solver.tally.lost_sends == 1  # this run's share
    assert journal.total_uncertain() == earlier_uncertain + 1  # every run's, kept on disk
    assert result.attempts == 2


async def test_no_request_body_or_error_carries_the_key_outside_clientKey() -> None:
    provider = FakeProvider(createTask=[error("ERROR_INVALID_IMAGE")])
    solver, journal, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert KEY not in repr(result)
    assert all(b["clientKey"] == KEY for _, b in provider.calls)
    dump = "\n".join(journal._db.iterdump())
    assert KEY not in dump


Handler = Callable[[httpx.Request], httpx.Response]


async def test_a_poll_goes_ahead_of_queued_new_tasks_and_teaches_the_pacer() -> None:
    # One deferred task among many new ones at 10 req/s: its poll must not wait behind
    # every createTask queued meanwhile (first come, first served made a task ready in
    # 0.5 s show 20 s of latency, and at low rates outlive the provider's lifetime).
    provider = FakeProvider(
        createTask=[deferred("t-slow")] + [ok_ready(f"a{i}") for i in range(40)],
        getTaskResult=[ok_ready("late", "t-slow")],
    )
    clock = SteppedClock()
    solver, _, _ = make_solver(provider, clock=clock)  # type: ignore[arg-type]
    solver.limiter = RateLimiter(10, clock=clock)
    jobs = [replace(JOB, key=f"k{i}", row_key=str(i)) for i in range(40)]
    tasks = [asyncio.create_task(solve_job(solver, job)) for job in jobs]
    for _ in range(2000):  # bounded: 200 s of fake time in 0.1 s steps
        if all(t.done() for t in tasks):
            break
        clock.advance(0.1)
        for _ in range(30):
            await asyncio.sleep(0)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    order = [endpoint for endpoint, _ in provider.calls]
    poll_at = order.index("getTaskResult")
    # Created first, polled after CAPSOLVER's first delay (1 s): about ten sends later,
    # not after the 30 createTasks still queued then.
    assert poll_at <= 14, order
    assert results[0].answer == "late" and results[0].latency_ms is not None
    # One first poll, and it found the task ready.
    assert solver.pacer.first_polls == 1 and provider.count("getTaskResult") == 1


# --- a run of identical refusals stops the run, at any point (BatchRunner) ------------


def _distinct_images(count: int) -> list[bytes]:
    """``count`` small PNGs, each different."""
    images = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (40, 16), (i % 256, i // 256, 99)).save(buf, "PNG")
        images.append(buf.getvalue())
    return images


Script = Callable[[int], Reply]


class RowProvider:
    """A provider answering each createTask by the row its image came from."""

    def __init__(self, images: list[bytes], script: Script) -> None:
        self.rows = {base64.b64encode(image).decode(): i for i, image in enumerate(images)}
        self.script = script
        self.created: list[int] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        endpoint = request.url.path.strip("/")
        if endpoint == "getBalance":
            return httpx.Response(200, json={"errorId": 0, "balance": 100.0})
        assert endpoint == "createTask", endpoint
        row = self.rows[body["task"]["body"]]
        self.created.append(row)
        status, payload, headers = self.script(row)
        return httpx.Response(status, json=payload, headers=headers)


async def run_rows(
    script: Script, rows: int, *, images: list[bytes] | None = None, **options: Any
) -> tuple[pd.DataFrame, RowProvider]:
    """Every row through the real engine (one request at a time, so results come in
    row order) against ``script``; the results frame, and what the provider saw."""
    distinct = _distinct_images(rows)
    table = images if images is not None else distinct
    provider = RowProvider(distinct if images is None else list(dict.fromkeys(table)), script)
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handler))
    frame = pd.DataFrame({"image": table, "id": [f"r{i}" for i in range(len(table))]})
    settings: dict[str, Any] = {
        "provider": "capsolver",
        "api_key": KEY,
        "base_url": "http://127.0.0.1:9",
        "http_client": http,
        "journal": ":memory:",
        "quiet": True,
        "max_in_flight": 1,
        "rate": 100_000,
        "max_attempts": 2,
        "retry": RetryPolicy(backoff_base=0.001, backoff_cap=0.001),
        **options,
    }
    result = await capbatch.arun(frame, **settings)
    return result, provider


def refused(code: str) -> Reply:
    return 400, {"errorId": 1, "errorCode": code, "errorDescription": "nope"}, {}


async def test_identical_refusals_after_answers_stop_the_run_at_once() -> None:
    # 30 answers, then the provider refuses the task type for every image: the old
    # check looked at the first 20 results only and sent all 90 rows.
    def script(row: int) -> Reply:
        return ok_ready(f"a{row}") if row < 30 else refused("ERROR_TASK_NOT_SUPPORTED")

    with pytest.raises(RunAborted) as info:
        await run_rows(script, 90)
    message = str(info.value)
    assert f"{SYSTEMATIC_RUN} different images in a row" in message
    assert "ERROR_TASK_NOT_SUPPORTED" in message and "\n" not in message
    assert SYSTEMATIC_RUN == 20


async def test_the_stop_comes_after_exactly_n_refusals() -> None:
    created: list[int] = []

    def script(row: int) -> Reply:
        created.append(row)
        return ok_ready() if row < 45 else refused("ERROR_INVALID_TASK_DATA")

    with pytest.raises(RunAborted):
        await run_rows(script, 200)
    assert created == list(range(45 + SYSTEMATIC_RUN))  # 20 refusals, then nothing more


@pytest.mark.parametrize(
    "between",
    [
        ok_ready("fine"),  # an answer in between
        refused("ERROR_INVALID_IMAGE"),  # a different refusal
        error("ERROR_CAPTCHA_UNSOLVABLE"),  # a failure a retry may fix
    ],
    ids=["answer", "other-refusal", "unsolvable"],
)
async def test_anything_else_in_between_starts_the_count_again(between: Reply) -> None:
    # 19 refusals, one other outcome, 19 refusals, ...: never 20 in a row. (One attempt
    # a row: a retry's back-off would let later rows finish first, and "in a row" is the
    # order results come in.)
    def script(row: int) -> Reply:
        return between if row % 20 == 19 else refused("ERROR_TASK_NOT_SUPPORTED")

    result, provider = await run_rows(script, 80, max_attempts=1)
    assert len(result) == 80 and len(set(provider.created)) == 80
    assert (result["error_code"] == "ERROR_TASK_NOT_SUPPORTED").sum() == 4 * 19


async def test_failures_a_retry_may_fix_never_stop_the_run() -> None:
    result, _ = await run_rows(lambda row: error("ERROR_CAPTCHA_UNSOLVABLE"), 30)
    assert (result["error_code"] == "ERROR_CAPTCHA_UNSOLVABLE").all()


async def test_one_image_refused_many_times_is_not_a_run_of_different_images() -> None:
    # --no-cache: 25 rows of one image are 25 tasks, but one image; its refusal may be
    # about the image. Another image refused 20 times in a row would stop the run.
    image = _distinct_images(1)
    result, provider = await run_rows(
        lambda row: refused("ERROR_INVALID_IMAGE"), 1, images=image * 25, cache=False
    )
    assert len(result) == 25 and len(provider.created) == 25


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("ERROR_TASK_ABSENT", True),  # a malformed request: the same again next run
        ("ERROR_NO_SLOT_AVAILABLE", False),  # capacity: the next run sends it again
        ("ERROR_NO_SUCH_CAPCHA_ID", False),  # the task was gone: a new one may answer
        ("ERROR_TASK_NOT_SUPPORTED", True),
    ],
)
def test_which_failures_the_next_run_keeps(code: str, kept: bool) -> None:
    for profile in (ANTICAPTCHA, TWOCAPTCHA):
        assert failed_for_good(code, profile) is kept


def test_the_next_run_reads_a_stored_code_by_the_providers_own_meaning() -> None:
    from types import MappingProxyType

    from capbatch._exceptions import ServiceUnavailable

    odd = replace(
        ANTICAPTCHA,
        error_classes=MappingProxyType({"ERROR_TASK_NOT_SUPPORTED": ServiceUnavailable}),
    )
    assert failed_for_good("ERROR_TASK_NOT_SUPPORTED", ANTICAPTCHA)
    assert not failed_for_good("ERROR_TASK_NOT_SUPPORTED", odd)


# --- retention: tasks are polled while the provider keeps them -------------------------


@pytest.mark.parametrize(
    ("profile", "age", "polled"),
    [
        (ANTICAPTCHA, 30, True),  # under 60 s: surely still there
        (ANTICAPTCHA, 55, False),  # may have finished 55 s ago: gone at 60 (AC7), lost
        (CAPSOLVER, 55, True),  # CapSolver keeps a task 5 minutes (CS10)
        (CAPSOLVER, 295, False),
    ],
    ids=lambda v: getattr(v, "name", repr(v)),
)
async def test_a_resumed_task_older_than_the_providers_retention_is_counted_lost(
    profile: ProviderProfile, age: float, polled: bool
) -> None:
    provider = FakeProvider(
        createTask=[ok_ready("new", "99")], getTaskResult=[ok_ready("old", "12")]
    )
    solver, journal, _ = make_solver(provider, profile=profile)
    journal.record_intent(JOB.key, owner="0", provider=profile.name, submitted_at=1.0)
    result = await solve_job(solver, replace(JOB, resumed=entry("created", age, task_id="12")))
    assert (provider.count("getTaskResult"), provider.count("createTask")) == (
        (1, 0) if polled else (0, 1)
    )
    assert result.answer == ("old" if polled else "new")
    # Honestly: a task that may have been charged and is paid again is counted, on disk.
    assert solver.tally.lost_sends == journal.total_uncertain() == (0 if polled else 1)


async def test_the_first_poll_is_never_so_late_that_a_finished_task_is_forgotten() -> None:
    from capbatch._run.polling import PollPacer

    for profile, ceiling in ((ANTICAPTCHA, 15.0), (CAPSOLVER, 60.0)):
        pacer = PollPacer(profile.poll)
        for _ in range(2000):  # every first poll finds its task not ready yet
            pacer.observe_first_poll(False)
        assert pacer.first_delay == pytest.approx(ceiling)
    # Anti-Captcha forgets a finished task 60 s after it finished: a task that finished
    # at once is polled at 15 s at the latest.
    assert ANTICAPTCHA.poll.max_gap * 4 == ANTICAPTCHA.poll.result_ttl


@pytest.mark.parametrize(("profile", "longest"), [(ANTICAPTCHA, 15.0), (CAPSOLVER, 40.0)])
async def test_a_poll_error_never_parks_a_task_past_what_the_provider_keeps(
    profile: ProviderProfile, longest: float
) -> None:
    provider = FakeProvider(
        createTask=[deferred("31")],
        getTaskResult=[
            error("ERROR_SERVICE_UNAVALIABLE", 503, {"Retry-After": "40"}),
            ok_ready("kept", "31"),
        ],
    )
    solver, _, clock = make_solver(provider, profile=profile)
    result = await solve_job(solver, JOB)
    assert result.answer == "kept"
    assert max(clock.sleeps) == pytest.approx(longest)  # 40 s asked; 15 s for Anti-Captcha


class TimedProvider(FakeProvider):
    """A ``FakeProvider`` that notes the fake time of every poll."""

    def __init__(self, clock: FakeClock, **scripts: list[Reply | Exception]) -> None:
        super().__init__(**scripts)
        self.clock = clock
        self.poll_times: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("getTaskResult"):
            self.poll_times.append(self.clock.now())
        return super().handler(request)


async def test_capmonster_polls_a_task_at_most_once_per_two_seconds() -> None:
    clock = FakeClock()
    provider = TimedProvider(
        clock,
        createTask=[deferred("8")],
        getTaskResult=[
            pending(),
            error("ERROR_SERVICE_UNAVALIABLE", 503, {"Retry-After": "0"}),
            httpx.ReadError("connection reset"),
            pending("idle"),
            ok_ready("floor", "8"),
        ],
    )
    solver, _, _ = make_solver(provider, profile=CAPMONSTER, clock=clock, max_attempts=5)
    result = await solve_job(solver, JOB)
    assert result.answer == "floor" and len(provider.poll_times) == 5
    gaps = [b - a for a, b in zip(provider.poll_times, provider.poll_times[1:], strict=False)]
    assert min(gaps) >= CAPMONSTER.poll.min_interval == 2.0


async def test_a_resumed_capmonster_task_waits_the_floor_before_its_first_poll() -> None:
    # The earlier run may have polled it a moment before it was killed.
    clock = FakeClock()
    provider = TimedProvider(clock, getTaskResult=[ok_ready("late", "12")])
    solver, _, _ = make_solver(provider, profile=CAPMONSTER, clock=clock)
    start = clock.now()
    result = await solve_job(solver, replace(JOB, resumed=entry("created", 5, task_id="12")))
    assert result.answer == "late"
    assert provider.poll_times[0] - start >= CAPMONSTER.poll.min_interval


def test_a_poll_schedule_cannot_poll_faster_than_its_own_floor() -> None:
    from capbatch._providers.profiles import PollSchedule

    with pytest.raises(ValueError, match="floor"):
        PollSchedule(first_delay=0.3, interval=1.0, min_interval=2.0)
