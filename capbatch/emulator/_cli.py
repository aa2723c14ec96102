"""``capbatch serve``: run the emulator from a shell.

The command parses flags into one ``EmulatorConfig`` and makes one library call,
``serve(config)``. Bad options, a bad labels file or a port that cannot be used become
one clean error line and exit 2, through ``capbatch._cli.errors.command_errors`` like
every command. The api key is read from ``--api-key`` or ``CAPBATCH_EMULATOR_KEY`` and never
printed. ``capbatch`` imports this module only when ``serve`` is used: it pulls in
the emulator (aiohttp).
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Any

import click

from capbatch._cli.errors import command_errors
from capbatch._exceptions import ConfigError
from capbatch.emulator._config import (
    DEFERRED_REPLY_STATUSES,
    SOLVERS,
    EmulatorConfig,
    is_loopback_host,
)
from capbatch.emulator._dialects import DIALECT_NAMES
from capbatch.emulator._server import serve as run_server

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(rf"\s*{_NUMBER}\s*(?:[-,:]\s*{_NUMBER}\s*)?")


if TYPE_CHECKING:  # click >= 8.2 types ParamType by value and input; older is plain
    _ParamType = click.ParamType[tuple[float, float], Any]
else:
    _ParamType = click.ParamType


class RangeType(_ParamType):
    """``MIN-MAX`` seconds (``1-3``, ``0.2-0.5``) or one number for a fixed value."""

    name = "MIN-MAX"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, float]:
        if isinstance(value, tuple):
            return (float(value[0]), float(value[1]))
        match = _RANGE.fullmatch(str(value))
        if match is None:
            self.fail(f"{value!r} is not a range like 1-3 or 0.5", param, ctx)
        low = float(match.group(1))
        high = float(match.group(2)) if match.group(2) is not None else low
        if high < low:
            self.fail(f"{value!r}: the maximum is below the minimum", param, ctx)
        return (low, high)


RANGE = RangeType()
RATE = click.FloatRange(0.0, 1.0)


def _default_solver() -> str:
    return "local" if importlib.util.find_spec("ddddocr") is not None else "constant"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port; 0 picks a free one (printed on the first line).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host (anyone who can reach it can use it).",
)
@click.option(
    "--api-key",
    envvar="CAPBATCH_EMULATOR_KEY",
    default="test-key",
    show_default=False,
    show_envvar=True,
    help="The clientKey to accept, on the API and on /_control and /_reset_stats; "
    "use your own with --allow-remote [default: test-key].",
)
@click.option(
    "--dialect",
    type=click.Choice(DIALECT_NAMES),
    default="capsolver",
    show_default=True,
    help="Which provider's API v2 JSON protocol to speak: endpoints, task ids, "
    "statuses, reply fields, error codes, limits, retention, reports and bans.",
)
@click.option(
    "--solver",
    type=click.Choice(SOLVERS),
    default=None,
    help="Answer source [default: local if ddddocr is installed, else constant].",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with columns sha256,label for --solver oracle.",
)
@click.option(
    "--answer", default="capbatch", show_default=True, help="The constant solver's answer."
)
@click.option(
    "--error-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Probability an answer comes back with one wrong character.",
)
@click.option(
    "--balance",
    type=click.FloatRange(min=0),
    default=100.0,
    show_default=True,
    help="Account balance in USD.",
)
@click.option(
    "--price",
    type=click.FloatRange(min=0),
    default=0.0004,
    show_default=True,
    help="USD charged per solved task.",
)
@click.option(
    "--deferred",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Fraction of tasks answered later via getTaskResult (capsolver; the other "
    "dialects answer every task there).",
)
@click.option(
    "--deferred-reply-status",
    type=click.Choice(DEFERRED_REPLY_STATUSES),
    default="mixed",
    show_default=True,
    help='Whether a deferred createTask reply says "status":"idle".',
)
@click.option(
    "--solve-time",
    type=RANGE,
    default="1-3",
    show_default=True,
    help="Seconds a deferred task takes to be ready.",
)
@click.option(
    "--sync-latency",
    type=RANGE,
    default="0",
    show_default=True,
    help="Seconds a synchronous createTask takes.",
)
@click.option(
    "--latency",
    type=RANGE,
    default="0",
    show_default=True,
    help="Seconds added to every createTask/getTaskResult.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Requests per second before HTTP 429 [default: no limit].",
)
@click.option(
    "--fail-5xx",
    "http_5xx_rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Probability of an HTTP 500/502/503 with an HTML body.",
)
@click.option(
    "--drop-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Probability the connection is closed without a reply.",
)
@click.option(
    "--drop-after-create/--drop-before-create",
    default=True,
    show_default=True,
    help="Whether a dropped createTask still creates (and charges) the task.",
)
@click.option(
    "--malformed-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Probability of an HTTP 200 with a truncated body.",
)
@click.option(
    "--unavailable-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Probability of ERROR_SERVICE_UNAVALIABLE.",
)
@click.option(
    "--unsolvable-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Probability of ERROR_CAPTCHA_UNSOLVABLE (not charged).",
)
@click.option(
    "--task-ttl",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds a task can be queried after creation.",
)
@click.option(
    "--max-polls",
    type=click.IntRange(min=1),
    default=120,
    show_default=True,
    help="getTaskResult queries allowed per task (capsolver, capmonster).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of every random decision, so runs repeat.",
)
@click.option(
    "--callback-allow",
    "callback_allow",
    metavar="[HOST:]PORT",
    multiple=True,
    help="Let callbackUrl reach this loopback port (any loopback host, or only HOST: "
    "localhost, 127.x.x.x, [::1]); repeatable. Callbacks to anything else are not sent "
    "(counted in /_stats callbacks_refused) [default: none].",
)
@command_errors()
def serve(allow_remote: bool, solver: str | None, **options: Any) -> None:
    """Run an emulator of a recognition service (for tests, demos and benchmarks):
    CapSolver's protocol by default, or Anti-Captcha's, CapMonster Cloud's or
    2Captcha's with --dialect.

    Test controls: GET /_stats reads the counters (open: no key, no paths, no
    images in it). POST /_control changes options while running and POST
    /_reset_stats zeroes the counters; both need Content-Type: application/json and
    the api key in the body, e.g. {"clientKey": "KEY", "http_5xx_rate": 0}, and
    refuse browser requests (an Origin header). {"clientKey": "KEY",
    "clock_offset": 61} moves the emulator's clock (task lifetimes, retention,
    report windows, bans) 61 s ahead of real time; it never moves back. A --labels
    file must be a regular file of at most 64 MB.
    """
    if not allow_remote and not is_loopback_host(options["host"]):
        raise click.UsageError(
            f"--host {options['host']} is not a loopback address; add --allow-remote "
            "to serve other machines"
        )
    # A bad option or labels file is a ConfigError (the labels fail in build_app, before
    # the URL line is printed): exit 2, like a port that cannot be used.
    config = EmulatorConfig(solver=solver or _default_solver(), **options)  # type: ignore[arg-type]
    try:
        run_server(config)
    except OSError as exc:  # e.g. the port is taken
        raise ConfigError(
            f"cannot serve on {options['host']}:{options['port']}: {exc.strerror or exc}"
        ) from None
