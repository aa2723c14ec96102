"""One error mapping for every command, through the real CLI (a subprocess).

Usage, configuration and input errors exit 2, run-fatal errors and bugs 1, Ctrl-C 130
and SIGTERM 143, each with one line on stderr starting ``capbatch: error:`` (or
``capbatch: interrupted`` / ``terminated``), never a traceback: for ``run``, ``serve``,
``report``, ``compare`` and the group itself (``capbatch/cli.py``, ``exit_status``).

Faults a real command cannot be made to hit on demand (a bug, a slow step to interrupt)
are injected into the real CLI process by a ``sitecustomize`` on ``PYTHONPATH`` that
replaces one function (``CAPBATCH_TEST_FAULT=module:attribute:raise|sleep``); it can
also report which heavy modules were loaded when ``gc.freeze`` ran, or at exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import click
import pytest

from capbatch.cli import LAZY_COMMANDS
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    REPO,
    CliResult,
    oracle,
    run_args,
    run_cli,
    sample_frame,
    write_table,
)
from tests.fakes import HEAVY_MODULES

Start = Callable[..., EmulatorHandle]

COMMANDS = ("run", "serve", "report", "compare")
#: What ``capbatch --help`` and the commands' own ``--help`` must not load.
HEAVY = (*HEAVY_MODULES, "capbatch._run.engine")

SITECUSTOMIZE = """
import atexit, gc, importlib, json, os, sys, time

_fault = os.environ.get("CAPBATCH_TEST_FAULT")
if _fault:
    _module, _attribute, _how = _fault.split(":")

    def _injected(*args, **kwargs):
        if _how == "sleep":
            print("fault: sleeping", flush=True)
            time.sleep(60)
        raise RuntimeError("an injected fault")

    setattr(importlib.import_module(_module), _attribute, _injected)

_HEAVY = json.loads(os.environ.get("CAPBATCH_TEST_HEAVY", "[]"))


def _loaded():
    return sorted(m for m in _HEAVY if m in sys.modules)


if os.environ.get("CAPBATCH_TEST_FREEZE"):
    _freeze = gc.freeze

    def _probe():
        print("frozen with: " + json.dumps(_loaded()), flush=True)
        _freeze()

    gc.freeze = _probe

if os.environ.get("CAPBATCH_TEST_AT_EXIT"):
    atexit.register(lambda: print("loaded at exit: " + json.dumps(_loaded()), flush=True))
"""


@pytest.fixture
def probe_env(tmp_path: Path) -> dict[str, str]:
    """Environment that puts the ``sitecustomize`` above on the child's path."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths), "CAPBATCH_TEST_HEAVY": json.dumps(HEAVY)}


def assert_one_error_line(done: CliResult, status: int, *said: str) -> None:
    """Exit ``status``, stderr exactly one ``capbatch: error:`` line saying ``said``."""
    assert done.returncode == status, done.output
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("capbatch: error: "), done.stderr
    for text in said:
        assert text in lines[0], done.stderr


def fault_args(command: str, tmp_path: Path) -> list[str | Path]:
    """Arguments that get past click's parsing to the (faulty) library call."""
    return {
        "run": ["run", tmp_path / "in.parquet", "-o", tmp_path / "out.parquet", "-q"],
        "serve": ["serve", "--solver", "constant", "--port", "0"],
        "report": ["report", tmp_path / "a.parquet"],
        "compare": ["compare", tmp_path / "a.parquet", tmp_path / "b.parquet"],
    }[command]


#: The one function each command's fault replaces.
FAULT_TARGET = {
    "run": "capbatch._run.engine:execute",
    "serve": "capbatch.emulator._server:serve",
    "report": "capbatch._reports.report:report",
    "compare": "capbatch._reports.compare:compare",
}


# --- the group ----------------------------------------------------------------------------


def test_an_unknown_command_is_one_line_and_exit_2() -> None:
    done = run_cli("nosuch", key=None)
    assert_one_error_line(done, 2, "No such command 'nosuch'", "capbatch --help")


def test_a_bad_group_option_is_one_line_and_exit_2() -> None:
    done = run_cli("--bogus", key=None)
    assert_one_error_line(done, 2, "No such option '--bogus'")


