"""The emulator in each provider's dialect, over real HTTP on 127.0.0.1.

For capsolver, anticaptcha, capmonster and twocaptcha: endpoints, task id types,
synchronous and deferred answers, the fields of a ready reply, developer ids, error
codes with their errorId and HTTP status, image size limits, retention, poll limits,
reports (once per task, the window), refunds and money in ``/_stats``, CapMonster's bans,
and the faults, controls and callbacks every dialect keeps. Time is moved with the
emulator's clock (``clock_offset`` through ``/_control``), never waited for.

Every request goes to 127.0.0.1 with a short timeout; every loop is bounded in count
and in time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from capbatch.emulator import EmulatorHandle
from capbatch.emulator._cli import serve as serve_command

pytestmark = pytest.mark.e2e

KEY = "test-key"
PRICE = 0.0004
REPO = Path(__file__).resolve().parents[2]
DIALECTS = ("capsolver", "anticaptcha", "capmonster", "twocaptcha")
V2 = ("anticaptcha", "capmonster", "twocaptcha")
REPORT_PATH = {
    "capsolver": "/feedbackTask",
    "anticaptcha": "/reportIncorrectImageCaptcha",
    "capmonster": "/reportIncorrectImageCaptcha",
    "twocaptcha": "/reportIncorrect",
}
#: Seconds a finished task can still be asked for: from creation (task_ttl) or, for
#: Anti-Captcha, from completion.
RETENTION = {
    "capsolver": 300.0,
    "anticaptcha": 60.0,
    "capmonster": 300.0,
    "twocaptcha": 300.0,
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(size: tuple[int, int] = (120, 40), pad_to: int | None = None) -> bytes:
    """A PNG of ``size`` pixels, padded after its end with zero bytes to ``pad_to``
    bytes (image readers stop at the end chunk)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (240, 240, 235)).save(buf, "PNG")
    data = buf.getvalue()
    if pad_to is not None:
        assert pad_to >= len(data)
        data += b"\0" * (pad_to - len(data))
    return data


PNG = png()


