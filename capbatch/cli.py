"""The ``capbatch`` command line: each command parses its flags, makes one library
call, and turns a capbatch error into one clean line on stderr.

Exit status: 0 when the command finished (failed rows are recorded, not fatal),
1 when a run-fatal error stopped it, 2 for usage errors or unreadable input.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ._api import RunOptions, execute
from ._exceptions import CapbatchError, ConfigError, InputError, RunInterrupted
from ._providers import PROVIDERS
from ._report_cli import compare, report
from ._summary import RunSummary
from ._version import __version__
from .emulator._cli import serve

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


#: C0 and C1 control characters but tab and newline: a provider's text (an error code
#: holding ``ESC ] 0 ;`` for one) must not drive the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(message: str) -> str:
    return _CONTROL.sub("?", message)


def _echo_err(message: str) -> None:
    click.echo(_printable(message), err=True)


class _Terminated(BaseException):
    """SIGTERM outside a run's own handling (before it started or after it ended)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _signal_exit(signal_number: int) -> int:
    """128 + the signal's number, as shells report a process a signal stopped."""
    return 128 + signal_number


def _fail(error: CapbatchError) -> int:
    """One clean line for a library error, and the exit status it deserves."""
    _echo_err(f"capbatch: error: {error}")
    if isinstance(error, (ConfigError, InputError)):
        return EXIT_USAGE
    return EXIT_FATAL


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capbatch")
def cli() -> None:
    """Turn a table of captcha images into a table of answers.

    \b
    Exit status:
      0  the command finished (failed rows are recorded in the output, not fatal)
      1  a run-fatal error stopped it (bad key, no balance, IP ban)
      2  usage error or unreadable input
    130  interrupted by Ctrl-C (SIGINT); 143 by SIGTERM
    """


@cli.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Results file, .parquet or .csv [default: INPUT_STEM.results.parquet beside INPUT].",
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
@click.option("--task-type", default="ImageToTextTask", show_default=True)
@click.option(
    "--task-param",
    "task_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra task field, repeatable (e.g. module=common, case=true).",
)
@click.option("--rate", type=float, help="Requests per second, all requests to the provider.")
@click.option("--max-in-flight", type=int, help="Most requests open at once.")
@click.option("--max-attempts", type=int, default=5, show_default=True)
@click.option("--max-spend", type=float, help="Spend cap in USD, never exceeded.")
@click.option("--price", type=float, help="USD per task [default: the provider's table price].")
@click.option("--app-id", help="Sent as appId (developer revenue share).")
@click.option("--journal", type=click.Path(path_type=Path), help="Journal path.")
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
@click.option("--dry-run", is_flag=True, help="Send nothing; print counts and estimates.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def run_command(
    input_path: Path,
    output: Path | None,
    provider: str | None,
    base_url: str | None,
    api_key_file: Path | None,
    image_column: str | None,
    id_column: str | None,
    task_type: str,
    task_params: tuple[str, ...],
    rate: float | None,
    max_in_flight: int | None,
    max_attempts: int,
    max_spend: float | None,
    price: float | None,
    app_id: str | None,
    journal: Path | None,
    no_cache: bool,
    retry_failed: bool,
    outage_timeout: float,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Solve every image in INPUT (Parquet, CSV or JSONL) and write the results.

    The API key comes from CAPSOLVER_API_KEY, ANTICAPTCHA_API_KEY,
    CAPMONSTER_API_KEY or TWOCAPTCHA_API_KEY (by --provider), or --api-key-file.
    With no provider and no key, the local solver (ddddocr) answers offline.
    Re-running the same command resumes: answered rows are never paid for twice.

    \b
    Exit status:
      0  the run finished (failed rows are recorded in the output, not fatal)
      1  a run-fatal error stopped it (bad key, no balance, IP ban, or every
         first row failing the same way); the journal is intact
      2  usage error or unreadable input
    130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: the first signal stops
         new sends, waits for requests in flight and writes the output with the
         unfinished rows as "pending"; a second stops at once. The journal is
         intact: run the same command to resume
    """
    options = RunOptions(
        output=output,
        provider=provider,
        base_url=base_url,
        api_key_file=api_key_file,
        image_column=image_column,
        id_column=id_column,
        task_type=task_type,
        task_params=_task_params(task_params),
        rate=rate,
        max_in_flight=max_in_flight,
        max_attempts=max_attempts,
        max_spend=max_spend,
        price=price,
        app_id=app_id,
        journal=journal,
        cache=not no_cache,
        retry_failed=retry_failed,
        outage_timeout=outage_timeout,
        dry_run=dry_run,
        quiet=quiet,
        progress=not quiet,
        notice=_echo_err,
        handle_signals=True,
    )
    # Everything imported so far lives as long as the process: take it out of the
    # collector's full passes (each walked ~90k objects: a 45-75 ms stall of the event
    # loop, and so of every request due meanwhile).
    gc.collect()
    gc.freeze()
    # The run handles SIGINT and SIGTERM itself (see ``_api._SignalStops``); this covers
    # the moments before and after it, so a SIGTERM still ends with one line.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Exits (SystemExit) on every outcome but success, with the signals kept quiet to the
    # end; on success the caller's handlers come back (for in-process callers).
    _run_and_report(input_path, options)
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _run_and_report(input_path: Path, options: RunOptions) -> None:
    """Run, print the summary, and exit with the status the outcome deserves."""
    quiet = options.quiet
    try:
        try:
            outcome = asyncio.run(execute(input_path, options))
        finally:
            # The run is over (its output written or not): a signal from here on only
            # repeats the one being handled, and must not cut the last lines short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except RunInterrupted as stop:
        summary = stop.summary
        if isinstance(summary, RunSummary) and not quiet:
            _echo_err(summary.format())
        pending = f"{summary.pending} rows pending; " if isinstance(summary, RunSummary) else ""
        _echo_err(
            f"capbatch: {stop}; {pending}the journal is intact: run the same command to resume"
        )
        sys.exit(_signal_exit(stop.signal_number))
    except KeyboardInterrupt:
        _echo_err("capbatch: interrupted; the journal is intact: run the same command to resume")
        sys.exit(EXIT_INTERRUPTED)
    except _Terminated:
        _echo_err("capbatch: terminated; the journal is intact: run the same command to resume")
        sys.exit(EXIT_TERMINATED)
    except CapbatchError as error:
        code = _fail(error)
        if code == EXIT_FATAL:
            _echo_err("capbatch: the journal is intact: fix the cause and run the same command")
        sys.exit(code)
    except Exception as exc:  # a bug: one line, not a traceback over the user's terminal
        if os.environ.get("CAPBATCH_DEBUG"):
            raise
        _echo_err(f"capbatch: error: unexpected {type(exc).__name__}: {exc}")
        _echo_err(
            "capbatch: this is a bug in capbatch (CAPBATCH_DEBUG=1 shows the traceback); "
            "the journal is intact"
        )
        sys.exit(EXIT_FATAL)
    summary = outcome.summary
    if options.dry_run:
        for line in summary.notices[-1:]:
            click.echo(_printable(line))
        return
    if not quiet:
        _echo_err(summary.format())
    if summary.output:
        click.echo(_printable(summary.output))




cli.add_command(serve)
cli.add_command(report)
cli.add_command(compare)


def main() -> None:
    cli(prog_name="capbatch")
