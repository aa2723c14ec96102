"""The ``capbatch`` command line: each command parses its flags, makes one library
call, and turns whatever stopped it into one clean line on stderr and an exit status
(one mapping for every command: ``capbatch._cli.errors``).

Start-up stays light (``capbatch --help`` costs little more than the interpreter): this
module imports click and a few small modules; ``run`` imports the run machinery (pandas,
pyarrow, aiohttp) inside the command, and the other commands' modules are imported when
the command is used (``serve`` pulls in the emulator, ``report`` pandas and rapidfuzz).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import NoReturn

import click

from capbatch._cli.errors import (
    EXIT_OK,
    EXIT_USAGE,
    Process,
    Terminated,
    echo_err,
    on_sigterm,
    stop,
)
from capbatch._cli.run import run_command

# --- the group ------------------------------------------------------------------------

#: Commands defined in other modules, imported only when used: name -> (module,
#: attribute, the short help ``capbatch --help`` lists without importing them; a test
#: checks it against the command's own).
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "compare": (
        "capbatch._cli.report",
        "compare",
        "Compare two or more runs over the same rows, side by side.",
    ),
    "feedback": (
        "capbatch._cli.feedback",
        "feedback",
        "Report the rows whose answer does not match the label to the provider.",
    ),
    "report": (
        "capbatch._cli.report",
        "report",
        "Measure accuracy, latency and cost of a results table against its labels.",
    ),
    "serve": (
        "capbatch.emulator._cli",
        "serve",
        "Run an emulator of a recognition service (for tests, demos and benchmarks): "
        "CapSolver's protocol by default, or Anti-Captcha's, CapMonster Cloud's or "
        "2Captcha's with --dialect.",
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
    from capbatch._version import __version__  # importlib.metadata: only when asked

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


cli.add_command(run_command)


def main(args: Sequence[str] | None = None) -> NoReturn:
    """The ``capbatch`` script and ``python -m capbatch``: every outcome, click's usage
    errors included, ends in ``exit_status``."""
    Process.owned = True
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        status = cli.main(args, prog_name="capbatch", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:  # plain ``capbatch``: the help
        click.echo(error.format_message(), err=True)
        echo_err("capbatch: error: no command given")
        sys.exit(EXIT_USAGE)
    except (Exception, KeyboardInterrupt, Terminated) as error:
        stop(error, journal=False)
    sys.exit(status if isinstance(status, int) else EXIT_OK)
