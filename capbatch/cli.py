"""The ``capbatch`` command line: each command parses its flags, makes one library
call, and turns whatever stopped it into one clean line on stderr and an exit status.

One mapping serves every command (``exit_status``; the table is in ``cli``'s help and the
README): each command's body runs under ``command_errors``, and ``main`` sends click's own
usage errors (a bad option, a missing argument, an unknown command) through it too.

Start-up stays light (``capbatch --help`` costs little more than the interpreter): this
module imports click and two small modules; ``run`` imports the run machinery (pandas,
pyarrow, aiohttp) inside the command, and the other commands' modules are imported when
the command is used (``serve`` pulls in the emulator, ``report`` pandas and rapidfuzz).
"""

from __future__ import annotations

import functools
import gc
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from ._exceptions import CapbatchError, ConfigError, InputError, RunInterrupted
from ._providers import PROVIDERS

if TYPE_CHECKING:
    from ._api import RunOptions

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

F = TypeVar("F", bound=Callable[..., Any])

#: C0 and C1 control characters but tab and newline: a provider's text (an error code
#: holding ``ESC ] 0 ;`` for one) must not drive the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: What ``run`` adds when it stops: its journal keeps every paid step.
_RESUME = "the journal is intact: run the same command to resume"


def _printable(message: str) -> str:
    return _CONTROL.sub("?", message)


def _echo_err(message: str) -> None:
    click.echo(_printable(message), err=True)


class _Terminated(BaseException):
    """SIGTERM outside a run's own handling (before it started or after it ended)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _signal_exit(signal_number: int) -> int:
    """128 + the signal's number, as shells report a process a signal stopped."""
    return 128 + signal_number


# --- the one error mapping --------------------------------------------------------------


class _Process:
    #: True once ``main`` runs the process: a failing command then leaves SIGINT and
    #: SIGTERM ignored to the end, so a repeated signal cannot cut its last lines short;
    #: an in-process caller (click's ``CliRunner``) gets its own handlers back instead.
    owned = False


def exit_status(error: BaseException) -> int:
    """The exit status for what stopped a command; every command goes through this.

    0 the command finished; 1 a run-fatal error (a ``CapbatchError`` other than the two
    below) or a bug; 2 a usage error (click's), a ``ConfigError`` or an ``InputError``;
    128 + N for a run stopped gracefully by signal N; 130 Ctrl-C; 143 SIGTERM.
    """
    if isinstance(error, RunInterrupted):
        return _signal_exit(error.signal_number)
    if isinstance(error, KeyboardInterrupt) or (
        isinstance(error, click.Abort) and isinstance(error.__cause__, KeyboardInterrupt)
    ):
        return EXIT_INTERRUPTED
    if isinstance(error, _Terminated):
        return EXIT_TERMINATED
    if isinstance(error, (click.ClickException, ConfigError, InputError)):
        return EXIT_USAGE
    return EXIT_FATAL


def _click_message(error: click.ClickException) -> str:
    """click's message on one line, with where to look for help on a usage error."""
    message = " ".join(error.format_message().split())
    if isinstance(error, click.UsageError):
        ctx = error.ctx or click.get_current_context(silent=True)
        if ctx is not None:
            message = f"{message.rstrip('.')} (see '{ctx.command_path} --help')"
    return message


def _error_lines(error: BaseException, *, journal: bool) -> list[str]:
    """The line (two for a fatal run) that says what stopped a command."""
    status = exit_status(error)
    if isinstance(error, RunInterrupted):
        from ._summary import RunSummary  # loaded by the run that raised this

        summary = error.summary
        pending = f"{summary.pending} rows pending; " if isinstance(summary, RunSummary) else ""
        return [f"capbatch: {error}; {pending}{_RESUME}"]
    if status in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        what = "interrupted" if status == EXIT_INTERRUPTED else "terminated"
        return [f"capbatch: {what}; {_RESUME}" if journal else f"capbatch: {what}"]
    if isinstance(error, click.ClickException):
        return [f"capbatch: error: {_click_message(error)}"]
    if isinstance(error, CapbatchError):
        lines = [f"capbatch: error: {error}"]
        if journal and status == EXIT_FATAL:
            lines.append("capbatch: the journal is intact: fix the cause and run the same command")
        return lines
    # A bug: one line, not a traceback over the user's terminal.
    return [
        f"capbatch: error: unexpected {type(error).__name__}: {error}",
        "capbatch: this is a bug in capbatch (CAPBATCH_DEBUG=1 shows the traceback)"
        + ("; the journal is intact" if journal else ""),
    ]


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop(error: BaseException, *, journal: bool) -> NoReturn:
    """Say what stopped the command on stderr and exit with the status it deserves."""
    bug = not isinstance(
        error, (CapbatchError, click.ClickException, click.Abort, KeyboardInterrupt, _Terminated)
    )
    if bug and os.environ.get("CAPBATCH_DEBUG"):
        raise error
    if _Process.owned:
        _ignore_signals()
    for line in _error_lines(error, journal=journal):
        _echo_err(line)
    sys.exit(exit_status(error))


