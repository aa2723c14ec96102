"""``capbatch run``: flags in, one ``RunOptions``, the run, its summary on stderr and the
output's path on stdout.

The run machinery (pandas, pyarrow, aiohttp) is imported inside the command, so that
``capbatch --help`` and ``capbatch run --help`` stay light.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from capbatch._cli.errors import command_errors, echo_err, ignore_signals, printable
from capbatch._exceptions import RunInterrupted
from capbatch._io.locations import location
from capbatch._providers.profiles import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Callable

    from capbatch._providers.profiles import ProviderProfile
    from capbatch._run.options import RunOptions


def _per_provider(default: Callable[[ProviderProfile], str]) -> str:
    """A flag's help tail: its default for each provider, as the profiles say."""
    return (
        "[default: "
        + ", ".join(f"{name} {default(p)}" for name, p in sorted(PROVIDERS.items()))
        + "]."
    )


@click.command("run")
@click.argument(
    "input_path",
    metavar="INPUT",
    callback=lambda _ctx, _param, value: location(value),
)
@click.option(
    "-o",
    "--output",
    callback=lambda _ctx, _param, value: _check_output(value),
    help="Results file, .parquet or .csv, a path or an object-store URI (s3://, gs://, ...) "
    "[default: INPUT.results.parquet beside INPUT, e.g. captchas.csv.results.parquet].",
)
@click.option(
    "--provider",
    type=click.Choice(sorted(PROVIDERS)),
    help="Recognition service [default: capsolver with a key, else local].",
)
@click.option("--base-url", help="Provider API base URL (e.g. the emulator's).")
@click.option(
    "--api-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File whose first line is the API key [default: the provider's env variable].",
)
@click.option("--image-column", help="Column holding paths, base64 or bytes [default: detected].")
@click.option("--id-column", help="Column identifying rows [default: detected].")
@click.option(
    "--task-type",
    default="ImageToTextTask",
    show_default=True,
    help="The provider's task type (docs/task-types.md).",
)
@click.option(
    "--task-param",
    "task_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra task field, repeatable (e.g. module=common, case=true).",
)
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Task field filled from a column, repeatable (e.g. question=q). Each task type "
    "has defaults: docs/task-types.md.",
)
@click.option(
    "--rate",
    type=float,
    help="Requests per second, all requests to the provider "
    + _per_provider(lambda p: "no limit" if p.is_local else f"{p.default_rate:g}"),
)
@click.option(
    "--max-in-flight",
    type=int,
    help="Most requests open at once "
    + _per_provider(lambda p: "2 x CPUs" if p.is_local else str(p.default_max_in_flight)),
)
@click.option(
    "--max-attempts",
    type=int,
    default=5,
    show_default=True,
    help="Tries per row before it is recorded as failed.",
)
@click.option("--max-spend", type=float, help="Spend cap in USD, never exceeded.")
@click.option("--price", type=float, help="USD per task [default: the provider's table price].")
@click.option(
    "--app-id",
    metavar="ID",
    help="Developer id (revenue share): sent as appId to CapSolver, as softId (a whole "
    "number) to Anti-Captcha, CapMonster Cloud and 2Captcha.",
)
@click.option(
    "--journal",
    type=click.Path(path_type=Path),
    help="Journal path, the record of every paid step that makes re-running resume "
    "[default: OUTPUT_STEM.journal.sqlite beside the output].",
)
@click.option("--no-cache", is_flag=True, help="Solve identical images separately.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also send again rows that failed for good in earlier runs (unsolvable, refused); "
    "rows that failed for a passing reason (network, 5xx, rate limit) are always retried.",
)
@click.option(
    "--outage-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the provider may stay unreachable (connect errors, 5xx, unavailable) "
    "before the run stops with the journal intact; meanwhile it pauses and probes.",
)
@click.option(
    "--label-column",
    help="Column holding the true answers: the summary shows the accuracy of text answers "
    "[default: a column named label, if the input has one]; --report-wrong needs it named.",
)
@click.option(
    "--report-wrong",
    is_flag=True,
    help="Report each answer that does not match --label-column to the provider as it "
    "arrives, once per task (needed for Anti-Captcha's 60 s window); see capbatch feedback.",
)
@click.option(
    "--callback-url",
    metavar="URL",
    help="Ask the provider to POST each answer to URL/<per-run token> (needs "
    "--callback-listen); polling becomes the fallback. See README, Callbacks.",
)
@click.option(
    "--callback-listen",
    metavar="HOST:PORT",
    help="Where the run's callback receiver listens (loopback only, unless "
    "--callback-listen-public); the URL must reach it.",
)
@click.option(
    "--callback-listen-public",
    is_flag=True,
    help="Allow --callback-listen on an address other machines can reach.",
)
@click.option(
    "--local-first",
    type=click.FloatRange(0.0, 1.0),
    metavar="MIN_CONFIDENCE",
    help="The cascade: the local solver reads each row first and keeps answers with at "
    "least this confidence (0 to 1); only the rest go to the provider. See README, Cascade.",
)
@click.option(
    "--engine",
    type=click.Choice(["process", "ray"]),
    default="process",
    show_default=True,
    help="Where the run solves its rows: in this process, or on a Ray cluster "
    "(needs capbatch[ray]; README, Scale).",
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="The Ray cluster to join with --engine ray [default: RAY_ADDRESS, else a local one].",
)
@click.option("--dry-run", is_flag=True, help="Send nothing; print counts and estimates.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@command_errors(journal=True)
def run_command(input_path: Path | str, **flags: Any) -> None:
    """Solve every image in INPUT (Parquet, CSV or JSONL, or a folder of images)
    and write the results. INPUT and -o may be object-store URIs (s3://bucket/t.parquet,
    gs://, abfs://, hdfs://), read and written with pyarrow's filesystems.

    The API key comes from CAPSOLVER_API_KEY, ANTICAPTCHA_API_KEY,
    CAPMONSTER_API_KEY or TWOCAPTCHA_API_KEY (by --provider), or --api-key-file.
    With no provider and no key, the local solver (ddddocr) answers offline.
    Re-running the same command resumes: answered rows are never paid for twice.
    Failed rows are recorded in the output; a run-fatal error (bad key, no
    balance, IP ban, 20 different images in a row refused the same way) stops
    the run.

    The first Ctrl-C or SIGTERM stops new sends, waits for requests in flight
    and writes the output with the unfinished rows as "pending"; a second stops
    at once. Either way the journal is intact: run the same command to resume.
    Exit statuses: see capbatch --help.
    """
    # The run machinery (pandas, pyarrow, aiohttp, ...) is imported here, not at start-up,
    # and before the freeze below, so that it is frozen with the rest.
    from capbatch._run import engine  # noqa: F401

    engine_name, ray_address = flags.pop("engine"), flags.pop("ray_address")
    if ray_address is not None and engine_name != "ray":
        raise click.BadParameter("needs --engine ray", param_hint="--ray-address")
    options = _run_options(flags)
    # Everything imported so far lives as long as the process: take it out of the
    # collector's full passes (each walked ~90k objects: a 45-75 ms stall of the event
    # loop, and so of every request due meanwhile).
    gc.collect()
    gc.freeze()
    # The run handles SIGINT and SIGTERM itself (see ``capbatch._run.signals``);
    # ``command_errors`` covers the moments before and after it, so a SIGTERM still
    # ends with one line, and every outcome but success exits with its status.
    _run_and_report(input_path, options, engine_name, ray_address)


def _run_options(flags: dict[str, Any]) -> RunOptions:
    """``RunOptions`` from the command's flags. Each flag is the option of the same
    name except ``--task-param``, ``--field`` (pairs parsed here) and ``--no-cache`` (``cache``
    inverted); ``from_kwargs`` refuses a flag that names no option, so a new flag
    cannot be dropped silently. The CLI adds progress, notices and signal handling."""
    from capbatch._run.options import RunOptions

    flags = dict(flags)
    task_params = _task_params(flags.pop("task_params"))
    fields = _fields(flags.pop("fields"))
    cache = not flags.pop("no_cache")
    return RunOptions.from_kwargs(
        {
            **flags,
            "task_params": task_params,
            "fields": fields,
            "cache": cache,
            "progress": not flags["quiet"],
            "notice": echo_err,
            "handle_signals": True,
        }
    )


def _run_and_report(
    input_path: Path | str,
    options: RunOptions,
    engine_name: str = "process",
    ray_address: str | None = None,
) -> None:
    """Run and print the summary; an interrupted run prints its summary, then the
    interruption goes on to ``command_errors``."""
    import asyncio

    from capbatch._run.engine import execute
    from capbatch._run.summary import RunSummary

    try:
        try:
            if engine_name == "ray":
                from capbatch._ray.cli import run_on_ray

                outcome = run_on_ray(input_path, options, ray_address)
            else:
                outcome = asyncio.run(execute(input_path, options))
        finally:
            # The run is over (its output written or not): a signal from here on only
            # repeats the one being handled, and must not cut the last lines short.
            ignore_signals()
    except RunInterrupted as stop:
        if isinstance(stop.summary, RunSummary) and not options.quiet:
            echo_err(stop.summary.format())
        raise
    summary = outcome.summary
    if options.dry_run:
        for line in summary.notices:  # the dry run's own lines (dryrun.py)
            click.echo(printable(line))
        return
    if not options.quiet:
        echo_err(summary.format())
    if summary.output:
        click.echo(printable(summary.output))


def _check_output(value: str | None) -> Path | str | None:
    """``-o``'s format from its extension, checked while the flags are parsed: before
    any notice, request or file."""
    if value is None:
        return None
    where = location(value)
    from capbatch._io.outputs import output_format

    if output_format(Path(urlsplit(where).path if isinstance(where, str) else where)) is None:
        raise click.BadParameter(
            f"cannot tell the output format of {value}: use .parquet or .csv",
            param_hint="'-o' / '--output'",
        )
    return where


def _task_params(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values that read as JSON (numbers, true, lists) are typed."""
    import json

    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--task-param")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        params[key.strip()] = value
    return params


def _fields(values: tuple[str, ...]) -> dict[str, str]:
    """``FIELD=COLUMN`` pairs (``--field``); a field named twice is refused."""
    fields: dict[str, str] = {}
    for item in values:
        name, sep, column = item.partition("=")
        name = name.strip()
        if not sep or not name or not column:
            raise click.BadParameter(f"{item!r} is not FIELD=COLUMN", param_hint="--field")
        if name in fields:
            raise click.BadParameter(f"field {name!r} is given twice", param_hint="--field")
        fields[name] = column
    return fields
