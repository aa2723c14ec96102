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

from capbatch._exceptions import ConfigError

TaskIdType = Literal["str", "int"]
ReportStyle = Literal["feedback", "incorrect_image", "none"]


@dataclass(frozen=True)
class PollSchedule:
    """When to ask ``getTaskResult`` for a deferred task.

    The first poll comes ``first_delay`` seconds after ``createTask`` returned; later
    polls every ``interval`` seconds, never more than ``max_polls`` per task and never
    after ``task_ttl`` seconds from creation (the provider forgets the task then).
    """

    first_delay: float
    interval: float
    max_polls: int = 120
    task_ttl: float = 300.0


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
    #: Endpoint and body style for reporting a wrong answer.
    report_endpoint: str | None = None
    report_style: ReportStyle = "none"
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
    poll=PollSchedule(first_delay=1.0, interval=2.0, max_polls=120, task_ttl=300.0),
    min_image_bytes=100,
    max_image_bytes=500_000,
    # docs/providers.md, "Anti-Captcha" (AC12): the docs' example cost of an image task is
    # "0.000700"; the price itself is *unconfirmed*.
    prices=_prices(ImageToTextTask=0.0007, **{"*": 0.002}),
    cost_in_reply=True,
    unsolvable_charged=True,
    report_endpoint="/reportIncorrectImageCaptcha",
    report_style="incorrect_image",
)

CAPMONSTER = ProviderProfile(
    name="capmonster",
    base_url="https://api.capmonster.cloud",
    key_env_var="CAPMONSTER_API_KEY",
    task_id_type="int",
    pending_statuses=frozenset({"processing", "idle"}),
    # First poll after about 0.3 s; at most one poll per 2 s per task; 120 per task.
    poll=PollSchedule(first_delay=0.3, interval=2.0, max_polls=120, task_ttl=300.0),
    max_image_bytes=50_000,
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
    max_image_bytes=100_000,
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
