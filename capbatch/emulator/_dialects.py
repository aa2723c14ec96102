"""What the emulator says in each provider's protocol: one ``Dialect`` per provider.

``capbatch serve --dialect NAME`` picks one; the one app (``_app.py``) reads everything
that differs between providers from it: endpoints, task ids, statuses, the reply fields,
the developer-id field, image limits, retention, the error codes with their ``errorId``
and HTTP status, reports, refunds and bans. Nothing here is code per provider.

Sources are named as in ``docs/providers.md`` (its "Sources" table: CS-*, AC-*, CM-*,
TC-*, SDK-*) and ``/work/shared/docs/protocol.md``. Where no source states a value, the
comment says "emulator's choice": it is what this emulator does, not a provider fact.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

DialectName = Literal["capsolver", "anticaptcha", "capmonster", "twocaptcha"]
DIALECT_NAMES: tuple[str, ...] = get_args(DialectName)

#: What a report endpoint says about a task's answer.
ReportKind = Literal["feedback", "incorrect", "correct"]
#: What happens to the price of an unsolvable task.
Unsolvable = Literal["free", "charged", "refunded"]

#: Every situation that ends in an error reply; each dialect maps it to its own code.
Role = Literal[
    "bad_json",  # createTask's body is not a JSON object
    "bad_request",  # another endpoint's body is not a JSON object
    "bad_key",
    "zero_balance",
    "no_task",  # createTask without a task object
    "no_type",  # task.type missing
    "unsupported",  # a task type the emulator does not solve
    "no_body",  # task.body missing or empty
    "bad_image",  # not base64, or not an image
    "too_small",
    "too_big",
    "bad_field",  # another createTask field of the wrong type (callbackUrl)
    "unknown_task",  # getTaskResult / report: no such task id (never made, or gone)
    "task_gone",  # getTaskResult past the per-task poll limit
    "poll_too_soon",  # a second poll of one task inside the minimum interval
    "unsolvable",
    "unavailable",  # the injected "service unavailable" fault
    "rate_limit",  # the injected request-rate limit
    "not_reportable",  # a report the provider does not take (task not finished)
    "reported_twice",
    "no_result",  # feedbackTask without its result object
    "banned_key",  # banned after repeated bad keys
    "banned",  # banned for another reason
]


@dataclass(frozen=True)
class BanRule:
    """Temporary bans for repeated bad requests: ``strikes`` offences of one reason
    within ``window`` seconds ban every request for ``duration`` seconds (all on the
    emulator's clock, so a test moves past a ban with ``clock_offset``)."""

    strikes: int
    window: float
    duration: float


def _frozen(**items: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class Dialect:
    """One provider's protocol as the emulator speaks it."""

    name: str
    #: Report endpoints: path -> what a report there says.
    reports: Mapping[str, ReportKind]
    #: "uuid": a UUID4 string per task; "int": integers counting up from ``id_start``.
    id_kind: Literal["uuid", "int"]
    codes: Mapping[str, str]
    id_start: int = 0
    #: Recognition tasks answered in the createTask reply (``status: "ready"``) unless
    #: the ``deferred`` option defers them; otherwise every task is deferred.
    answers_in_create: bool = False
    #: The developer-id field createTask takes, and its JSON type.
    developer_id: str = "softId"
    developer_id_type: type = int
    #: Fields every success reply starts with.
    ok: Mapping[str, Any] = field(default_factory=lambda: _frozen(errorId=0))
    #: Extra fields of a "processing" reply (CapMonster's example sends nulls).
    pending_extra: Mapping[str, Any] = field(default_factory=_frozen)
    #: Pending getTaskResult replies say "idle" before "processing" (CapSolver).
    idle_status: bool = False
    #: getTaskResult replies repeat the ``taskId``.
    echo_task_id: bool = False
    #: The ``status`` an unsolvable task's error reply carries (None: no status).
    failed_status: str | None = None
    #: The ready reply carries ``cost`` (a string with this many decimals), ``ip``,
    #: ``createTime``, ``endTime`` and ``solveCount``.
    result_extras: bool = False
    cost_decimals: int = 6
    solve_count_as_text: bool = False
    balance_extra: Mapping[str, Any] = field(default_factory=_frozen)
    #: The ready reply's solution also carries the image's ``url`` (Anti-Captcha).
    solution_url: bool = False
    #: Fields an endpoint's error replies add, and endpoints whose error replies carry
    #: no ``errorDescription`` (both as each provider's examples show them).
    error_extras: Mapping[str, Mapping[str, Any]] = field(default_factory=_frozen)
    bare_error_endpoints: frozenset[str] = frozenset()
    #: errorId per errorCode (1 when not listed), HTTP status per code (else default).
    error_ids: Mapping[str, int] = field(default_factory=_frozen)
    statuses: Mapping[str, int] = field(default_factory=_frozen)
    default_error_status: int = 200
    #: Decoded image bytes accepted (inclusive) and the longest side in pixels.
    min_image_bytes: int | None = None
    max_image_bytes: int | None = None
    max_image_side: int | None = None
    #: Seconds a finished task stays queryable after it finished (None: until the
    #: ``task_ttl`` option, counted from creation, ends it).
    done_ttl: float | None = None
    #: Whether the ``max_polls`` option applies, and the least seconds between two
    #: polls of one task.
    poll_limit: bool = True
    min_poll_interval: float | None = None
    #: Reports: one per task at most; only within ``report_window`` seconds of the
    #: task's completion; only once it finished; a confirmed wrong answer refunded.
    report_once: bool = False
    report_window: float | None = None
    report_needs_done: bool = False
    report_refunds: bool = False
    #: What an accepted report's reply adds to the success fields.
    report_reply: Mapping[str, Any] = field(default_factory=lambda: _frozen(status="success"))
    unsolvable: Unsolvable = "free"
    ban: BanRule | None = None

    def code(self, role: Role) -> str:
        return self.codes[role]

    def error_id(self, code: str) -> int:
        return self.error_ids.get(code, 1)

    def status(self, code: str) -> int:
        return self.statuses.get(code, self.default_error_status)

    def new_id(self, serial: int) -> str:
        """The key of the ``serial``-th task (0-based); ``wire_id`` gives its JSON."""
        if self.id_kind == "uuid":
            return str(uuid.uuid4())
        return str(self.id_start + serial)

    def wire_id(self, key: str) -> str | int:
        return int(key) if self.id_kind == "int" else key

    def read_id(self, value: object) -> str | None:
        """A request's ``taskId`` as a task key; None when it has the wrong JSON type
        (documented types: CS-result string; AC-result, CM-result, TC-result Integer)."""
        if self.id_kind == "uuid":
            return value if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return None


# --- CapSolver --------------------------------------------------------------------------

#: CapSolver's codes: CS-errors (English and Chinese editions); protocol.md "Errors".
_CS_CODES: Mapping[str, str] = _frozen(
    bad_json="ERROR_INVALID_TASK_DATA",  # CS-errors: incorrect data
    bad_request="ERROR_BAD_REQUEST",  # CS-errors: request error
    bad_key="ERROR_KEY_DENIED_ACCESS",  # CS-errors: wrong account key
    zero_balance="ERROR_ZERO_BALANCE",  # CS-errors
    no_task="ERROR_INVALID_TASK_DATA",
    no_type="ERROR_INVALID_TASK_DATA",
    unsupported="ERROR_TASK_NOT_SUPPORTED",  # CS-errors
    no_body="ERROR_INVALID_TASK_DATA",
    bad_image="ERROR_INVALID_IMAGE",  # CS-errors: image does not meet the requirements
    too_small="ERROR_INVALID_IMAGE",  # no limit enforced (CS18 unconfirmed)
    too_big="ERROR_INVALID_IMAGE",
    bad_field="ERROR_INVALID_TASK_DATA",
    unknown_task="ERROR_TASKID_INVALID",  # CS-errors: task id wrong or gone
    task_gone="ERROR_TASKID_INVALID",  # CS-result limit 1: past 120 queries the result is lost
    poll_too_soon="ERROR_RATE_LIMIT",  # not used: no poll interval is enforced
    unsolvable="ERROR_CAPTCHA_UNSOLVABLE",  # CS-errors: not charged
    unavailable="ERROR_SERVICE_UNAVALIABLE",  # sic, CS-errors
    rate_limit="ERROR_RATE_LIMIT",  # CS-errors: over the package's request rate
    not_reportable="ERROR_TASKID_INVALID",  # not used (feedback takes any live task)
    reported_twice="ERROR_TASKID_INVALID",  # not used (no once-per-task rule in CS-feedback)
    no_result="ERROR_INVALID_TASK_DATA",  # CS-feedback: result.invalid is required
    banned_key="ERROR_KEY_DENIED_ACCESS",  # not used: no ban rule modelled for CapSolver
    banned="ERROR_IP_BANNED",  # not used
)

CAPSOLVER = Dialect(
    name="capsolver",
    reports=_frozen(**{"/feedbackTask": "feedback"}),  # CS-feedback
    id_kind="uuid",  # CS4: taskId is a UUID string
    codes=_CS_CODES,
    answers_in_create=True,  # CS5: recognition tasks answer in createTask
    developer_id="appId",  # P4, CS-create: appId string
    developer_id_type=str,
    ok=_frozen(errorId=0, errorCode="", errorDescription=""),  # CS-create examples
    idle_status=True,  # CS7: idle, processing, ready
    echo_task_id=True,  # CS-create synchronous example carries taskId
    # CS8: SDK-p3c has a "failed" status; python3-capsolver needs it to stop polling.
    failed_status="failed",
    balance_extra=_frozen(packages=()),  # CS23: balance and packages
    # CS25: HTTP 400 with errorId 1 for errors, 401 for a bad key; 429 from SDK-capsolver.
    statuses=_frozen(ERROR_KEY_DENIED_ACCESS=401, ERROR_RATE_LIMIT=429),
    default_error_status=400,
    report_reply=_frozen(message="ok"),  # CS-feedback: the reply has a message
    unsolvable="free",  # CS20: ERROR_CAPTCHA_UNSOLVABLE is not charged
)

# --- the API v2 family: Anti-Captcha, CapMonster Cloud, 2Captcha ---------------------------

#: errorId of each code in the numbered tables of AC-errors and TC-errors (the rows are
#: the same in both; AC's row 22, cut from the stored English copy, as its other editions
#: and SDKs mirroring the page give it). CapMonster sends errorId 1 for every error
#: (CM-create, CM-result "Response structure"), so its table is empty.
_NUMBERED: Mapping[str, int] = _frozen(
    ERROR_KEY_DOES_NOT_EXIST=1,
    ERROR_NO_SLOT_AVAILABLE=2,
    ERROR_ZERO_CAPTCHA_FILESIZE=3,
    ERROR_TOO_BIG_CAPTCHA_FILESIZE=4,
    ERROR_ZERO_BALANCE=10,
    ERROR_CAPTCHA_UNSOLVABLE=12,  # TC-result's example: "errorId": 12
    ERROR_IMAGE_TYPE_NOT_SUPPORTED=15,
    ERROR_NO_SUCH_CAPCHA_ID=16,  # AC-report's example: "errorId": 16
    ERROR_TASK_ABSENT=22,
    ERROR_TASK_NOT_SUPPORTED=23,
)

#: Codes shared by Anti-Captcha (AC-errors rows), 2Captcha (TC-errors rows) and, unless
#: overridden, CapMonster (CM-errors headings).
_V2_CODES: dict[str, str] = dict(
    # A body that is not JSON has no task (CM-errors ERROR_TASK_ABSENT: "the task object
    # is missing ... or the JSON is invalid"); elsewhere it has no key (row 1).
    bad_json="ERROR_TASK_ABSENT",
    bad_request="ERROR_KEY_DOES_NOT_EXIST",
    bad_key="ERROR_KEY_DOES_NOT_EXIST",  # row 1; CM "INVALID KEY"
    zero_balance="ERROR_ZERO_BALANCE",  # row 10; CM "NO FUNDS"
    no_task="ERROR_TASK_ABSENT",  # row 22: task property missing; CM ERROR_TASK_ABSENT
    no_type="ERROR_TASK_NOT_SUPPORTED",  # row 23: "an error in type property"
    unsupported="ERROR_TASK_NOT_SUPPORTED",  # row 23; CM "INCORRECT TASK TYPE"
    no_body="ERROR_ZERO_CAPTCHA_FILESIZE",  # row 3: under 100 bytes (an empty body is 0)
    bad_image="ERROR_IMAGE_TYPE_NOT_SUPPORTED",  # row 15
    too_small="ERROR_ZERO_CAPTCHA_FILESIZE",  # row 3; CM "ZERO IMAGE SIZE"
    too_big="ERROR_TOO_BIG_CAPTCHA_FILESIZE",  # row 4; CM "BIG IMAGE SIZE"
    bad_field="ERROR_TASK_ABSENT",  # emulator's choice: a malformed createTask
    unknown_task="ERROR_NO_SUCH_CAPCHA_ID",  # row 16; CM "CAPTCHA ID IS NOT FOUND"
    task_gone="ERROR_NO_SUCH_CAPCHA_ID",
    poll_too_soon="ERROR_TOO_MUCH_REQUESTS",  # CM-errors "REQUEST LIMIT EXCEEDED"
    unsolvable="ERROR_CAPTCHA_UNSOLVABLE",  # row 12; CM "CAPTCHA UNSOLVABLE"
    unavailable="ERROR_NO_SLOT_AVAILABLE",  # row 2; CM "NO FREE SERVERS"
    # Emulator's choice: none of the three documents a request-rate code; row 2 ("we
    # temporarily do not accept more captchas from you", TC-errors) is the closest.
    rate_limit="ERROR_NO_SLOT_AVAILABLE",
    # AC-report: late reports get ERROR_NO_SUCH_CAPCHA_ID; the code of a second report
    # or of one before completion is not documented (emulator's choice: the same).
    not_reportable="ERROR_NO_SUCH_CAPCHA_ID",
    reported_twice="ERROR_NO_SUCH_CAPCHA_ID",
    no_result="ERROR_TASK_ABSENT",  # not used (no result object in these reports)
    banned_key="ERROR_IP_BANNED",  # CM-errors "IP BANNED": too many requests with a wrong key
    banned="ERROR_IP_BLOCKED",  # CM-errors "YOUR IP IS BLOCKED": many failed requests
)

ANTICAPTCHA = Dialect(
    name="anticaptcha",
    reports=_frozen(**{"/reportIncorrectImageCaptcha": "incorrect"}),  # AC-report
    id_kind="int",  # AC3
    id_start=100_000_000,  # emulator's choice (AC-create's example id is 7654321)
    codes=_frozen(**_V2_CODES),
    developer_id="softId",  # AC-create: softId Integer
    developer_id_type=int,
    result_extras=True,  # AC10
    solution_url=True,  # AC-result example: solution {"text": ..., "url": ...}
    balance_extra=_frozen(captchaCredits=0),  # AC-balance: captchaCredits, an Integer
    cost_decimals=6,  # AC-result example: "cost":"0.000700"
    solve_count_as_text=True,  # AC-result example: "solveCount":"0" (a string)
    error_ids=_NUMBERED,
    # AC15: the HTTP status of error replies is unconfirmed; 200 with errorId > 0.
    default_error_status=200,
    min_image_bytes=100,  # AC8, AC-errors row 3
    max_image_bytes=500_000,  # AC8, AC-errors row 4
    done_ttl=60.0,  # AC7, AC-errors row 16: removed 60 s after the worker completes it
    poll_limit=False,  # AC6: no documented per-task poll limit
    report_once=True,  # AC13: "Only one report can be sent per task"
    report_window=60.0,  # AC13: within 60 s of task completion
    report_needs_done=True,
    report_refunds=True,  # AC13: refund if 2 of 3 moderators confirm the mistake
    unsolvable="charged",  # AC11, AC-errors row 12: customers pay for unsolvable tasks
)

CAPMONSTER = Dialect(
    name="capmonster",
    reports=_frozen(**{"/reportIncorrectImageCaptcha": "incorrect"}),  # CM-report
    id_kind="int",  # CM3
    id_start=7_000_000,  # emulator's choice (CM-create's example id is 7654321)
    codes=_frozen(
        **{
            **_V2_CODES,
            # CM-errors has no image-type code; "CAPTCHA UNSOLVABLE" names an empty or
            # damaged image as a reason.
            "bad_image": "ERROR_CAPTCHA_UNSOLVABLE",
        }
    ),
    # Not on CM-create; CM-threshold's example body sends "softId": 345, and SDK-cm
    # CapMonsterCloudClient._createTask an int (clientOptions.default_soft_id).
    developer_id="softId",
    developer_id_type=int,
    pending_extra=_frozen(errorCode=None, errorDescription=None),  # CM-result example
    # CM-create's error example carries "taskId": 0 (its structure: Required); CM-report's
    # error example and structure have errorId and errorCode only.
    error_extras=_frozen(**{"/createTask": _frozen(taskId=0)}),
    bare_error_endpoints=frozenset({"/reportIncorrectImageCaptcha"}),
    # CM17: no page states HTTP statuses; SDK-cm reads error replies only from HTTP 200.
    default_error_status=200,
    min_image_bytes=100,  # CM10, CM-errors "ZERO IMAGE SIZE"
    max_image_bytes=50_000,  # CM9, CM-errors "BIG IMAGE SIZE": 50 KB
    poll_limit=True,  # CM5: 120 getTaskResult requests per task
    min_poll_interval=2.0,  # CM6: at most one poll per task every 2 s
    unsolvable="free",  # CM12: funds are deducted only for solved captchas
    # CM16, CM-ban: bad keys, zero balance, over 120 polls, wrong task ids: 10 minutes.
    # How many offences make "multiple" is not stated: 5 in 60 s is the emulator's choice.
    ban=BanRule(strikes=5, window=60.0, duration=600.0),
)

TWOCAPTCHA = Dialect(
    name="twocaptcha",
    # TC-report; reportCorrect is API v2's positive report (2Captcha's "How to submit
    # reports"), accepted and recorded.
    reports=_frozen(**{"/reportIncorrect": "incorrect", "/reportCorrect": "correct"}),
    id_kind="int",  # TC3
    id_start=72_000_000_000,  # 11 digits like TC-create's example 72345678901
    codes=_frozen(**_V2_CODES),
    developer_id="softId",  # TC-create: softId Integer
    developer_id_type=int,
    result_extras=True,  # TC11
    cost_decimals=5,  # TC-result example: "cost": "0.00299"
    error_ids=_NUMBERED,
    default_error_status=200,  # TC16 (unconfirmed): error replies are HTTP 200
    min_image_bytes=100,  # TC-errors row 3
    max_image_bytes=100_000,  # TC7: 100 kB
    # TC-image: 1000 px on any side (TC-errors row 4 says 600 px; the pages disagree, G3).
    max_image_side=1000,
    poll_limit=False,  # TC6: no documented per-task poll limit
    report_refunds=True,  # TC14: refunds after review, not guaranteed
    unsolvable="refunded",  # TC12: "the captcha price is automatically returned"
)

DIALECTS: Mapping[str, Dialect] = MappingProxyType(
    {d.name: d for d in (CAPSOLVER, ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA)}
)
