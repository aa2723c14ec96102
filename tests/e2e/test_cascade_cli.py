"""``capbatch run --local-first`` end to end (issue 16): the real CLI, the local solver
first, the emulator's oracle (5 % wrong answers) as the paid provider behind it.

What is proven from the emulator's own counters: the gate sends only the rows it is
unsure of, every row's cost is what the emulator charged, accuracy stays within 3
points of the provider alone, and a run killed with ``kill -9`` resumes with no row
read twice by the local solver nor paid twice by the provider.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    KEY,
    PRICE,
    oracle,
    run_args,
    run_cli,
    running_cli,
    sample_frame,
    write_table,
)

pytestmark = pytest.mark.e2e

Start = Callable[..., EmulatorHandle]
ROWS = 120  # every third row of each style: plain, noisy, classic
THRESHOLD = "0.98"


def accuracy(frame: pd.DataFrame) -> float:
    """Case-insensitive, as the labels are lowercase and the default charset is not."""
    answers = frame["answer"].fillna("").str.lower()
    return float((answers == frame["label"].str.lower()).mean())


def test_the_gate_pays_only_for_unsure_rows_and_keeps_accuracy(
    tmp_path: Path, emulator: Start
) -> None:
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    alone = oracle(emulator, error_rate=0.05, seed=3)
    done = run_cli(*run_args(alone, table, tmp_path / "alone.parquet", "--rate", "200"))
    assert done.returncode == 0, done.output
    provider_alone = pd.read_parquet(tmp_path / "alone.parquet")

    server = oracle(emulator, error_rate=0.05, seed=3)
    out = tmp_path / "cascade.parquet"
    flags = ("--rate", "200", "--local-first", THRESHOLD)
    done = run_cli(*run_args(server, table, out, *flags, quiet=False))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    stats = server.stats()
    local = result["provider"] == "local"
    # Only the rows the gate was unsure of reached the provider, each once.
    assert stats["create_calls"] == (~local).sum() <= 0.65 * ROWS
    assert local.sum() > 0 and (result.loc[local, "confidence"] >= float(THRESHOLD)).all()
    assert (result.loc[local, "cost_usd"] == 0).all()
    assert result["cost_usd"].sum() == pytest.approx(stats["charged_total"])
    assert stats["charged_total"] == pytest.approx((~local).sum() * PRICE)
    # Every row keeps what the gate saw, so the threshold can be tuned again.
    assert result["local_answer"].notna().sum() >= 0.95 * ROWS
    assert result["local_confidence"].notna().all()
    assert accuracy(result) >= accuracy(provider_alone) - 0.03
    assert f"cascade at confidence {THRESHOLD}: {local.sum()} rows answered locally" in (
        done.output.replace("\n", " ")
    )
    assert KEY not in done.output


def test_a_cascade_killed_part_way_reads_and_pays_each_row_once(
    tmp_path: Path, emulator: Start
) -> None:
    # Paid tasks take 1-2 s, so the kill finds readings journaled and tasks in flight.
    server = oracle(emulator, deferred=1.0, solve_time=(1.0, 2.0), seed=5)
    rows = 60
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "20", "--local-first", THRESHOLD)
    with running_cli(*args, log=tmp_path / "killed.log") as proc:
        deadline = time.monotonic() + 60
        while server.stats()["create_calls"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()
        assert proc.wait(timeout=10) == -9
    created_before = server.stats()["create_calls"]
    assert 0 < created_before < rows
    journal = next(tmp_path.glob("*.journal.sqlite"))
    with contextlib.closing(sqlite3.connect(journal)) as db:
        (read_before,) = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE key LIKE 'local|%' AND state = 'done'"
        ).fetchone()
    assert read_before > 0

    done = run_cli(*args, "--quiet")
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
    sent_on = int((result["provider"] != "local").sum())
    stats = server.stats()
    # The paid side: every task a row's answer came from was created once; only a task
    # whose id the kill kept from the journal was created again, and each such is counted.
    repeats = stats["create_calls"] - sent_on
    with contextlib.closing(sqlite3.connect(journal)) as db:
        (uncertain,) = db.execute("SELECT COALESCE(SUM(uncertain), 0) FROM tasks").fetchone()
        (readings,) = db.execute("SELECT COUNT(*) FROM tasks WHERE key LIKE 'local|%'").fetchone()
    assert 0 <= repeats <= uncertain
    # The local side: one reading per row over both runs, none read twice.
    assert readings == rows
    cascade = pd.read_parquet(out).attrs["capbatch"]["run"]["cascade"]
    assert cascade["read"] == rows - read_before and cascade["reused"] == read_before


def test_a_dry_run_estimates_the_gate_from_a_sample_and_sends_nothing(
    tmp_path: Path, emulator: Start
) -> None:
    from capbatch.local import LocalSolver

    rows = 30  # under the sample's 50: the estimate reads every row
    frame = sample_frame(rows)
    table = write_table(frame, tmp_path / "in.parquet")
    server = oracle(emulator)
    args = run_args(server, table, tmp_path / "out.parquet", "--local-first", THRESHOLD)
    done = run_cli(*args, "--dry-run")
    assert done.returncode == 0, done.output
    solver = LocalSolver(workers=1)
    passing = sum(
        solver.read(Path(path).read_bytes())[1] >= float(THRESHOLD) for path in frame["image_path"]
    )
    solver.close()
    assert 0 < passing < rows
    expected = (
        f"cascade at confidence {THRESHOLD}: {passing} of a sample of {rows} rows pass the "
        f"gate, so about {rows - passing} of the {rows} go on to the provider"
    )
    assert expected in done.stdout.replace("\n", " ")
    assert server.stats()["create_calls"] == 0
