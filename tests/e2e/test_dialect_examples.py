"""The emulator's dialects against the request and reply examples of the providers'
own API documentation (and, where a provider's SDK cannot be pointed at another server,
the exact JSON that SDK sends).

Each fixture under ``tests/fixtures/providers/<dialect>/`` holds one documented example:
``source`` (the page or repository file and section it was copied from), ``method``
(the endpoint), ``situation`` (what the emulator must be made to do for the example to
apply), ``request`` and ``reply`` (as the documentation shows them, placeholders and
all; ``reply`` is null where the page documents no example reply). Optional:
``number_keys`` (reply keys the page types as Double/Decimal, so an integer and a
fraction are the same JSON type there) and ``structure_keys`` (reply keys the page's
"Response structure" table lists beside those of its example, so the reply may carry
them).

The documented request is sent over real HTTP to an emulator on 127.0.0.1 speaking the
fixture's dialect, with the emulator's key in ``clientKey`` (a wrong key for a
``bad_key`` example), a real small PNG in ``task.body`` and the id of a real task in
``taskId`` (after checking that the documented id has the JSON type the emulator's ids
have); every other field is sent as documented. The reply must have the documented
shape: the same keys (nested objects too; an empty documented object stands for "an
object of the task type's own format"), the same JSON type per key, and the same fixed
values (``errorId``, ``errorCode``, ``status``).

Every request has a 10 s timeout; every wait is bounded in count and in time.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from capbatch.emulator import EmulatorHandle

pytestmark = pytest.mark.e2e

KEY = "test-key"
WRONG_KEY = "not-the-emulator-key"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
DIALECTS = ("capsolver", "anticaptcha", "capmonster", "twocaptcha")
#: Reply keys whose documented value is a fixed part of the protocol, not sample data.
FIXED = ("errorId", "errorCode", "status")
SITUATIONS = (
    "create",
    "bad_key",
    "balance",
    "result_ready",
    "result_processing",
    "result_unsolvable",
    "report",
    "feedback",
)

#: Fixtures whose example the emulator is known not to match: reported gaps of the
#: emulator (capbatch/emulator/_dialects.py, _replies.py), not fixed here. Strict: a
#: fixed gap makes its test pass, and then its entry must go.
KNOWN_GAPS: dict[str, str] = {}


def _png() -> bytes:
    """A small real captcha-like PNG (a few hundred bytes: inside every dialect's
    size limits)."""
    image = Image.new("RGB", (120, 40), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    draw.text((10, 12), "x7k2p", fill=(20, 20, 60))
    draw.line((0, 32, 120, 6), fill=(120, 120, 120))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


PNG_B64 = base64.b64encode(_png()).decode("ascii")


def _load() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        found.append((f"{path.parent.name}/{path.stem}", json.loads(path.read_text("utf-8"))))
    return found


EXAMPLES = _load()


def _params() -> list[Any]:
    params = []
    for name, example in EXAMPLES:
        marks = []
        if name in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=True))
        params.append(pytest.param(name, example, id=name, marks=marks))
    return params


# --- comparing a reply with a documented one ---------------------------------------------


def json_type(value: object, number: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number" if number else "integer"
    if isinstance(value, float):
        return "number" if number else "fraction"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def shape_errors(
    documented: Any,
    got: Any,
    path: str = "",
    number_keys: frozenset[str] = frozenset(),
    structure_keys: frozenset[str] = frozenset(),
) -> list[str]:
    """Where ``got`` does not have ``documented``'s shape, one line per difference."""
    here = path or "reply"
    key = path.rsplit(".", 1)[-1]
    number = key in number_keys
    if json_type(documented, number) != json_type(got, number):
        return [
            f"{here}: documented {json_type(documented, number)} "
            f"({documented!r}), got {json_type(got, number)} ({got!r})"
        ]
    errors: list[str] = []
    if isinstance(documented, dict) and documented:
        allowed = set(documented) | (structure_keys if not path else set())
        missing = sorted(set(documented) - set(got))
        extra = sorted(set(got) - allowed)
        if missing:
            errors.append(f"{here}: documented keys missing: {missing}")
        if extra:
            errors.append(f"{here}: keys not in the documented example: {extra}")
        for name in sorted(set(documented) & set(got)):
            sub = f"{path}.{name}" if path else name
            errors += shape_errors(documented[name], got[name], sub, number_keys)
            if not path and name in FIXED and documented[name] != got[name]:
                errors.append(f"{sub}: documented {documented[name]!r}, got {got[name]!r}")
    elif isinstance(documented, list) and documented and got:
        errors += shape_errors(documented[0], got[0], f"{path}[0]", number_keys)
    return errors


def test_shape_errors_catch_what_they_should():
    documented = {"errorId": 0, "taskId": 7, "cost": "0.1", "solution": {"text": "a"}}
    assert shape_errors(documented, dict(documented)) == []
    assert shape_errors({"solution": {}}, {"solution": {"text": "x"}}) == []
    assert shape_errors({"b": 1.5}, {"b": 2}, number_keys=frozenset({"b"})) == []
    wrong = {"errorId": 1, "taskId": "7", "cost": 0.1, "solution": {}, "extra": None}
    errors = shape_errors(documented, wrong)
    assert any(e.startswith("taskId: documented integer") for e in errors)
    assert any(e.startswith("cost: documented string") for e in errors)
    assert any(e.startswith("errorId: documented 0") for e in errors)
    assert any("solution: documented keys missing: ['text']" in e for e in errors)
    assert any("['extra']" in e for e in errors)
    assert shape_errors({"a": 1}, {"a": 1, "b": 2}, structure_keys=frozenset({"b"})) == []