def test_no_command_shows_the_help_and_exits_2() -> None:
    done = run_cli(key=None)
    assert done.returncode == 2
    assert "Usage: capbatch" in done.stderr and "Commands:" in done.stderr
    assert done.stderr.splitlines()[-1] == "capbatch: error: no command given"


def test_the_exit_statuses_are_documented_once_in_the_group_help() -> None:
    done = run_cli("--help", key=None)
    assert done.returncode == 0, done.output
    table = done.stdout.split("Exit status", 1)[1].split("Options:", 1)[0]
    for status in ("0", "1", "2", "130", "143"):
        assert any(line.split()[:1] == [status] for line in table.splitlines()), table
    for command in COMMANDS:
        own = run_cli(command, "--help", key=None)
        assert own.returncode == 0, own.output
        assert "130" not in own.stdout and "143" not in own.stdout, command


def test_the_group_lists_every_command_with_its_own_short_help() -> None:
    done = run_cli("--help", key=None)
    listed = done.stdout.split("Commands:", 1)[1]
    for command in COMMANDS:
        assert f"\n  {command} " in listed, listed
    for name, (module, attribute, short_help) in LAZY_COMMANDS.items():
        command = getattr(import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == name
        assert command.get_short_help_str(limit=1000) == short_help, (
            f"LAZY_COMMANDS[{name!r}] no longer matches the command's own help"
        )


def test_version_exits_0() -> None:
    done = run_cli("--version", key=None)
    assert done.returncode == 0 and done.stdout.startswith("capbatch, version "), done.output


# --- every command: usage, configuration and input errors exit 2 --------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_option_is_one_line_and_exit_2(command: str) -> None:
    done = run_cli(command, "--bogus", key=None)
    assert_one_error_line(done, 2, "No such option '--bogus'", f"see 'capbatch {command} --help'")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("run",), "Missing argument 'INPUT'"),
        (("run", "x.parquet", "--rate", "fast"), "'--rate'"),
        (("run", "x.parquet", "--task-param", "novalue"), "KEY=VALUE"),
        (("serve", "--port", "99999"), "'--port'"),
        (("serve", "--solve-time", "3-1"), "maximum is below the minimum"),
        (("report",), "Missing argument 'RESULTS'"),
        (("compare",), "Missing argument 'RESULTS...'"),
    ],
)
def test_click_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], said: str) -> None:
    assert_one_error_line(run_cli(*args, key=None), 2, said)


def test_run_config_and_input_errors_exit_2(tmp_path: Path) -> None:
    table = write_table(sample_frame(2), tmp_path / "in.parquet")
    rate = run_cli("run", table, "-o", tmp_path / "out.parquet", "--rate", "0", key=None)
    assert_one_error_line(rate, 2, "--rate")
    missing = run_cli("run", tmp_path / "nope.parquet", key=None)
    assert_one_error_line(missing, 2, "nope.parquet")


def test_serve_config_errors_exit_2(tmp_path: Path) -> None:
    no_labels = run_cli("serve", "--solver", "oracle", "--port", "0", key=None)
    assert_one_error_line(no_labels, 2, "labels")
    remote = run_cli("serve", "--host", "0.0.0.0", key=None)
    assert_one_error_line(remote, 2, "--allow-remote")
    callback = run_cli("serve", "--callback-allow", "192.168.1.5:80", "--port", "0", key=None)
    assert_one_error_line(callback, 2, "loopback")


def test_serve_on_a_port_in_use_exits_2(emulator: Start) -> None:
    port = emulator().url.rsplit(":", 1)[1]
    done = run_cli("serve", "--solver", "constant", "--port", port, key=None)
    assert_one_error_line(done, 2, f"cannot serve on 127.0.0.1:{port}")


def test_report_input_and_config_errors_exit_2(tmp_path: Path) -> None:
    missing = run_cli("report", tmp_path / "nope.parquet", key=None)
    assert_one_error_line(missing, 2, "nope.parquet")
    frame = sample_frame(3)
    frame["answer"] = frame["label"]
    results = write_table(frame, tmp_path / "r.parquet")
    page = tmp_path / "no" / "such" / "dir" / "page.html"
    unwritable = run_cli("report", results, "--label-column", "label", "-o", page, key=None)
    assert_one_error_line(unwritable, 2, "cannot write")


