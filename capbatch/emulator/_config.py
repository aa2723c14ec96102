"""The emulator's configuration: one frozen dataclass, validated, changed by replacement.

``EmulatorConfig`` is immutable so a request handler can read ``state.config`` once and
see a consistent set of options even while ``/_control`` swaps in a new one. Changes go
through ``EmulatorConfig.merged(changes)``, which validates and returns a new config.

``/_control`` takes values from anyone holding the key (with ``--allow-remote``, from
another machine), so every option is checked for its type, for being finite and for a
range that cannot exhaust memory or overflow the nano-dollar arithmetic: a bad value
must be refused here, not crash every later request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from capbatch._exceptions import ConfigError
from capbatch.emulator._dialects import DIALECT_NAMES, DialectName

SolverName = Literal["local", "oracle", "constant"]
DeferredReplyStatus = Literal["idle", "none", "mixed"]
Range = tuple[float, float]

SOLVERS: tuple[str, ...] = get_args(SolverName)
DEFERRED_REPLY_STATUSES: tuple[str, ...] = get_args(DeferredReplyStatus)

#: Options fixed for the life of a server: the socket is already bound, the routes are
#: the dialect's, and the callback allow-list is the operator's boundary, which a client
#: holding the key (with ``--allow-remote``, a remote one) must not widen.
FIXED_FIELDS = frozenset({"host", "port", "callback_allow", "dialect"})

#: Longest delay a range option may ask for (seconds): long enough for any test, short
#: enough that a typo cannot park every request for hours.
MAX_DELAY = 600.0
#: Longest task lifetime (seconds).
MAX_TASK_TTL = 86_400.0
#: Most money in USD for ``balance`` and ``price``: keeps nano-dollars far inside int64.
MAX_USD = 1e9
#: Longest ``answer``, ``api_key`` and ``labels`` path accepted.
MAX_TEXT = 4096
#: Furthest the emulator's clock may be moved ahead (seconds): a year.
MAX_CLOCK_OFFSET = 366 * 86_400.0

_RATE_FIELDS = (
    "deferred",
    "error_rate",
    "http_5xx_rate",
    "drop_rate",
    "malformed_rate",
    "unavailable_rate",
    "unsolvable_rate",
)
_RANGE_FIELDS = ("solve_time", "sync_latency", "latency")


@dataclass(frozen=True)
class EmulatorConfig:
    """Every option of the emulator. All probabilities are in [0, 1]; ranges are
    ``(min, max)`` seconds drawn uniformly; money is in USD."""

    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 0
    #: The only ``clientKey`` accepted. Kept out of ``repr`` so it is never printed.
    api_key: str = dataclasses.field(default="test-key", repr=False)
    #: Seed of the one RNG behind every random decision, so runs repeat.
    seed: int = 0
    #: Which provider's protocol to speak (``_dialects.py``). Fixed while running.
    dialect: DialectName = "capsolver"

    # --- solving ----------------------------------------------------------------------
    #: ``constant`` by default: deterministic and free of the ddddocr import.
    solver: SolverName = "constant"
    #: CSV with columns ``sha256,label`` for the ``oracle`` solver.
    labels: str | Path | None = None
    #: The ``constant`` solver's answer.
    answer: str = "capbatch"
    #: Probability that an answer is corrupted (one character replaced), as a
    #: human-powered service would get it wrong.
    error_rate: float = 0.0

    # --- money ------------------------------------------------------------------------
    balance: float = 100.0
    #: USD charged per solved task.
    price: float = 0.0004

    # --- timing -----------------------------------------------------------------------
    #: Fraction of tasks answered later through getTaskResult instead of at once.
    deferred: float = 0.0
    #: Whether a deferred createTask reply carries ``"status":"idle"`` (the live
    #: service does both, so ``mixed`` picks one at random per task).
    deferred_reply_status: DeferredReplyStatus = "mixed"
    #: How long a deferred task takes to become ready.
    solve_time: Range = (1.0, 3.0)
    #: Extra time a synchronous createTask takes before it answers.
    sync_latency: Range = (0.0, 0.0)
    #: Extra time added to every createTask and getTaskResult request.
    latency: Range = (0.0, 0.0)
    #: Seconds after creation during which a task can be queried.
    task_ttl: float = 300.0
    #: getTaskResult queries allowed per task; the next one finds the task gone (in the
    #: dialects that document such a limit: CapSolver, CapMonster).
    max_polls: int = 120
    #: Seconds added to the emulator's clock, which task lifetimes, retention, report
    #: windows, poll intervals and bans are measured on. A test moves time forward
    #: with ``/_control`` instead of sleeping; it can never move back.
    clock_offset: float = 0.0

    # --- limits and faults ------------------------------------------------------------
    #: Requests per second (sliding 1 s window) over the API endpoints; None = off.
    rate_limit: float | None = None
    http_5xx_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    unavailable_rate: float = 0.0
    unsolvable_rate: float = 0.0
    #: A dropped createTask reply still creates (and charges) the task: the one case
    #: where a client cannot avoid paying twice.
    drop_after_create: bool = True

    # --- callbacks --------------------------------------------------------------------
    #: Where ``callbackUrl`` may point: ``PORT`` (any loopback host) or ``HOST:PORT``
    #: (that loopback host only). Empty: no callback is ever sent. Fixed while running.
    callback_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # JSON and the CLI give lists (or click's tuples); keep the dataclass hashable.
        for name in (*_RANGE_FIELDS, "callback_allow"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first option that cannot work."""
        self._validate_numbers()
        self._validate_choices()
        self._validate_texts()
        self.callback_targets()

    def _validate_numbers(self) -> None:
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not _in_range(value, 0.0, 1.0):
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(_in_range(v, 0.0, MAX_DELAY) for v in value)
                or value[0] > value[1]
            ):
                raise ConfigError(
                    f"{name} must be a range (min, max) of seconds with "
                    f"0 <= min <= max <= {MAX_DELAY:g}"
                )
        for name, top in (
            ("balance", MAX_USD),
            ("price", MAX_USD),
            ("task_ttl", MAX_TASK_TTL),
            ("clock_offset", MAX_CLOCK_OFFSET),
        ):
            value = getattr(self, name)
            if not _in_range(value, 0.0, top):
                raise ConfigError(f"{name} must be a number in [0, {top:g}], got {value!r}")
        if self.rate_limit is not None and (
            not _in_range(self.rate_limit, 0.0, 1e9) or self.rate_limit <= 0
        ):
            raise ConfigError("rate_limit must be > 0 requests/s, or None for no limit")
        if not _is_int(self.max_polls) or not 1 <= self.max_polls <= 1_000_000_000:
            raise ConfigError("max_polls must be an integer in [1, 1000000000]")
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise ConfigError("port must be an integer in [0, 65535]")
        if not _is_int(self.seed) or not -(2**63) <= self.seed < 2**64:
            raise ConfigError("seed must be an integer within 64 bits")

    def _validate_choices(self) -> None:
        if not isinstance(self.solver, str) or self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}")
        if not isinstance(self.dialect, str) or self.dialect not in DIALECT_NAMES:
            raise ConfigError(f"dialect must be one of {', '.join(DIALECT_NAMES)}")
        if self.labels is not None and not (
            isinstance(self.labels, Path)
            or (isinstance(self.labels, str) and len(self.labels) <= MAX_TEXT)
        ):
            raise ConfigError("labels must be a file path")
        if self.solver == "oracle" and not self.labels:
            raise ConfigError("the oracle solver needs a labels CSV (sha256,label)")
        if (
            not isinstance(self.deferred_reply_status, str)
            or self.deferred_reply_status not in DEFERRED_REPLY_STATUSES
        ):
            raise ConfigError(
                f"deferred_reply_status must be one of {', '.join(DEFERRED_REPLY_STATUSES)}"
            )
        if not isinstance(self.drop_after_create, bool):
            raise ConfigError("drop_after_create must be true or false")

    def _validate_texts(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("host must be a non-empty string")
        if not isinstance(self.api_key, str) or not 0 < len(self.api_key) <= MAX_TEXT:
            raise ConfigError(
                f"api_key must be a non-empty string of at most {MAX_TEXT} characters"
            )
        if not isinstance(self.answer, str) or len(self.answer) > MAX_TEXT:
            raise ConfigError(f"answer must be a string of at most {MAX_TEXT} characters")

    def callback_targets(self) -> frozenset[tuple[str | None, int]]:
        """``callback_allow`` parsed: ``(host, port)`` pairs, host None for "any loopback
        host". Raises ``ConfigError`` for an entry that is not a loopback target."""
        if not isinstance(self.callback_allow, tuple):
            raise ConfigError("callback_allow must be a list of PORT or HOST:PORT")
        return frozenset(_callback_target(entry) for entry in self.callback_allow)

    def merged(self, changes: Mapping[str, Any]) -> EmulatorConfig:
        """A new config with ``changes`` applied (JSON-friendly: lists become ranges,
        ints become floats). Unknown or fixed options raise ``ConfigError``."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        fixed = sorted(set(changes) & FIXED_FIELDS)
        if fixed:
            raise ConfigError(f"option(s) fixed while running: {', '.join(fixed)}")
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:  # pragma: no cover - guarded by the checks above
            raise ConfigError(str(exc)) from None

    def public_dict(self) -> dict[str, Any]:
        """Every option as JSON-ready values, without the api key."""
        out = dataclasses.asdict(self)
        del out["api_key"]
        if out["labels"] is not None:
            out["labels"] = str(out["labels"])
        for name in (*_RANGE_FIELDS, "callback_allow"):
            out[name] = list(out[name])
        return out


def _is_int(value: object) -> bool:
    # bool is an int subclass, but ``true`` is never a meaningful count or seed.
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: object, low: float, high: float) -> bool:
    """Whether ``value`` is a finite number (not a bool) in ``[low, high]``; NaN fails
    every comparison, so it is refused here along with the infinities."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and low <= value <= high
    except OverflowError:  # an int too large for a float
        return False


def _callback_target(entry: object) -> tuple[str | None, int]:
    """One ``callback_allow`` entry: ``PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for
    IPv6), the host a loopback one."""
    if not isinstance(entry, str) or len(entry) > 300:
        raise ConfigError("callback_allow entries must be PORT or HOST:PORT strings")
    host, sep, port_text = entry.strip().rpartition(":")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) <= 65535:
        raise ConfigError(f"callback_allow {entry!r}: needs a port in [1, 65535]")
    if not sep:
        return None, int(port_text)
    if not is_loopback_host(host):
        raise ConfigError(
            f"callback_allow {entry!r}: callbacks go to loopback hosts only "
            "(localhost, 127.0.0.0/8, [::1])"
        )
    return normalize_host(host), int(port_text)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine's loopback: ``localhost``, 127.0.0.0/8 or ::1."""
    host = normalize_host(host)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_host(host: str) -> str:
    """``host`` as compared: lower case, no IPv6 brackets, no trailing dot."""
    return host.strip().strip("[]").lower().rstrip(".")
