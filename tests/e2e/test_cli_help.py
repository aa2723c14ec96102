"""``--help`` says what every option does and what it defaults to (issue 14, item 7),
and a results file capbatch cannot write is refused before anything else is said."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from capbatch._providers.profiles import PROVIDERS
from capbatch.cli import cli
from tests.e2e.runner_helpers import run_cli, sample_frame, write_table


def every_option() -> list[tuple[str, click.Option]]:
    """(command, option) for every option of every command, the lazy ones loaded."""
    ctx = click.Context(cli)
    found = [("capbatch", p) for p in cli.params if isinstance(p, click.Option)]
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None, name
        found += [(name, p) for p in command.params if isinstance(p, click.Option)]
    return found


def test_every_option_of_every_command_has_a_description() -> None:
    options = every_option()
    assert len(options) > 40  # the walk reached the lazy commands too
    undescribed = [
        f"{command} {'/'.join(option.opts)}"
        for command, option in options
        if not option.hidden and not (option.help or "").strip()
    ]
    assert undescribed == []


def test_run_help_says_the_defaults_of_rate_in_flight_journal_and_attempts() -> None:
    done = run_cli("run", "--help", key=None)
    assert done.returncode == 0, done.output
    text = " ".join(done.stdout.split())  # click wraps lines
    rate = text.split("--rate FLOAT", 1)[1].split("--max-in-flight", 1)[0]
    in_flight = text.split("--max-in-flight INTEGER", 1)[1].split("--max-attempts", 1)[0]
    for name, profile in PROVIDERS.items():
        if profile.is_local:
            assert f"{name} no limit" in rate and f"{name} 2 x CPUs" in in_flight
        else:
            assert f"{name} {profile.default_rate:g}" in rate, rate
            assert f"{name} {profile.default_max_in_flight}" in in_flight, in_flight
    attempts = text.split("--max-attempts INTEGER", 1)[1].split("--max-spend", 1)[0]
    assert "[default: 5]" in attempts and "failed" in attempts
    journal = text.split("--journal PATH", 1)[1].split("--no-cache", 1)[0]
    assert "[default: OUTPUT_STEM.journal.sqlite beside the output]" in journal


def test_the_group_help_lists_the_exit_statuses_130_and_143() -> None:
    done = run_cli("--help", key=None)
    lines = [line.split() for line in done.stdout.splitlines()]
    assert ["130", "interrupted", "by", "Ctrl-C", "(SIGINT)"] in lines
    assert ["143", "stopped", "by", "SIGTERM"] in lines


@pytest.mark.parametrize("output", ["out.xlsx", "out", "out.parquet.bak"])
def test_an_output_capbatch_cannot_write_is_refused_before_anything_is_said(
    tmp_path: Path, output: str
) -> None:
    table = write_table(sample_frame(2), tmp_path / "in.parquet")
    # No key: without the early check the local solver's notice would come first.
    done = run_cli("run", table, "-o", tmp_path / output, key=None)
    assert done.returncode == 2, done.output
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capbatch: error: Invalid value for '-o'")
    assert "use .parquet or .csv" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