class Client:
    """One dialect's endpoints and the test controls, over one httpx client."""

    def __init__(self, handle: EmulatorHandle, dialect: str, key: str = KEY) -> None:
        self.dialect = dialect
        self.key = key
        self.http = httpx.Client(base_url=handle.url, timeout=10.0, trust_env=False)
        self.offset = 0.0

    def with_key(self, key: str) -> Client:
        """The same client sending another api key."""
        other = Client.__new__(Client)
        other.__dict__.update(self.__dict__, key=key)
        return other

    def post(self, path: str, **body: Any) -> httpx.Response:
        return self.http.post(path, json={"clientKey": self.key, **body})

    def create(self, image: bytes = PNG, **extra: Any) -> httpx.Response:
        task = {"type": "ImageToTextTask", "body": b64(image)}
        return self.post("/createTask", task=task, **extra)

    def result(self, task_id: Any) -> httpx.Response:
        return self.post("/getTaskResult", taskId=task_id)

    def balance(self) -> httpx.Response:
        return self.post("/getBalance")

    def report(self, task_id: Any, path: str | None = None) -> httpx.Response:
        extra = {"result": {"invalid": True}} if self.dialect == "capsolver" else {}
        return self.post(path or REPORT_PATH[self.dialect], taskId=task_id, **extra)

    def control(self, **changes: Any) -> dict[str, Any]:
        reply = self.http.post("/_control", json={"clientKey": self.key, **changes})
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()
        return data

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock ``seconds`` ahead."""
        self.offset += seconds
        self.control(clock_offset=self.offset)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get("/_stats").json()
        return data

    def wait_done(self, task_id: Any) -> dict[str, Any]:
        """Poll until the task is no longer pending (bounded: 100 polls, 5 s); CapMonster
        takes one poll per 2 s of its clock, so the clock moves on before each poll."""
        deadline = time.monotonic() + 5.0
        reply: dict[str, Any] = {}
        for _ in range(100):
            if self.dialect == "capmonster":
                self.advance(2.0)
            reply = self.result(task_id).json()
            if reply.get("status") not in ("idle", "processing"):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return reply

    def solved(self, image: bytes = PNG) -> tuple[Any, dict[str, Any]]:
        """A task made and answered: its id and its ready reply."""
        created = self.create(image).json()
        task_id = created["taskId"]
        if created.get("status") == "ready":
            return task_id, created
        return task_id, self.wait_done(task_id)


@pytest.fixture
def start(emulator: Callable[..., EmulatorHandle]) -> Iterator[Callable[..., Client]]:
    """``start(dialect, **options)``: an emulator speaking ``dialect`` and its client."""
    clients: list[Client] = []

    def make(dialect: str, **options: Any) -> Client:
        # Deferred tasks are ready at once unless a test asks for a solve time.
        options.setdefault("solve_time", (0.0, 0.0))
        client = Client(emulator(dialect=dialect, **options), dialect)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.http.close()


def assert_error(reply: httpx.Response, http: int, error_id: int, code: str) -> None:
    body = reply.json()
    assert (reply.status_code, body.get("errorId"), body.get("errorCode")) == (
        http,
        error_id,
        code,
    ), body


# --- endpoints and ids ----------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_dialect_serves_its_own_report_endpoints(start, dialect):
    client = start(dialect)
    task_id, _ = client.solved()
    paths = {"/feedbackTask", "/reportIncorrectImageCaptcha", "/reportIncorrect"}
    paths |= {"/reportCorrect"}
    own = {REPORT_PATH[dialect]} | ({"/reportCorrect"} if dialect == "twocaptcha" else set())
    for path in sorted(paths):
        reply = client.report(task_id, path)
        assert (reply.status_code != 404) == (path in own), (path, reply.status_code)
    assert client.balance().json()["errorId"] == 0
    assert client.stats()["dialect"] == dialect


@pytest.mark.parametrize("dialect", DIALECTS)
def test_task_id_types(start, dialect):
    client = start(dialect)
    task_id, ready = client.solved()
    assert ready["status"] == "ready"
    if dialect == "capsolver":
        assert isinstance(task_id, str) and uuid.UUID(task_id).version == 4
        wrong_type: Any = 12345
    else:
        assert isinstance(task_id, int) and not isinstance(task_id, bool)
        wrong_type = str(task_id)
    if dialect == "twocaptcha":
        assert len(str(task_id)) >= 11
    # The id in the other JSON type is no task of this dialect.
    assert client.result(wrong_type).json()["errorId"] != 0
    assert len({client.solved()[0] for _ in range(3)} | {task_id}) == 4


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sync_or_deferred(start, dialect):
    # deferred=0: CapSolver answers in createTask; the others never do.
    client = start(dialect, deferred=0.0, solve_time=(0.4, 0.4), deferred_reply_status="idle")
    created = client.create().json()
    if dialect == "capsolver":
        assert created["status"] == "ready"
        assert created["solution"] == {"text": "capbatch"}
        return
    assert set(created) == {"errorId", "taskId"} and created["errorId"] == 0
    first = client.result(created["taskId"]).json()
    assert first["status"] == "processing" and "solution" not in first
    last = client.wait_done(created["taskId"])
    assert last["status"] == "ready" and last["solution"]["text"] == "capbatch"
    # Anti-Captcha's solution also says where it keeps the image (AC-result's example).
    assert set(last["solution"]) == ({"text", "url"} if dialect == "anticaptcha" else {"text"})
    assert client.stats()["deferred_created"] == 1


def test_capsolver_deferred_still_says_idle_then_processing(start):
    client = start("capsolver", deferred=1.0, solve_time=(2.0, 2.0), deferred_reply_status="idle")
    created = client.create().json()
    assert created["status"] == "idle"
    assert client.result(created["taskId"]).json()["status"] == "idle"


# --- reply fields ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_ready_reply_fields(start, dialect):
    client = start(dialect)
    before = int(time.time())
    task_id, _ = client.solved()
    if dialect == "capmonster":
        client.advance(2.0)
    ready = client.result(task_id).json()
    after = int(time.time()) + 1
    extras = {"cost", "ip", "createTime", "endTime", "solveCount"}
    if dialect in ("capsolver", "capmonster"):
        assert not extras & set(ready)
        assert ("taskId" in ready) == (dialect == "capsolver")
        return
    assert ready["cost"] == {"anticaptcha": "0.000400", "twocaptcha": "0.00040"}[dialect]
    assert ready["ip"] == "127.0.0.1"
    assert before <= ready["createTime"] <= ready["endTime"] <= after
    # Anti-Captcha's example sends solveCount as a string, 2Captcha's as a number.
    assert ready["solveCount"] == ("1" if dialect == "anticaptcha" else 1)
    assert "taskId" not in ready


def test_capmonster_processing_reply_sends_null_error_fields(start):
    client = start("capmonster", solve_time=(2.0, 2.0))
    pending = client.result(client.create().json()["taskId"]).json()
    assert pending == {
        "errorId": 0,
        "errorCode": None,
        "errorDescription": None,
        "status": "processing",
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_balance_reply(start, dialect):
    reply = start(dialect, balance=2.5).balance().json()
    if dialect == "capsolver":
        assert reply == {
            "errorId": 0,
            "errorCode": "",
            "errorDescription": "",
            "balance": 2.5,
            "packages": [],
        }
    elif dialect == "anticaptcha":  # AC-balance's current example adds captchaCredits
        assert reply == {"errorId": 0, "balance": 2.5, "captchaCredits": 0}
    else:
        assert reply == {"errorId": 0, "balance": 2.5}


# --- developer ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "good", "ignored"),
    [
        ("capsolver", {"appId": "my-app"}, [{"appId": 42}, {"softId": 42}]),
        ("anticaptcha", {"softId": 55}, [{"softId": "55"}, {"appId": "my-app"}]),
        ("capmonster", {"softId": 55}, [{"softId": True}, {"appId": "my-app"}]),
        ("twocaptcha", {"softId": 55}, [{"softId": 5.5}, {"appId": "my-app"}]),
    ],
)
def test_developer_id_field(start, dialect, good, ignored):
    client = start(dialect)
    assert client.create(**good).json()["errorId"] == 0
    for extra in ignored:
        assert client.create(**extra).json()["errorId"] == 0
    client.create()  # none sent: not counted
    stats = client.stats()
    assert stats["developer_ids"] == {str(next(iter(good.values()))): 1}
    assert stats["developer_id_ignored"] == len(ignored)


# --- error codes ----------------------------------------------------------------------

#: (HTTP status, errorId, errorCode) per situation and dialect.
ERRORS: dict[str, dict[str, tuple[int, int, str]]] = {
    "bad_key": {
        "capsolver": (401, 1, "ERROR_KEY_DENIED_ACCESS"),
        "anticaptcha": (200, 1, "ERROR_KEY_DOES_NOT_EXIST"),
        "capmonster": (200, 1, "ERROR_KEY_DOES_NOT_EXIST"),
        "twocaptcha": (200, 1, "ERROR_KEY_DOES_NOT_EXIST"),
    },
    "no_task": {
        "capsolver": (400, 1, "ERROR_INVALID_TASK_DATA"),
        "anticaptcha": (200, 22, "ERROR_TASK_ABSENT"),
        "capmonster": (200, 1, "ERROR_TASK_ABSENT"),
        "twocaptcha": (200, 22, "ERROR_TASK_ABSENT"),
    },
    "unsupported": {
        "capsolver": (400, 1, "ERROR_TASK_NOT_SUPPORTED"),
        "anticaptcha": (200, 23, "ERROR_TASK_NOT_SUPPORTED"),
        "capmonster": (200, 1, "ERROR_TASK_NOT_SUPPORTED"),
        "twocaptcha": (200, 23, "ERROR_TASK_NOT_SUPPORTED"),
    },
    "not_an_image": {
        "capsolver": (400, 1, "ERROR_INVALID_IMAGE"),
        "anticaptcha": (200, 15, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
        "capmonster": (200, 1, "ERROR_CAPTCHA_UNSOLVABLE"),
        "twocaptcha": (200, 15, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    },
    "zero_balance": {
        "capsolver": (400, 1, "ERROR_ZERO_BALANCE"),
        "anticaptcha": (200, 10, "ERROR_ZERO_BALANCE"),
        "capmonster": (200, 1, "ERROR_ZERO_BALANCE"),
        "twocaptcha": (200, 10, "ERROR_ZERO_BALANCE"),
    },
    "unknown_task": {
        "capsolver": (400, 1, "ERROR_TASKID_INVALID"),
        "anticaptcha": (200, 16, "ERROR_NO_SUCH_CAPCHA_ID"),
        "capmonster": (200, 1, "ERROR_NO_SUCH_CAPCHA_ID"),
        "twocaptcha": (200, 16, "ERROR_NO_SUCH_CAPCHA_ID"),
    },
    "unavailable": {
        "capsolver": (400, 1, "ERROR_SERVICE_UNAVALIABLE"),
        "anticaptcha": (200, 2, "ERROR_NO_SLOT_AVAILABLE"),
        "capmonster": (200, 1, "ERROR_NO_SLOT_AVAILABLE"),
        "twocaptcha": (200, 2, "ERROR_NO_SLOT_AVAILABLE"),
    },
    "rate_limit": {
        "capsolver": (429, 1, "ERROR_RATE_LIMIT"),
        "anticaptcha": (200, 2, "ERROR_NO_SLOT_AVAILABLE"),
        "capmonster": (200, 1, "ERROR_NO_SLOT_AVAILABLE"),
        "twocaptcha": (200, 2, "ERROR_NO_SLOT_AVAILABLE"),
    },
    "unsolvable": {
        "capsolver": (400, 1, "ERROR_CAPTCHA_UNSOLVABLE"),
        "anticaptcha": (200, 12, "ERROR_CAPTCHA_UNSOLVABLE"),
        "capmonster": (200, 1, "ERROR_CAPTCHA_UNSOLVABLE"),
        "twocaptcha": (200, 12, "ERROR_CAPTCHA_UNSOLVABLE"),
    },
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_request_errors(start, dialect):
    client = start(dialect)
    expect = {name: table[dialect] for name, table in ERRORS.items()}
    wrong = client.with_key("wrong-key")
    for reply in (wrong.create(), wrong.result(1), wrong.balance()):
        assert_error(reply, *expect["bad_key"])
    assert_error(client.post("/createTask"), *expect["no_task"])
    recaptcha = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com"}
    assert_error(client.post("/createTask", task=recaptcha), *expect["unsupported"])
    assert_error(client.create(b"not an image, " * 10), *expect["not_an_image"])
    unknown = str(uuid.uuid4()) if dialect == "capsolver" else 1
    assert_error(client.result(unknown), *expect["unknown_task"])
    client.control(balance=0)
    assert_error(client.create(), *expect["zero_balance"])
    assert client.stats()["create_accepted"] == 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_injected_unavailable_and_rate_limit(start, dialect):
    client = start(dialect, unavailable_rate=1.0)
    assert_error(client.create(), *ERRORS["unavailable"][dialect])
    client.control(unavailable_rate=0.0, rate_limit=2)
    replies = [client.balance() for _ in range(4)]
    assert [r.json()["errorId"] for r in replies[:2]] == [0, 0]
    for reply in replies[2:]:
        assert_error(reply, *ERRORS["rate_limit"][dialect])
        assert reply.headers["Retry-After"] == "1"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unsolvable_reply_and_money(start, dialect):
    client = start(dialect, unsolvable_rate=1.0)
    created = client.create()
    if dialect == "capsolver":
        # Answered in createTask, so the error comes there.
        assert_error(created, *ERRORS["unsolvable"]["capsolver"])
    else:
        last = client.wait_done(created.json()["taskId"])
        assert (last["errorId"], last["errorCode"]) == ERRORS["unsolvable"][dialect][1:]
        assert "status" not in last
    stats = client.stats()
    assert stats["unsolvable"] == 1 and stats["reserved"] == 0
    # CS20, CM12: not charged; AC11: charged; TC12: charged and returned at once.
    charged = PRICE if dialect == "anticaptcha" else 0.0
    assert stats["charged_total"] == pytest.approx(charged)
    assert stats["balance"] == pytest.approx(100.0 - charged)
    if dialect == "twocaptcha":
        assert stats["refunds"] == {"unsolvable": 1}
        assert stats["refunded_total"] == pytest.approx(PRICE)
    else:
        assert stats["refunds"] == {} and stats["refunded_total"] == 0


# --- image limits ---------------------------------------------------------------------

#: (smallest, largest) image accepted in bytes; None: no limit.
SIZES: dict[str, tuple[int | None, int | None]] = {
    "capsolver": (None, None),
    "anticaptcha": (100, 500_000),
    "capmonster": (100, 50_000),
    "twocaptcha": (100, 100_000),
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_image_size_limits(start, dialect):
    client = start(dialect)
    low, high = SIZES[dialect]
    tiny = png((1, 1))
    assert len(tiny) < 100
    if low is None:
        assert client.create(tiny).json()["errorId"] == 0
        assert client.create(png(pad_to=600_000)).json()["errorId"] == 0
        return
    numbered = dialect != "capmonster"  # CapMonster's errorId is always 1
    assert_error(client.create(tiny), 200, 3 if numbered else 1, "ERROR_ZERO_CAPTCHA_FILESIZE")
    assert_error(
        client.create(png((1, 1), pad_to=low - 1)),
        200,
        3 if numbered else 1,
        "ERROR_ZERO_CAPTCHA_FILESIZE",
    )
    assert client.create(png((1, 1), pad_to=low)).json()["errorId"] == 0
    assert client.create(png(pad_to=high)).json()["errorId"] == 0
    too_big = client.create(png(pad_to=high + 1))
    assert_error(too_big, 200, 4 if numbered else 1, "ERROR_TOO_BIG_CAPTCHA_FILESIZE")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_image_side_limit(start, dialect):
    client = start(dialect)
    wide = client.create(png((1001, 8)))
    if dialect == "twocaptcha":
        assert_error(wide, 200, 4, "ERROR_TOO_BIG_CAPTCHA_FILESIZE")
        assert client.create(png((1000, 8))).json()["errorId"] == 0
    else:
        assert wide.json()["errorId"] == 0


# --- retention and polls --------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_retention_on_the_emulator_clock(start, dialect):
    client = start(dialect)
    task_id, _ = client.solved()
    keep = RETENTION[dialect]
    client.advance(keep - 1.0 - client.offset)  # CapMonster's polls moved it already
    assert client.result(task_id).json()["status"] == "ready"
    client.advance(2.0)
    assert_error(client.result(task_id), *ERRORS["unknown_task"][dialect])
    # Gone for good, and reported as gone too.
    assert client.report(task_id).json()["errorId"] != 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_poll_limit_where_documented(start, dialect):
    client = start(dialect, max_polls=3)
    task_id, _ = client.solved()
    polls = client.stats()["max_polls_per_task"]
    for _ in range(5 - polls):
        if dialect == "capmonster":
            client.advance(2.0)
        reply = client.result(task_id)
        if dialect in ("anticaptcha", "twocaptcha"):
            assert reply.json()["status"] == "ready"  # no documented limit
    if dialect in ("capsolver", "capmonster"):
        code = ERRORS["unknown_task"][dialect]
        assert_error(reply, *code)
        assert_error(client.result(task_id), *code)


def test_capmonster_takes_one_poll_per_task_every_two_seconds(start):
    client = start("capmonster")
    task_id, _ = client.solved()
    client.advance(2.0)
    assert client.result(task_id).json()["status"] == "ready"
    assert_error(client.result(task_id), 200, 1, "ERROR_TOO_MUCH_REQUESTS")
    client.advance(1.5)
    assert_error(client.result(task_id), 200, 1, "ERROR_TOO_MUCH_REQUESTS")
    client.advance(0.6)
    assert client.result(task_id).json()["status"] == "ready"
    other, _ = client.solved()  # the interval is per task
    assert client.stats()["errors_by_code"]["ERROR_TOO_MUCH_REQUESTS"] == 2
    assert other != task_id


def test_clock_only_moves_forward_and_dialect_is_fixed(start):
    client = start("anticaptcha")
    client.advance(10.0)
    for change in ({"clock_offset": 5.0}, {"dialect": "capsolver"}, {"clock_offset": -1}):
        reply = client.http.post("/_control", json={"clientKey": KEY, **change})
        assert reply.status_code == 400, change
    assert client.control()["clock_offset"] == 10.0
    assert client.stats()["dialect"] == "anticaptcha"


# --- reports and refunds ----------------------------------------------------------------

REPORT_OK = {
    "capsolver": {"errorId": 0, "errorCode": "", "errorDescription": "", "message": "ok"},
    "anticaptcha": {"errorId": 0, "status": "success"},
    "capmonster": {"errorId": 0, "status": "success"},
    "twocaptcha": {"errorId": 0, "status": "success"},
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_reports_once_per_task_where_the_provider_says_so(start, dialect):
    client = start(dialect)
    task_id, _ = client.solved()
    assert client.report(task_id).json() == REPORT_OK[dialect]
    again = client.report(task_id)
    stats = client.stats()
    listed = stats["reports_by_task"][str(task_id)]
    assert listed[0]["accepted"] is True and listed[0]["refunded"] is False
    if dialect == "anticaptcha":
        # AC-report: "Only one report can be sent per task".
        assert_error(again, 200, 16, "ERROR_NO_SUCH_CAPCHA_ID")
        assert listed[1] == {
            "kind": "incorrect",
            "accepted": False,
            "error": "ERROR_NO_SUCH_CAPCHA_ID",
        }
        assert (stats["reports"], stats["reports_refused"]) == (1, 1)
    else:
        assert again.json() == REPORT_OK[dialect]
        assert [r["accepted"] for r in listed] == [True, True]
        assert (stats["reports"], stats["reports_refused"]) == (2, 0)
    if dialect == "capsolver":
        assert listed[0]["kind"] == "feedback" and listed[0]["invalid"] is True
        assert stats["feedbacks"] == 2 and stats["feedbacks_invalid"] == 2


def test_anticaptcha_reports_only_within_60_seconds_of_completion(start):
    client = start("anticaptcha", solve_time=(0.5, 0.5))
    pending = client.create().json()["taskId"]
    assert_error(client.report(pending), 200, 16, "ERROR_NO_SUCH_CAPCHA_ID")
    client.wait_done(pending)
    late, _ = client.solved()
    client.advance(30.0)
    assert client.report(pending).json() == REPORT_OK["anticaptcha"]
    client.advance(31.0)
    assert_error(client.report(late), 200, 16, "ERROR_NO_SUCH_CAPCHA_ID")
    stats = client.stats()
    assert [r["accepted"] for r in stats["reports_by_task"][str(pending)]] == [False, True]
    assert [r["accepted"] for r in stats["reports_by_task"][str(late)]] == [False]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_report_refunds_a_wrong_answer_where_the_provider_does(start, dialect):
    # error_rate=1: every answer is made wrong, which the "moderators" confirm.
    client = start(dialect, error_rate=1.0)
    task_id, ready = client.solved()
    assert ready["solution"]["text"] != "capbatch"
    assert client.report(task_id).json()["errorId"] == 0
    stats = client.stats()
    refunds = dialect in ("anticaptcha", "twocaptcha")  # AC13, TC14
    assert stats["reports_by_task"][str(task_id)][0]["refunded"] is refunds
    assert stats["refunds"] == ({"report": 1} if refunds else {})
    assert stats["balance"] == pytest.approx(100.0 if refunds else 100.0 - PRICE)
    assert stats["charged_total"] == pytest.approx(0.0 if refunds else PRICE)
    assert stats["refunded_total"] == pytest.approx(PRICE if refunds else 0.0)
    if dialect == "twocaptcha":
        # A second report is taken, but there is nothing left to refund.
        assert client.report(task_id).json()["errorId"] == 0
        assert client.stats()["reports_by_task"][str(task_id)][1]["refunded"] is False
        assert client.stats()["refunded_total"] == pytest.approx(PRICE)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_report_of_a_right_answer_refunds_nothing(start, dialect):
    client = start(dialect)
    task_id, _ = client.solved()
    client.report(task_id)
    stats = client.stats()
    assert stats["refunds"] == {} and stats["balance"] == pytest.approx(100.0 - PRICE)


def test_twocaptcha_report_correct_is_recorded(start):
    client = start("twocaptcha", error_rate=1.0)
    task_id, _ = client.solved()
    assert client.report(task_id, "/reportCorrect").json() == REPORT_OK["twocaptcha"]
    listed = client.stats()["reports_by_task"][str(task_id)]
    assert listed == [{"kind": "correct", "accepted": True, "refunded": False}]
    assert client.stats()["refunds"] == {}


# --- bans -----------------------------------------------------------------------------


def _ban_key(client: Client) -> None:
    wrong = client.with_key("wrong-key")
    for _ in range(5):
        assert_error(wrong.balance(), 200, 1, "ERROR_KEY_DOES_NOT_EXIST")


def test_capmonster_bans_bad_keys_for_ten_minutes(start):
    client = start("capmonster")
    _ban_key(client)
    for reply in (client.balance(), client.create(), client.result(1)):
        assert_error(reply, 200, 1, "ERROR_IP_BANNED")
    stats = client.stats()
    assert stats["bans"] == {"KeyDoesntExist": 1}
    assert stats["banned"] == "KeyDoesntExist"
    assert 599.0 < stats["banned_for"] <= 600.0
    client.advance(599.0)
    assert_error(client.balance(), 200, 1, "ERROR_IP_BANNED")
    client.advance(1.5)
    assert client.balance().json() == {"errorId": 0, "balance": 100.0}
    assert client.stats()["banned"] is None


@pytest.mark.parametrize("reason", ["ZeroBalance", "WrongTaskId", "over-120-polls"])
def test_capmonster_bans_other_repeated_bad_requests(start, reason):
    client = start("capmonster", max_polls=1, balance=0 if reason == "ZeroBalance" else 100.0)
    if reason == "ZeroBalance":
        for _ in range(5):
            assert_error(client.create(), 200, 1, "ERROR_ZERO_BALANCE")
    elif reason == "WrongTaskId":
        for task_id in range(1, 6):
            assert_error(client.result(task_id), 200, 1, "ERROR_NO_SUCH_CAPCHA_ID")
    else:
        task_id, _ = client.solved()  # its one poll
        for _ in range(5):  # past the limit, then the task is gone: 5 offences
            assert_error(client.result(task_id), 200, 1, "ERROR_NO_SUCH_CAPCHA_ID")
        reason = "WrongTaskId"
    assert_error(client.balance(), 200, 1, "ERROR_IP_BLOCKED")
    assert client.stats()["bans"] == {reason: 1}


def test_capmonster_offences_count_within_a_window(start):
    client = start("capmonster")
    for task_id in range(1, 5):
        client.result(task_id)
    client.advance(61.0)
    client.result(5)
    assert client.balance().json()["errorId"] == 0
    assert client.stats()["bans"] == {}


@pytest.mark.parametrize("dialect", ["capsolver", "anticaptcha", "twocaptcha"])
def test_other_dialects_do_not_ban(start, dialect):
    client = start(dialect)
    wrong = client.with_key("wrong-key")
    for _ in range(8):
        assert_error(wrong.balance(), *ERRORS["bad_key"][dialect])
    for task_id in range(1, 9):
        client.result(task_id)
    assert client.balance().json()["errorId"] == 0
    assert client.stats()["bans"] == {} and client.stats()["banned"] is None


# --- faults, controls and callbacks in every dialect ----------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_faults_in_every_dialect(start, dialect):
    client = start(dialect, http_5xx_rate=1.0)
    reply = client.create()
    assert reply.status_code in (500, 502, 503)
    assert reply.headers["content-type"].startswith("text/html")
    client.control(http_5xx_rate=0.0, malformed_rate=1.0)
    with pytest.raises(json.JSONDecodeError):
        json.loads(client.create().content)
    client.control(malformed_rate=0.0, drop_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.create()
    client.control(drop_rate=0.0)
    stats = client.stats()
    # The drop came after the task was made and charged (drop_after_create).
    assert stats["dropped_after_create"] == 1
    assert stats["create_accepted"] == 1
    assert stats["faults"]["malformed"] == 1 and stats["faults"]["drop"] == 1
    assert client.solved()[1]["status"] == "ready"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_callback_carries_the_dialects_result(emulator, dialect, callback_hook):
    emu = emulator(
        dialect=dialect,
        deferred=1.0,
        solve_time=(0.05, 0.05),
        callback_allow=callback_hook.allow,
    )
    body = {
        "clientKey": KEY,
        "task": {"type": "ImageToTextTask", "body": b64(PNG)},
        "callbackUrl": callback_hook.url,
    }
    async with httpx.AsyncClient(base_url=emu.url, timeout=10, trust_env=False) as http:
        task_id = (await http.post("/createTask", json=body)).json()["taskId"]
        got = await callback_hook.next()
        polled = await http.post("/getTaskResult", json={"clientKey": KEY, "taskId": task_id})
        assert got == polled.json()
        assert got["status"] == "ready"
        body["callbackUrl"] = "http://127.0.0.1:9/elsewhere"
        assert (await http.post("/createTask", json=body)).json()["errorId"] == 0
    stats = emu.stats()
    assert (stats["callbacks_sent"], stats["callbacks_refused"]) == (1, 1)


def test_serve_command_speaks_the_dialect():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capbatch.emulator",
            "--dialect",
            "twocaptcha",
            "--solver",
            "constant",
            "--port",
            "0",
            "--solve-time",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CAPBATCH_EMULATOR_KEY": KEY},
        cwd=REPO,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        assert url.startswith("http://127.0.0.1:")
        body = {"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": b64(PNG)}}
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as http:
            created = http.post("/createTask", json=body).json()
            assert isinstance(created["taskId"], int) and set(created) == {"errorId", "taskId"}
            assert (
                http.post("/reportCorrect", json={"clientKey": KEY, "taskId": 1}).status_code == 200
            )
            assert http.post("/feedbackTask", json={"clientKey": KEY}).status_code == 404
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0


def test_serve_command_refuses_an_unknown_dialect():
    result = CliRunner().invoke(serve_command, ["--dialect", "deathbycaptcha"])
    assert result.exit_code == 2
    assert "capsolver" in result.output and "twocaptcha" in result.output
