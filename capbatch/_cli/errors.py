"""The one error mapping of every ``capbatch`` command: whatever stops a command becomes
one clean line on stderr and an exit status (``exit_status``; the table is in ``capbatch
--help`` and the README). Each command's body runs under ``command_errors``; ``cli.main``
sends click's own usage errors (a bad option, a missing argument, an unknown command)
through ``stop`` too.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar, cast

import click

from capbatch._exceptions import CapbatchError, ConfigError, InputError, RunInterrupted

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


def printable(message: str) -> str:
    return _CONTROL.sub("?", message)


def echo_err(message: str) -> None:
    click.echo(printable(message), err=True)


class Terminated(BaseException):
    """SIGTERM outside a run's own handling (before it started or after it ended)."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _signal_exit(signal_number: int) -> int:
    """128 + the signal's number, as shells report a process a signal stopped."""
    return 128 + signal_number


class Process:
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
    if isinstance(error, Terminated):
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
        from capbatch._run.summary import RunSummary, counted  # loaded by the run

        summary = error.summary
        pending = (
            f"{counted(summary.pending, 'row')} pending; "
            if isinstance(summary, RunSummary)
            else ""
        )
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


def ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop(error: BaseException, *, journal: bool) -> NoReturn:
    """Say what stopped the command on stderr and exit with the status it deserves."""
    bug = not isinstance(
        error, (CapbatchError, click.ClickException, click.Abort, KeyboardInterrupt, Terminated)
    )
    if bug and os.environ.get("CAPBATCH_DEBUG"):
        raise error
    if Process.owned:
        ignore_signals()
    for line in _error_lines(error, journal=journal):
        echo_err(line)
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
            signal.signal(signal.SIGTERM, on_sigterm)
            finished = False
            try:
                result = func(*args, **kwargs)
                finished = True
            except (SystemExit, click.exceptions.Exit):
                raise
            except (Exception, KeyboardInterrupt, Terminated) as error:
                stop(error, journal=journal)
            finally:
                if finished or not Process.owned:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)
            return result

        return cast(F, wrapper)

    return decorate
