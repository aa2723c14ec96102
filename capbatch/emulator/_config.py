"""The emulator's configuration: one frozen dataclass, validated, changed by replacement.

``EmulatorConfig`` is immutable so a request handler can read ``state.config`` once and
see a consistent set of options even while ``/_control`` swaps in a new one. Changes go
through ``EmulatorConfig.merged(changes)``, which validates and returns a new config.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from .._exceptions import ConfigError

SolverName = Literal["local", "oracle", "constant"]
DeferredReplyStatus = Literal["idle", "none", "mixed"]
Range = tuple[float, float]

SOLVERS: tuple[str, ...] = get_args(SolverName)
DEFERRED_REPLY_STATUSES: tuple[str, ...] = get_args(DeferredReplyStatus)

#: Options fixed for the life of a server (the socket is already bound).
FIXED_FIELDS = frozenset({"host", "port"})

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
    #: getTaskResult queries allowed per task; the next one finds the task gone.
    max_polls: int = 120

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

    def __post_init__(self) -> None:
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):  # JSON gives lists; keep the dataclass hashable
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first option that cannot work."""
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(_is_number(v) for v in value)
                or not 0.0 <= value[0] <= value[1]
            ):
                raise ConfigError(f"{name} must be a range (min, max) with 0 <= min <= max")
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}")
        if self.solver == "oracle" and not self.labels:
            raise ConfigError("the oracle solver needs a labels CSV (sha256,label)")
        if self.deferred_reply_status not in DEFERRED_REPLY_STATUSES:
            raise ConfigError(
                f"deferred_reply_status must be one of {', '.join(DEFERRED_REPLY_STATUSES)}"
            )
        for name in ("balance", "price", "task_ttl"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.rate_limit is not None and (
            not _is_number(self.rate_limit) or self.rate_limit <= 0
        ):
            raise ConfigError("rate_limit must be > 0 requests/s, or None for no limit")
        if not isinstance(self.max_polls, int) or self.max_polls < 1:
            raise ConfigError("max_polls must be an integer >= 1")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError("port must be an integer in [0, 65535]")
        if not isinstance(self.api_key, str) or not self.api_key:
            raise ConfigError("api_key must be a non-empty string")
        if not isinstance(self.answer, str):
            raise ConfigError("answer must be a string")
        if not isinstance(self.seed, int):
            raise ConfigError("seed must be an integer")
        if not isinstance(self.drop_after_create, bool):
            raise ConfigError("drop_after_create must be true or false")

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
        for name in _RANGE_FIELDS:
            out[name] = list(out[name])
        return out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine's loopback: ``localhost``, 127.0.0.0/8 or ::1."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