def test_every_fixture_names_its_source_and_a_known_situation():
    assert {name.split("/")[0] for name, _ in EXAMPLES} == set(DIALECTS)
    for name, example in EXAMPLES:
        assert example["source"].strip(), name
        assert example["situation"] in SITUATIONS, name
        assert isinstance(example["request"], dict), name
        assert example["reply"] is None or isinstance(example["reply"], dict), name
        if example["reply"] is None:
            assert example.get("structure_keys"), name
    for name in KNOWN_GAPS:
        assert name in dict(EXAMPLES), name


# --- sending a documented request -------------------------------------------------------


class Dialect:
    """One emulator and the calls a fixture needs before its own request."""

    def __init__(self, handle: EmulatorHandle, dialect: str) -> None:
        self.dialect = dialect
        self.http = httpx.Client(base_url=handle.url, timeout=10.0, trust_env=False)
        self.offset = 0.0

    def post(self, method: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/{method}", json=body)

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock (CapMonster takes one poll per task every 2 s)."""
        self.offset += seconds
        reply = self.http.post("/_control", json={"clientKey": KEY, "clock_offset": self.offset})
        assert reply.status_code == 200, reply.text

    def create(self) -> Any:
        task = {"type": "ImageToTextTask", "body": PNG_B64}
        reply = self.post("createTask", {"clientKey": KEY, "task": task}).json()
        assert reply["errorId"] == 0, reply
        return reply["taskId"]

    def wait_done(self, task_id: Any) -> dict[str, Any]:
        """Poll until the task is no longer pending (at most 100 polls and 5 s)."""
        deadline = time.monotonic() + 5.0
        reply: dict[str, Any] = {}
        for _ in range(100):
            if self.dialect == "capmonster":
                self.advance(2.0)
            reply = self.post("getTaskResult", {"clientKey": KEY, "taskId": task_id}).json()
            if reply.get("status") not in ("idle", "processing") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return reply


@pytest.fixture
def start(emulator: Callable[..., EmulatorHandle]) -> Iterator[Callable[..., Dialect]]:
    clients: list[Dialect] = []

    def make(dialect: str, **options: Any) -> Dialect:
        options.setdefault("solve_time", (0.0, 0.0))
        client = Dialect(emulator(dialect=dialect, api_key=KEY, **options), dialect)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.http.close()


#: Emulator options per situation: a task that stays pending, one that workers cannot
#: solve; CapSolver answers image tasks in createTask unless deferred.
OPTIONS: dict[str, dict[str, Any]] = {
    "result_processing": {"solve_time": (30.0, 30.0)},
    "result_unsolvable": {"unsolvable_rate": 1.0},
}


def prepare(client: Dialect, example: dict[str, Any]) -> dict[str, Any]:
    """The documented request with the emulator's key, a real image and a real task id."""
    request = copy.deepcopy(example["request"])
    situation = example["situation"]
    request["clientKey"] = WRONG_KEY if situation == "bad_key" else KEY
    task = request.get("task")
    if isinstance(task, dict) and "body" in task:
        task["body"] = PNG_B64
    if "taskId" in request:
        if situation == "bad_key":
            return request  # the key is refused before the id is looked at
        task_id = client.create()
        documented = request["taskId"]
        if not (isinstance(documented, str) and documented.startswith("$")):
            # The documented id is of the JSON type the emulator's ids are ("$taskId"
            # in CapSolver's feedback example is a template variable, not a value).
            assert json_type(documented) == json_type(task_id), (documented, task_id)
        if situation in ("result_ready", "result_unsolvable", "report", "feedback"):
            client.wait_done(task_id)
        if client.dialect == "capmonster" and situation.startswith("result_"):
            client.advance(2.0)
        request["taskId"] = task_id
    return request


@pytest.mark.parametrize(("name", "example"), _params())
def test_documented_example(start, name, example):
    dialect = name.split("/")[0]
    options = dict(OPTIONS.get(example["situation"], {}))
    if dialect == "capsolver" and example["situation"].startswith("result_"):
        options["deferred"] = 1.0
    client = start(dialect, **options)
    request = prepare(client, example)
    reply = client.post(example["method"], request)
    assert reply.headers["content-type"].startswith("application/json"), reply.text
    got = reply.json()
    if example["reply"] is None:
        # No documented reply: its keys are those of the page's response structure.
        assert got.get("errorId") == 0, got
        assert set(got) <= set(example["structure_keys"]), got
        return
    errors = shape_errors(
        example["reply"],
        got,
        number_keys=frozenset(example.get("number_keys", ())),
        structure_keys=frozenset(example.get("structure_keys", ())),
    )
    assert not errors, f"{name} ({example['source']}):\n  " + "\n  ".join(errors)
    if example["reply"].get("errorId") == 0:
        assert reply.status_code == 200, reply.status_code


def test_2captchas_own_example_image_is_under_its_own_minimum(start):
    """The normal-captcha page's example body is a 43-byte GIF; the error-codes page
    refuses images under 100 bytes (row 3), and so does the emulator."""
    example = dict(EXAMPLES)["twocaptcha/createTask_ImageToTextTask"]
    body = example["request"]["task"]["body"]
    assert len(base64.b64decode(body)) < 100
    client = start("twocaptcha")
    request = copy.deepcopy(example["request"])
    request["clientKey"] = KEY
    got = client.post("createTask", request).json()
    assert (got["errorId"], got["errorCode"]) == (3, "ERROR_ZERO_CAPTCHA_FILESIZE"), got