def test_compare_input_and_config_errors_exit_2(tmp_path: Path) -> None:
    one = run_cli("compare", tmp_path / "a.parquet", key=None)
    assert_one_error_line(one, 2, "two or more")
    missing = run_cli("compare", tmp_path / "a.parquet", tmp_path / "b.parquet", key=None)
    assert_one_error_line(missing, 2, "a.parquet")


# --- every command: run-fatal errors and bugs exit 1 ---------------------------------------


def test_a_run_fatal_error_exits_1_and_says_the_journal_is_intact(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(3), tmp_path / "in.parquet")
    done = run_cli(*run_args(server, table, tmp_path / "out.parquet"), key="sk-wrong-1234")
    assert done.returncode == 1, done.output
    first, second = done.stderr.splitlines()
    assert first.startswith("capbatch: error: ") and "ERROR_KEY_DENIED_ACCESS" in first
    assert second == "capbatch: the journal is intact: fix the cause and run the same command"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bug_is_one_line_and_exit_1(
    command: str, tmp_path: Path, probe_env: dict[str, str]
) -> None:
    env = {**probe_env, "CAPBATCH_TEST_FAULT": f"{FAULT_TARGET[command]}:raise"}
    done = run_cli(*fault_args(command, tmp_path), env=env, key=None)
    assert done.returncode == 1, done.output
    assert "Traceback" not in done.stderr
    first, second = done.stderr.splitlines()
    assert first == "capbatch: error: unexpected RuntimeError: an injected fault"
    assert second.startswith("capbatch: this is a bug in capbatch (CAPBATCH_DEBUG=1")
    assert second.endswith("; the journal is intact") == (command == "run")
    debug = run_cli(*fault_args(command, tmp_path), env={**env, "CAPBATCH_DEBUG": "1"}, key=None)
    assert debug.returncode == 1 and "Traceback" in debug.stderr, debug.output
    assert "RuntimeError: an injected fault" in debug.stderr


# --- every command: Ctrl-C 130, SIGTERM 143 ------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("sig", "status", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_stops_every_command_with_one_line(
    command: str,
    sig: signal.Signals,
    status: int,
    word: str,
    tmp_path: Path,
    probe_env: dict[str, str],
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
        **probe_env,
        "CAPBATCH_TEST_FAULT": f"{FAULT_TARGET[command]}:sleep",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "capbatch", *map(str, fault_args(command, tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "fault: sleeping\n"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == status, err
    resume = "; the journal is intact: run the same command to resume" if command == "run" else ""
    assert err.splitlines()[-1] == f"capbatch: {word}{resume}", err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stopped_while_listening_exits_0(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "capbatch", "serve", "--solver", "constant", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), url
        # A reply means the loop runs, so its signal handlers are in place (the emulator
        # installs them after printing the URL line).
        with urllib.request.urlopen(f"{url}/_stats", timeout=10) as reply:
            assert reply.status == 200
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert err == ""


# --- start-up: the heavy modules load when a command needs them ----------------------------


@pytest.mark.parametrize(
    "args", [("--help",), ("run", "--help"), ("report", "--help"), ("compare", "--help")]
)
def test_help_loads_no_heavy_module(args: tuple[str, ...], probe_env: dict[str, str]) -> None:
    done = run_cli(*args, env={**probe_env, "CAPBATCH_TEST_AT_EXIT": "1"}, key=None)
    assert done.returncode == 0, done.output
    assert done.stdout.splitlines()[-1] == "loaded at exit: []", done.stdout[-300:]


def test_run_freezes_the_collector_after_loading_the_run_machinery(
    tmp_path: Path, probe_env: dict[str, str]
) -> None:
    env = {**probe_env, "CAPBATCH_TEST_FREEZE": "1"}
    done = run_cli("run", tmp_path / "nope.parquet", env=env, key=None)
    assert done.returncode == 2, done.output
    frozen = [line for line in done.stdout.splitlines() if line.startswith("frozen with: ")]
    assert len(frozen) == 1, done.output
    loaded = set(json.loads(frozen[0].removeprefix("frozen with: ")))
    assert {"capbatch._run.engine", "pyarrow", "aiohttp", "httpx"} <= loaded, loaded
