"""``capbatch feedback`` and ``run --report-wrong`` end to end: the real CLI against the
real emulator on loopback, which answers some rows wrongly and records every report."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, oracle, run_args, run_cli, sample_frame, write_table

pytestmark = pytest.mark.e2e

Start = Callable[..., EmulatorHandle]
ROWS = 16
AC_ENV = {"ANTICAPTCHA_API_KEY": KEY}


def wrong_task_ids(result: pd.DataFrame) -> set[str]:
    wrong = result["answer"].str.casefold() != result["label"].str.casefold()
    return set(result.loc[wrong, "task_id"])


def reported_tasks(stats: dict[str, Any]) -> dict[str, int]:
    """Task id -> how many reports the emulator saw for it."""
    by_task = stats.get("reports_by_task")
    if isinstance(by_task, dict):
        return {task: len(reports) for task, reports in by_task.items()}
    return {}


def journaled_reports(journal: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(journal)) as db:  # closed: the lock goes with it
        return dict(db.execute("SELECT task_id, outcome FROM reports").fetchall())


def test_feedback_reports_exactly_the_wrong_rows_once(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, error_rate=0.4, seed=5)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    assert run_cli(*run_args(server, table, out)).returncode == 0
    result = pd.read_parquet(out)
    wrong = wrong_task_ids(result)
    assert 0 < len(wrong) < ROWS, "the emulator must answer some rows wrongly"
    assert server.stats()["feedbacks"] == 0

    done = run_cli("feedback", out, "--label-column", "label")
    assert done.returncode == 0, done.output
    stats = server.stats()
    assert stats["feedbacks"] == stats["feedbacks_invalid"] == len(wrong)
    if reported_tasks(stats):  # the emulator names the tasks it was told about
        assert reported_tasks(stats) == dict.fromkeys(wrong, 1)
    assert f"wrong answers: {len(wrong)}; reports: {len(wrong)} reported" in done.stdout
    result = pd.read_parquet(out)
    is_wrong = result["task_id"].isin(wrong)
    assert (result.loc[is_wrong, "reported"] == "reported").all()
    assert result.loc[~is_wrong, "reported"].isna().all()
    assert journaled_reports(tmp_path / "out.journal.sqlite") == dict.fromkeys(wrong, "reported")
    # The run's metadata survives the rewrite (the next feedback finds the emulator by it).
    assert pq.read_metadata(out).metadata[b"capbatch.provider"] == b"capsolver"

    # The same run again: every answer comes from the journal, with its report's outcome
    # (the journal's reported column, from the one RowResult field).
    assert run_cli(*run_args(server, table, out)).returncode == 0
    assert server.stats()["create_calls"] == ROWS
    rerun = pd.read_parquet(out)
    assert set(rerun.loc[rerun["reported"] == "reported", "task_id"]) == wrong

    again = run_cli("feedback", out, "--label-column", "label")
    assert again.returncode == 0, again.output
    assert server.stats()["feedbacks"] == len(wrong)
    assert "0 reported, 0 refused" in again.stdout
    assert f"already reported before: {len(wrong)}" in again.stdout


def test_run_report_wrong_reports_as_answers_arrive(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, error_rate=0.4, seed=5)
    table = write_table(sample_frame(ROWS), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    extra = ("--label-column", "label", "--report-wrong")
    done = run_cli(*run_args(server, table, out, *extra, quiet=False))
    assert done.returncode == 0, done.output
    result = pd.read_csv(out, dtype={"reported": "string"})
    wrong = wrong_task_ids(result)
    assert 0 < len(wrong) < ROWS
    assert server.stats()["feedbacks"] == len(wrong)
    assert set(result.loc[result["reported"] == "reported", "task_id"]) == wrong
    assert f"wrong answers: {len(wrong)}; reports: {len(wrong)} reported" in done.stderr
    # feedback afterwards finds every task journaled: nothing sent twice.
    later = run_cli("feedback", out, "--base-url", server.url)
    assert later.returncode == 0, later.output
    assert server.stats()["feedbacks"] == len(wrong)


def test_feedback_errors_go_through_the_one_mapping(tmp_path: Path) -> None:
    missing = run_cli("feedback", tmp_path / "nope.parquet")
    assert missing.returncode == 2
    assert missing.stderr.startswith("capbatch: error: ")
    no_flag = run_cli("run", tmp_path / "nope.parquet", "--report-wrong")
    assert no_flag.returncode == 2


def test_anticaptcha_reports_in_the_run_meet_its_60_s_window(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, dialect="anticaptcha", error_rate=0.4, seed=5)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--provider", "anticaptcha", "--rate", "50")
    done = run_cli(*args, "--label-column", "label", "--report-wrong", key=None, env=AC_ENV)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    wrong = wrong_task_ids(result)
    assert 0 < len(wrong) < ROWS
    stats = server.stats()
    assert reported_tasks(stats) == dict.fromkeys(wrong, 1)
    assert set(result.loc[result["reported"] == "reported", "task_id"]) == wrong
    # Refunded by the emulator (as Anti-Captcha's moderators may), but no reply says so:
    # the rows' cost stays what was charged before the refunds.
    assert stats["refunded_total"] > 0
    charged = stats["charged_total"] + stats["refunded_total"]
    assert result["cost_usd"].sum() == pytest.approx(charged)
    later = run_cli("feedback", out, key=None, env=AC_ENV)
    assert later.returncode == 0, later.output
    assert reported_tasks(server.stats()) == dict.fromkeys(wrong, 1)


def test_anticaptcha_rows_past_the_window_are_not_reportable(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, dialect="anticaptcha", error_rate=0.4, seed=5)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--provider", "anticaptcha", "--rate", "50")
    assert run_cli(*args, key=None, env=AC_ENV).returncode == 0
    # As if feedback ran two minutes after the tasks finished.
    data = pq.read_table(out)
    metadata = pq.read_metadata(out).metadata
    index = data.column_names.index("finished_at")
    earlier = pc.subtract(data["finished_at"], pa.scalar(120_000, pa.duration("ms")))
    data = data.set_column(index, "finished_at", earlier.cast(data.schema.field(index).type))
    pq.write_table(data.replace_schema_metadata(metadata), out)
    wrong = wrong_task_ids(data.to_pandas())
    done = run_cli("feedback", out, key=None, env=AC_ENV)
    assert done.returncode == 0, done.output
    assert reported_tasks(server.stats()) == {}
    assert f"{len(wrong)} not reportable" in done.stdout
    assert "anticaptcha takes reports within 60 s" in done.stderr
    result = pd.read_parquet(out)
    assert set(result.loc[result["reported"] == "not_reportable", "task_id"]) == wrong


def test_a_bad_key_stops_feedback_with_one_line_and_exit_1(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, error_rate=0.4, seed=5)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    assert run_cli(*run_args(server, table, out)).returncode == 0
    done = run_cli("feedback", out, key="sk-wrong-key-0000")
    assert done.returncode == 1, done.output
    assert done.stderr.startswith("capbatch: error: ") and "sk-wrong-key-0000" not in done.output
    assert "Traceback" not in done.stderr
    assert server.stats()["feedbacks"] == 0
    assert journaled_reports(tmp_path / "out.journal.sqlite") == {}
    assert pd.read_parquet(out)["reported"].isna().all()
