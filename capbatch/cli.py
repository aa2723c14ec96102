"""The ``capbatch`` command line: each command parses its flags, makes one library
call, and turns a capbatch error into one clean line on stderr.

Exit status: 0 when the command finished (failed rows are recorded, not fatal),
1 when a run-fatal error stopped it, 2 for usage errors or unreadable input.
"""

from __future__ import annotations

import click

from ._version import __version__
from .emulator._cli import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capbatch")
def cli() -> None:
    """Turn a table of captcha images into a table of answers.

    \b
    Exit status:
      0  the command finished (failed rows are recorded in the output, not fatal)
      1  a run-fatal error stopped it (bad key, no balance, IP ban)
      2  usage error or unreadable input
    """


cli.add_command(serve)


def main() -> None:
    cli(prog_name="capbatch")
