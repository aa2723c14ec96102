"""``capbatch run --callback-url`` end to end: the real CLI, the real emulator sending
its callbacks to the run's receiver on loopback, request counts read from ``/_stats``."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, oracle, run_args, run_cli, sample_frame, write_table

Start = Callable[..., EmulatorHandle]
ROWS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def callback_flags(port: int) -> list[str]:
    return [
        "--callback-url",
        f"http://127.0.0.1:{port}/cb",
        "--callback-listen",
        f"127.0.0.1:{port}",
    ]


def run_with_callbacks(
    tmp_path: Path, server: EmulatorHandle, port: int
) -> tuple[pd.DataFrame, dict[str, Any], str]:
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(
        *run_args(server, table, out, "--rate", "200", *callback_flags(port), quiet=False)
    )
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
    assert (result["answer"] == result["label"]).all()
    metadata = pq.read_metadata(out).metadata or {}
    run_info = json.loads(metadata[b"capbatch.run"])
    return result, run_info, done.output


def test_answers_arrive_by_callback_with_few_requests_per_row(
    tmp_path: Path, emulator: Start
) -> None:
    port = free_port()
    server = oracle(
        emulator, deferred=1.0, solve_time=(0.3, 0.8), callback_allow=(str(port),), seed=4
    )
    result, run_info, output = run_with_callbacks(tmp_path, server, port)
    stats = server.stats()
    requests = stats["create_calls"] + stats["polls"]
    assert stats["deferred_created"] == ROWS and stats["callbacks_sent"] == ROWS
    assert requests / ROWS <= 1.05, stats
    assert run_info["callbacks_used"] >= 0.95 * ROWS
    assert run_info["callbacks_received"] == ROWS and run_info["callbacks_refused"] == 0
    assert "callbacks: 40 received, 40 used" in output.replace("\n", " ") or (
        run_info["fallback_polls"] > 0
    )
    # Journaled and written exactly as a polled answer: a task id, the cost, one attempt.
    assert result["task_id"].notna().all() and (result["attempts"] == 1).all()
    assert result["cost_usd"].sum() == pytest.approx(stats["charged_total"])
    # The token is nowhere in what the run prints or writes.
    assert KEY not in output and "/cb/" not in output
    for written in tmp_path.iterdir():  # the output, the journal and its WAL
        assert b"/cb/" not in written.read_bytes(), written


def test_fallback_polling_finishes_every_row_when_no_callback_comes(
    tmp_path: Path, emulator: Start
) -> None:
    port = free_port()
    # No --callback-allow: the emulator refuses to send any callback (counted), so
    # every answer must come from the fallback polls.
    server = oracle(emulator, deferred=1.0, solve_time=(0.2, 0.5), seed=6)
    result, run_info, _ = run_with_callbacks(tmp_path, server, port)
    stats = server.stats()
    assert stats["callbacks_sent"] == 0 and stats["callbacks_refused"] == ROWS
    assert run_info["callbacks_received"] == 0
    assert run_info["fallback_polls"] == stats["polls"] >= ROWS
    assert (result["polls"] >= 1).all()


def test_callbacks_pointed_elsewhere_are_refused_and_polling_still_finishes(
    tmp_path: Path, emulator: Start
) -> None:
    port, elsewhere = free_port(), free_port()
    # The emulator may reach only a port nobody listens on: every callback fails.
    server = oracle(emulator, deferred=1.0, solve_time=(0.2, 0.5), callback_allow=(str(elsewhere),))
    table = write_table(sample_frame(8), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    flags = ["--callback-url", f"http://127.0.0.1:{elsewhere}/cb"]
    flags += ["--callback-listen", f"127.0.0.1:{port}"]
    done = run_cli(*run_args(server, table, out, *flags))
    assert done.returncode == 0, done.output
    assert (pd.read_parquet(out)["status"] == "solved").all()
    # A poll can bring an answer while the emulator's callback for it is still failing
    # to connect: wait (bounded) for the last failures to be counted.
    deadline = time.monotonic() + 10
    while server.stats()["callbacks_failed"] < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.stats()["callbacks_failed"] == 8


def test_a_listen_port_in_use_exits_2_before_any_task_is_created(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, deferred=1.0)
    table = write_table(sample_frame(2), tmp_path / "in.parquet")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        done = run_cli(*run_args(server, table, tmp_path / "out.parquet", *callback_flags(port)))
    assert done.returncode == 2, done.output
    assert "capbatch: error: --callback-listen: cannot listen" in done.stderr
    assert server.stats()["create_calls"] == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--callback-url", "http://127.0.0.1:9/cb"], "go together"),
        (["--callback-listen", "127.0.0.1:9"], "go together"),
        (["--callback-url", "ftp://127.0.0.1:9/cb", "--callback-listen", "127.0.0.1:9"], "http"),
        (["--callback-url", "http://h/cb", "--callback-listen", "0.0.0.0:9"], "loopback"),
        (["--callback-url", "http://h/cb", "--callback-listen", "nohost"], "HOST:PORT"),
        (["--callback-url", f"http://h/{KEY}", "--callback-listen", "127.0.0.1:9"], "API key"),
    ],
)
def test_bad_callback_flags_exit_2_before_any_request(
    tmp_path: Path, emulator: Start, flags: list[str], message: str
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(2), tmp_path / "in.parquet")
    done = run_cli(*run_args(server, table, tmp_path / "out.parquet", *flags))
    assert done.returncode == 2, done.output
    assert "capbatch: error:" in done.stderr and message in done.stderr
    assert KEY not in done.output
    assert server.stats()["create_calls"] == 0


@pytest.mark.parametrize("provider", ["anticaptcha", "capmonster", "twocaptcha"])
def test_callbacks_without_a_task_id_are_matched_by_their_slot(
    tmp_path: Path, emulator: Start, provider: str
) -> None:
    """Anti-Captcha, CapMonster Cloud and 2Captcha call back with getTaskResult's reply,
    which names no task: each createTask's own slot in the URL tells whose answer it is."""
    from capbatch._providers.profiles import get_profile

    rows, port = 12, free_port()
    profile = get_profile(provider)
    server = oracle(
        emulator,
        dialect=provider,
        price=profile.price_for("ImageToTextTask"),
        solve_time=(0.2, 0.5),
        callback_allow=(str(port),),
        seed=9,
    )
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--provider", provider, *callback_flags(port))
    assert profile.key_env_var is not None
    done = run_cli(*args, key=None, env={profile.key_env_var: KEY})
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all() and (result["answer"] == result["label"]).all()
    stats = server.stats()
    assert stats["callbacks_sent"] == rows
    run_info = json.loads((pq.read_metadata(out).metadata or {})[b"capbatch.run"])
    assert run_info["callbacks_used"] == rows and run_info["callbacks_refused"] == 0
    assert stats["polls"] == 0 and stats["create_calls"] == rows
