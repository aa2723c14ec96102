"""What ``capbatch run`` says after a resume, through the real CLI and the emulator
(issue 14, items 5, 9 and 12): the summary tells what earlier runs did and what this
run did, the metadata's ``resumed`` is the true count, the bar starts at the rows
already done, one spend figure (the bar's too) sits beside the provider's balance
change, labelled, every count reads right, and a label column gives accuracy."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import capbatch
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    PRICE,
    oracle,
    run_args,
    run_cli,
    sample_frame,
    start_cli,
    write_table,
)

Start = Callable[..., EmulatorHandle]
ROWS = 40


def run_summary(path: Path) -> dict[str, Any]:
    """The run's summary as the results file keeps it."""
    meta = capbatch.run_metadata(path)
    found = meta.get("capbatch.run", meta.get("run"))
    return json.loads(found) if isinstance(found, str) else dict(found)


def bar_positions(stderr: str, total: int) -> list[int]:
    """Every position the text bar was drawn at, in order."""
    return [int(n) for n in re.findall(rf"(\d+)/{total} \[", stderr)]


def line_starting(text: str, start: str) -> str:
    found = [line for line in text.splitlines() if line.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def interrupted_run(server: EmulatorHandle, args: list[Any], log: Path) -> str:
    """``capbatch run`` stopped by Ctrl-C once it has sent 10 tasks; what it printed."""
    proc = start_cli(*args, log=log)
    deadline = time.monotonic() + 30
    while server.stats()["create_calls"] < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    return log.read_text()


def test_a_resume_after_ctrl_c_says_what_each_run_did_and_shows_one_spend(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, deferred=0.6, solve_time=(0.3, 0.8), seed=8)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "30", quiet=False)

    first = interrupted_run(server, args, tmp_path / "first.log")
    done_first = int((pd.read_parquet(out)["status"] == "solved").sum())
    assert 0 < done_first < ROWS
    assert f"{ROWS}/{ROWS}" not in first  # pending rows do not fill the bar
    assert bar_positions(first, ROWS)[-1] == done_first
    assert f", {ROWS - done_first} pending" in line_starting(first, f"rows {ROWS}:")

    again = run_cli(*args)
    assert again.returncode == 0, again.output
    text, this_run = again.stderr, ROWS - done_first
    assert line_starting(text, f"{done_first} row") == (
        f"{done_first} row{'s' if done_first != 1 else ''} done by earlier runs "
        f"({done_first} solved, cost ${done_first * PRICE:.4f}); {this_run} by this run"
    )
    summary = run_summary(out)
    assert summary["resumed"] == done_first and summary["rows"] == ROWS
    # One spend figure: this run's, on the bar and in the summary, and with the earlier
    # runs' it is what the output's rows cost.
    spend = line_starting(text, "spend $")
    this_spend = float(spend.split("$", 2)[1].split()[0])
    assert this_spend == pytest.approx(this_run * PRICE)
    assert spend.startswith(f"spend ${this_spend:.4f} this run (provider balance change ")
    assert re.search(r"during this run: -\$\d+\.\d{4}, \$[\d.]+ -> \$[\d.]+\)$", spend)
    assert "provider says" not in text
    assert re.findall(r"spend=\$([\d.]+)", text)[-1] == f"{this_spend:.4f}"
    costs = pd.read_parquet(out)["cost_usd"].sum()
    assert this_spend + summary["spend_before_usd"] == pytest.approx(costs)
    # The bar starts at the rows already done and goes on from there to the end.
    positions = bar_positions(text, ROWS)
    assert positions[0] == done_first and min(positions) == done_first
    assert positions[-1] == ROWS and positions == sorted(positions)
    # Deferred rows were polled: the line says the delay used and the one learned.
    requests = line_starting(text, f"{summary['requests']} requests (")
    assert re.search(r"first poll a median \d+\.\d s after createTask, \d+\.\d s learned", requests)
    # The median age at a first poll: never before CapSolver's advised 1 s.
    assert summary["first_poll_median_s"] >= 1.0


def test_fixing_one_broken_row_then_a_cached_rerun_read_true_and_grammatical(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator)
    frame = sample_frame(9)
    good_path = frame.loc[4, "image_path"]
    frame.loc[4, "image_path"] = str(tmp_path / "missing.png")
    table = write_table(frame, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, quiet=False)
    broken = run_cli(*args)
    assert broken.returncode == 0, broken.output
    assert line_starting(broken.stderr, "rows 9:") == "rows 9: 8 solved, 1 failed"

    frame.loc[4, "image_path"] = good_path  # the user fixes the row
    write_table(frame, table)
    fixed = run_cli(*args)
    assert fixed.returncode == 0, fixed.output
    text = fixed.stderr
    assert line_starting(text, "rows 9:") == "rows 9: 9 solved, 0 failed"
    assert line_starting(text, "8 rows") == (
        f"8 rows done by earlier runs (8 solved, cost ${8 * PRICE:.4f}); 1 by this run"
    )
    assert line_starting(text, "1 request ").startswith("1 request (1 createTask, 0 polls) in ")
    assert run_summary(out)["resumed"] == 8
    assert bar_positions(text, 9)[0] == 8

    cached = run_cli(*args)
    assert cached.returncode == 0, cached.output
    text = cached.stderr
    assert line_starting(text, "9 rows") == (
        f"9 rows done by earlier runs (9 solved, cost ${9 * PRICE:.4f}); none by this run"
    )
    assert line_starting(text, "no requests sent")
    assert "req/s" not in text.split("capbatch: 100%")[-1].split("\n", 1)[1]
    assert line_starting(text, "spend $0.0000 this run")


def test_the_summary_shows_accuracy_with_a_label_column(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, error_rate=0.0)
    frame = sample_frame(6)
    frame.loc[0, "label"] = "definitely-wrong"  # one answer will not match its label
    frame["truth"] = frame["label"]
    frame.loc[1, "truth"] = ""  # unlabelled in the named column
    table = write_table(frame, tmp_path / "in.parquet")
    auto = run_cli(*run_args(server, table, tmp_path / "auto.parquet", quiet=False))
    assert auto.returncode == 0, auto.output
    assert line_starting(auto.stderr, "accuracy") == (
        "accuracy 83.3% (5 of 6 labelled rows right; column 'label', case-insensitive)"
    )
    named = run_cli(
        *run_args(server, table, tmp_path / "named.parquet", "--label-column", "truth", quiet=False)
    )
    assert named.returncode == 0, named.output
    assert line_starting(named.stderr, "accuracy") == (
        "accuracy 80.0% (4 of 5 labelled rows right; column 'truth', case-insensitive)"
    )
    assert run_summary(tmp_path / "named.parquet")["accuracy"] == pytest.approx(0.8)
    # No label column: no accuracy line; a named column that is not there: exit 2
    # (tests/unit/test_summary.py).
