"""Provider profiles: everything that differs between services speaking the task protocol.

Every value here is listed, with its source, in ``docs/providers.md`` (one section per
provider: "CapSolver", "Anti-Captcha", "CapMonster Cloud", "2Captcha"). Facts marked
*unconfirmed* there live here and only here, so a correction is a one-line change. Where a
value is a guess it says so in a comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from capbatch._exceptions import APIError, ConfigError

TaskIdType = Literal["str", "int"]
ReportStyle = Literal["feedback", "incorrect_image", "none"]
#: The createTask field that carries the developer id (``--app-id``).
DeveloperIdField = Literal["appId", "softId"]


@dataclass(frozen=True)
class PollSchedule:
    """When to ask ``getTaskResult`` for a deferred task.

    The first poll comes ``first_delay`` seconds after ``createTask`` returned; later
    polls every ``interval`` seconds, never more than ``max_polls`` per task and never
    after ``task_ttl`` seconds from creation (the provider forgets the task then).
    ``min_interval`` is the provider's floor between two polls of one task, whatever
    the path to the next poll (an error, a retry). ``result_ttl``, when the provider
    forgets a task some seconds after it *finished* (Anti-Captcha: 60 s), bounds the
    gaps between polls (``max_gap``) and how old a task a resumed run may still poll
    (``retention``).
    """

    first_delay: float
    interval: float
    max_polls: int = 120
    task_ttl: float = 300.0
    min_interval: float = 0.0
    result_ttl: float | None = None

    def __post_init__(self) -> None:
        if self.interval < self.min_interval:
            raise ValueError("a poll schedule's interval is under its own floor")

    @property
    def retention(self) -> float:
        """Seconds from creation during which a task is surely still there: its lifetime,
        or, when a finished task is kept only ``result_ttl``, that much (a task may have
        finished at once)."""
        if self.result_ttl is None:
            return self.task_ttl
        return min(self.task_ttl, self.result_ttl)

    @property
    def max_gap(self) -> float:
        """The longest a task may wait between two polls (or before its first) so that a
        finished task is never forgotten before it is polled: a quarter of what the
        provider keeps, never under the floor or the interval."""
        return max(self.interval, self.min_interval, self.retention / 4)


@dataclass(frozen=True)
class ProviderProfile:
    """One provider's protocol facts. ``local`` is a profile too, with no base URL."""

    name: str
    base_url: str
    key_env_var: str | None
    #: Other hosts serving the same API, tried after the main one fails to connect.
    fallback_urls: tuple[str, ...] = ()
    #: CapSolver's ids are UUID strings; the others use integers.
    task_id_type: TaskIdType = "int"
    #: Statuses meaning "not ready yet" in a getTaskResult reply.
    pending_statuses: frozenset[str] = frozenset({"idle", "processing"})
    poll: PollSchedule = PollSchedule(first_delay=1.0, interval=2.0)
    #: Accepted decoded image size in bytes, inclusive.
    min_image_bytes: int = 1
    max_image_bytes: int = 500_000
    #: USD per task by task type; ``"*"`` is the fallback for other types.
    prices: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: Whether getTaskResult/createTask replies carry a ``cost`` field.
    cost_in_reply: bool = False
    #: Whether an ``ERROR_CAPTCHA_UNSOLVABLE`` outcome is charged.
    unsolvable_charged: bool = False
    #: The createTask field carrying the developer id: CapSolver's ``appId`` (a string),
    #: the others' ``softId`` (an integer); None: not sent. ``protocol.developer_id``.
    developer_id_field: DeveloperIdField | None = None
    #: This provider's own meaning of an error code, where it differs from the one
    #: table (``errors.ERROR_CODES``); each entry and its source in docs/providers.md.
    error_classes: Mapping[str, type[APIError]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Seconds to hold every request back after an error code the provider documents a
    #: wait for, when its reply carries no ``Retry-After`` (2Captcha: 5 s after no slot).
    error_waits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: Accepted largest side of an image in pixels; None: not checked.
    max_image_side: int | None = None
    #: Endpoint and body style for reporting a wrong answer.
    report_endpoint: str | None = None
    report_style: ReportStyle = "none"
    #: Seconds after a task finished during which a report is accepted; None: no window
    #: documented (the report is sent, and a late one is refused by the provider).
    report_window: float | None = None
    has_balance: bool = True
    #: A conservative default request rate (requests/s) and in-flight cap.
    default_rate: float = 10.0
    default_max_in_flight: int = 20

    def price_for(self, task_type: str) -> float:
        """The table price of one task of ``task_type`` in USD (0 when unknown)."""
        if task_type in self.prices:
            return self.prices[task_type]
        return self.prices.get("*", 0.0)

    def task_id_for_request(self, task_id: str) -> str | int:
        """The task id in the JSON type the provider expects back."""
        if self.task_id_type == "int":
            try:
                return int(task_id)
            except ValueError:
                return task_id
        return task_id

    @property
    def is_local(self) -> bool:
        return self.name == "local"


def _prices(**by_type: float) -> Mapping[str, float]:
    return MappingProxyType(dict(by_type))


CAPSOLVER = ProviderProfile(
    name="capsolver",
    base_url="https://api.capsolver.com",
    fallback_urls=("https://api-stable.capsolver.com",),
    key_env_var="CAPSOLVER_API_KEY",
    task_id_type="str",
    # The live service has been seen to answer "idle" as well as "processing".
    pending_statuses=frozenset({"idle", "processing"}),
    # docs/providers.md, "CapSolver" (CS9-CS13): 120 queries per task, 5 minutes to query;
    # the docs say to retry a processing task after 3 s (Known gaps, G4).
    poll=PollSchedule(first_delay=1.0, interval=2.0, max_polls=120, task_ttl=300.0),
    # Image size limit: *unconfirmed*; 500 kB matches the strictest peer that states one
    # and comfortably covers captcha images.
    max_image_bytes=500_000,
    developer_id_field="appId",  # CS-create, a string
    # Price per ImageToText task: *unconfirmed* (CapSolver lists about $0.4 per 1000).
    prices=_prices(ImageToTextTask=0.0004, VisionEngine=0.0004, **{"*": 0.0008}),
    cost_in_reply=False,
    unsolvable_charged=False,
    report_endpoint="/feedbackTask",
    report_style="feedback",
    # CapSolver's per-key rate is *unconfirmed*; stay well under common limits.
    default_rate=10.0,
    default_max_in_flight=50,
)

ANTICAPTCHA = ProviderProfile(
    name="anticaptcha",
    base_url="https://api.anti-captcha.com",
    key_env_var="ANTICAPTCHA_API_KEY",
    task_id_type="int",
    pending_statuses=frozenset({"processing", "idle"}),
    # A finished task is removed 60 s after the worker completes it (AC7, AC-errors row 16):
    # polls stay under a quarter of that apart, a resumed run polls only younger tasks.
    poll=PollSchedule(
        first_delay=1.0, interval=2.0, max_polls=120, task_ttl=300.0, result_ttl=60.0
    ),
    # 100 to 500,000 bytes (AC8, AC-errors rows 3 and 4).
    min_image_bytes=100,
    max_image_bytes=500_000,
    developer_id_field="softId",  # AC-create, an integer
    # docs/providers.md, "Anti-Captcha" (AC12): the docs' example cost of an image task is
    # "0.000700"; the price itself is *unconfirmed*.
    prices=_prices(ImageToTextTask=0.0007, **{"*": 0.002}),
    cost_in_reply=True,
    unsolvable_charged=True,
    report_endpoint="/reportIncorrectImageCaptcha",
    report_style="incorrect_image",
    # AC13, AC-report: "Reports must be sent within 60 seconds of task completion".
    report_window=60.0,
)

CAPMONSTER = ProviderProfile(
    name="capmonster",
    base_url="https://api.capmonster.cloud",
    key_env_var="CAPMONSTER_API_KEY",
    task_id_type="int",
    pending_statuses=frozenset({"processing", "idle"}),
    # First poll after about 0.3 s; at most one poll per 2 s per task, a floor no path to
    # the next poll goes under (CM6, CM-errors); 120 per task.
    poll=PollSchedule(
        first_delay=0.3, interval=2.0, max_polls=120, task_ttl=300.0, min_interval=2.0
    ),
    # 100 bytes to 50 KB (CM9, CM10, CM-errors "ZERO IMAGE SIZE", "BIG IMAGE SIZE").
    min_image_bytes=100,
    max_image_bytes=50_000,
    developer_id_field="softId",  # CM-threshold's example body; SDK-cm, an integer
    # Price: *unconfirmed* (about $0.3 per 1000 image tasks).
    prices=_prices(ImageToTextTask=0.0003, **{"*": 0.0016}),
    cost_in_reply=False,
    unsolvable_charged=False,
    report_endpoint="/reportIncorrectImageCaptcha",
    report_style="incorrect_image",
)

TWOCAPTCHA = ProviderProfile(
    name="twocaptcha",
    base_url="https://api.2captcha.com",
    key_env_var="TWOCAPTCHA_API_KEY",
    task_id_type="int",
    pending_statuses=frozenset({"processing", "idle"}),
    # First poll after 5 s, then every 5-10 s.
    poll=PollSchedule(first_delay=5.0, interval=5.0, max_polls=120, task_ttl=300.0),
    # 100 bytes to 100 kB, at most 1000 px on a side (TC7-TC9, TC-image, TC-errors row 3).
    min_image_bytes=100,
    max_image_bytes=100_000,
    max_image_side=1000,
    developer_id_field="softId",  # TC-create, an integer
    # Wait 5 s after "no slot" (TC15, TC-limits).
    error_waits=MappingProxyType({"ERROR_NO_SLOT_AVAILABLE": 5.0}),
    # Price: *unconfirmed* (about $1 per 1000 normal captchas).
    prices=_prices(ImageToTextTask=0.001, **{"*": 0.003}),
    cost_in_reply=True,
    # Unsolvable is refunded.
    unsolvable_charged=False,
    report_endpoint="/reportIncorrect",
    report_style="incorrect_image",
)

LOCAL = ProviderProfile(
    name="local",
    base_url="",
    key_env_var=None,
    task_id_type="str",
    poll=PollSchedule(first_delay=0.0, interval=0.1, max_polls=120, task_ttl=300.0),
    max_image_bytes=10_000_000,
    prices=_prices(**{"*": 0.0}),
    has_balance=False,
    report_style="none",
    # Rate is bounded by the machine, not by a remote limit.
    default_rate=1_000_000.0,
    default_max_in_flight=64,
)

PROVIDERS: Mapping[str, ProviderProfile] = MappingProxyType(
    {p.name: p for p in (CAPSOLVER, ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA, LOCAL)}
)


def get_profile(name: str) -> ProviderProfile:
    """The profile called ``name``; a ``ConfigError`` listing the choices otherwise."""
    try:
        return PROVIDERS[name]
    except KeyError:
        choices = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown provider {name!r}; choose one of {choices}") from None


def check_base_url(url: str) -> str:
    """``url`` if it can be a provider's API base URL; else a ConfigError saying why.

    Checked before anything is sent: a typo would otherwise fail every row's requests
    one by one (``notaurl``, ``ftp://...``, ``http://``)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise ConfigError(f"--base-url is not a valid URL: {exc}") from None
    if parts.username or parts.password:
        # Not echoed: the URL holds a secret.
        raise ConfigError("--base-url must not hold credentials (user:password@)")
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"--base-url {url!r} must start with http:// or https:// "
            "(for example http://127.0.0.1:8080)"
        )
    if not parts.hostname:
        raise ConfigError(f"--base-url {url!r} has no host name")
    if parts.username or parts.password:
        # Not echoed: the URL holds a secret.
        raise ConfigError("--base-url must not hold credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError(f"--base-url {url!r} must not have a query or fragment")
    if port == 0:
        raise ConfigError(f"--base-url {url!r} has port 0")
    return url.strip()
