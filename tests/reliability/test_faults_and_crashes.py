"""Reliability: faults, kill -9 crashes and spend caps at scale, against the emulator.

Each test runs the real CLI on 2,000 rows against the real emulator on loopback and
checks what matters to someone paying: every row ends final exactly once, every
charged answer is in the output, nothing is created twice except what the run itself
reports, and the cap holds. ``bench/soak.py`` runs the long version.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    KEY,
    SAMPLE,
    assert_key_absent,
    run_cli,
    sample_frame,
    start_cli,
    write_table,
)

ROWS = 2000
PRICE = 0.0004
Start = Callable[..., EmulatorHandle]
TERMINAL = {
    "ERROR_CAPTCHA_UNSOLVABLE",
    "ERROR_SERVICE_UNAVALIABLE",
    "HTTP_500",
    "HTTP_502",
    "HTTP_503",
    "CONNECTION_LOST",
    "MALFORMED_REPLY",
    "POLL_LIMIT_REACHED",
}


def distinct_table(tmp_path: Path, rows: int = ROWS) -> Path:
    """``rows`` rows over the 240 sample images, every row its own task (``--no-cache``)."""
    frame = sample_frame(rows)
    return write_table(frame, tmp_path / "in.parquet")


def oracle(emulator: Start, **options: object) -> EmulatorHandle:
    return emulator(
        api_key=KEY,
        solver="oracle",
        labels=str(SAMPLE / "labels.csv"),
        price=PRICE,
        balance=100.0,
        **options,
    )


def summary_value(stderr: str, label: str) -> int:
    return int(stderr.split(f"{label}: ")[1].split(maxsplit=1)[0])


def test_faults_every_row_final_and_every_charged_answer_delivered(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(
        emulator,
        seed=21,
        http_5xx_rate=0.05,
        drop_rate=0.02,
        malformed_rate=0.01,
        unavailable_rate=0.03,
        # Well under what the client asks for (800 req/s), and under what it reaches even
        # on a loaded machine, so rate-limit answers come for sure.
        rate_limit=250,
        deferred=0.1,
        solve_time=(0.1, 0.3),
        # Connections drop before the task is made, so every answer the emulator
        # charges for can reach the output (the kill test covers replies lost after).
        drop_after_create=False,
    )
    table = distinct_table(tmp_path)
    out = tmp_path / "out.parquet"
    started = time.monotonic()
    done = run_cli(
        "run",
        table,
        "-o",
        out,
        "--base-url",
        server.url,
        "--no-cache",
        "--rate",
        "800",
        "--max-in-flight",
        "64",
        "--max-attempts",
        "8",
        timeout=240,
    )
    assert done.returncode == 0, done.output
    assert time.monotonic() - started < 240
    result = pd.read_parquet(out)
    assert len(result) == ROWS and result["id"].is_unique
    assert result["status"].isin({"solved", "failed"}).all()
    failed = result[result["status"] == "failed"]
    assert set(failed["error_code"]) <= TERMINAL, failed["error_code"].value_counts()
    solved = result[result["status"] == "solved"]
    assert (solved["answer"] == solved["label"]).all()
    stats = server.stats()
    # Every answer the emulator charged for is in the output, and nothing else was paid.
    assert stats["solved"] == len(solved)
    assert stats["charged_total"] == pytest.approx(solved["cost_usd"].sum())
    assert stats["dropped_after_create"] == 0
    assert stats["faults"], "the emulator injected no faults: the test proves nothing"
    assert stats["errors_by_code"].get("ERROR_RATE_LIMIT", 0) > 0, "no rate-limit errors"
    assert_key_absent(KEY, done.output, roots=(tmp_path,))


def test_five_kill_9s_then_resume_every_row_once_no_hidden_double_payment(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, seed=7, deferred=0.3, solve_time=(0.3, 1.0))
    table = distinct_table(tmp_path)
    out = tmp_path / "out.parquet"
    args = [
        "run",
        table,
        "-o",
        out,
        "--base-url",
        server.url,
        "--no-cache",
        "--rate",
        "400",
        "--max-in-flight",
        "50",
    ]
    rng = random.Random(1234)
    kills = 0
    for _ in range(5):
        proc = start_cli(*args, "--quiet")
        target = server.stats()["create_calls"] + rng.randint(50, 250)
        deadline = time.monotonic() + 30
        while (
            server.stats()["create_calls"] < target
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait(timeout=10)
    assert kills >= 3, "the run finished before the kills: make it longer"
    done = run_cli(*args, timeout=240)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert len(result) == ROWS and result["id"].is_unique
    assert (result["status"] == "solved").all(), result["error_code"].value_counts()
    assert (result["answer"] == result["label"]).all()
    stats = server.stats()
    created_twice = stats["create_calls"] - ROWS
    # The final run reports the possible double payments it found in the journal; the
    # killed runs could not speak, so each kill may add at most its in-flight requests.
    reported = summary_value(done.stderr, "possible double payments")
    assert created_twice <= reported
    assert reported <= 5 * 50
    assert_key_absent(KEY, done.output)


@pytest.mark.parametrize("in_flight", [50])
def test_spend_cap_holds_with_many_requests_in_flight(
    tmp_path: Path, emulator: Start, in_flight: int
) -> None:
    server = oracle(emulator, seed=3, deferred=0.5, solve_time=(0.2, 0.6))
    table = distinct_table(tmp_path, rows=600)
    out = tmp_path / "out.parquet"
    cap = 0.05  # 125 tasks at $0.0004
    done = run_cli(
        "run",
        table,
        "-o",
        out,
        "--base-url",
        server.url,
        "--no-cache",
        "--rate",
        "2000",
        "--max-in-flight",
        str(in_flight),
        "--max-spend",
        str(cap),
    )
    assert done.returncode == 0, done.output
    stats = server.stats()
    assert stats["charged_total"] <= cap + 1e-9
    result = pd.read_parquet(out)
    assert result["cost_usd"].sum() <= cap + 1e-9
    assert (result["error_code"] == "SPEND_CAP_REACHED").sum() > 0
    assert "spend cap reached" in done.stderr
    assert_key_absent(KEY, done.output)