def command_errors(*, journal: bool = False) -> Callable[[F], F]:
    """Run a command's body under the one mapping: SIGTERM raises (so it ends in one
    line too), and whatever stops the body becomes one line and ``exit_status``.

    Put it under the click decorators. ``journal``: the command keeps a run journal,
    and its last line says the journal is intact.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            signal.signal(signal.SIGTERM, _on_sigterm)
            finished = False
            try:
                result = func(*args, **kwargs)
                finished = True
            except (SystemExit, click.exceptions.Exit):
                raise
            except (Exception, KeyboardInterrupt, _Terminated) as error:
                _stop(error, journal=journal)
            finally:
                if finished or not _Process.owned:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)
            return result

        return cast(F, wrapper)

    return decorate


# --- the group ------------------------------------------------------------------------

#: Commands defined in other modules, imported only when used: name -> (module,
#: attribute, the short help ``capbatch --help`` lists without importing them; a test
#: checks it against the command's own).
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "compare": (
        "capbatch._report_cli",
        "compare",
        "Compare two or more runs over the same rows, side by side.",
    ),
    "report": (
        "capbatch._report_cli",
        "report",
        "Measure accuracy, latency and cost of a results table against its labels.",
    ),
    "serve": (
        "capbatch.emulator._cli",
        "serve",
        "Run a CapSolver-compatible emulator (for tests, demos and benchmarks).",
    ),
}


class _Commands(click.Group):
    """``run`` lives here; the other commands are imported when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, attribute, _ = LAZY_COMMANDS[cmd_name]
            loaded = getattr(import_module(module), attribute)
            if isinstance(loaded, click.Command):
                self.add_command(loaded, cmd_name)
                command = loaded
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands, from the short help table for those not imported yet."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(name, help=LAZY_COMMANDS[name][2])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from ._version import __version__  # importlib.metadata: only when asked

    click.echo(f"capbatch, version {__version__}")
    ctx.exit()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def cli() -> None:
    """Turn a table of captcha images into a table of answers.

    \b
    Exit status, the same for every command:
      0    it finished (failed rows are recorded in the output, not fatal;
           serve: stopped by Ctrl-C or SIGTERM while listening)
      1    a run-fatal error stopped it (bad key, no balance, IP ban, provider
           unreachable, full disk) or a bug in capbatch
      2    usage error (bad option or argument, unknown command), bad
           configuration or unreadable input
      130  interrupted by Ctrl-C (SIGINT)
      143  stopped by SIGTERM
    Errors are one line on stderr starting with "capbatch: error:". After 1,
    130 or 143 a run's journal is intact: run the same command to resume.
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
@command_errors(journal=True)
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
    Failed rows are recorded in the output; a run-fatal error (bad key, no
    balance, IP ban, every first row failing the same way) stops the run.

    The first Ctrl-C or SIGTERM stops new sends, waits for requests in flight
    and writes the output with the unfinished rows as "pending"; a second stops
    at once. Either way the journal is intact: run the same command to resume.
    Exit statuses: see capbatch --help.
    """
    # The run machinery (pandas, pyarrow, aiohttp, ...) is imported here, not at start-up,
    # and before the freeze below, so that it is frozen with the rest.
    from ._api import RunOptions

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
    # The run handles SIGINT and SIGTERM itself (see ``_api._SignalStops``);
    # ``command_errors`` covers the moments before and after it, so a SIGTERM still
    # ends with one line, and every outcome but success exits with its status.
    _run_and_report(input_path, options)


def _run_and_report(input_path: Path, options: RunOptions) -> None:
    """Run and print the summary; an interrupted run prints its summary, then the
    interruption goes on to ``command_errors``."""
    import asyncio

    from ._api import execute
    from ._summary import RunSummary

    try:
        try:
            outcome = asyncio.run(execute(input_path, options))
        finally:
            # The run is over (its output written or not): a signal from here on only
            # repeats the one being handled, and must not cut the last lines short.
            _ignore_signals()
    except RunInterrupted as stop:
        if isinstance(stop.summary, RunSummary) and not options.quiet:
            _echo_err(stop.summary.format())
        raise
    summary = outcome.summary
    if options.dry_run:
        for line in summary.notices[-1:]:
            click.echo(_printable(line))
        return
    if not options.quiet:
        _echo_err(summary.format())
    if summary.output:
        click.echo(_printable(summary.output))


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


def main(args: Sequence[str] | None = None) -> NoReturn:
    """The ``capbatch`` script and ``python -m capbatch``: every outcome, click's usage
    errors included, ends in ``exit_status``."""
    _Process.owned = True
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        status = cli.main(args, prog_name="capbatch", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:  # plain ``capbatch``: the help
        click.echo(error.format_message(), err=True)
        _echo_err("capbatch: error: no command given")
        sys.exit(EXIT_USAGE)
    except (Exception, KeyboardInterrupt, _Terminated) as error:
        _stop(error, journal=False)
    sys.exit(status if isinstance(status, int) else EXIT_OK)
