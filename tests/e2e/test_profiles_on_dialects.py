"""Every provider profile against its own dialect of the emulator, over real HTTP.

Issue 12's "done when": for capsolver, anticaptcha, capmonster and twocaptcha, the real
``capbatch run --provider P --base-url URL`` (the key through P's own variable, never
CapSolver's) against ``capbatch serve --dialect P`` on 127.0.0.1 proves the run, a
resume after ``kill -9``, injected faults, the spend cap and wrong-answer reports.

Money is checked exactly: each emulator charges its profile's table price (the
emulator's ``price`` option, see ``serve``), so the output's ``cost_usd``, the cap and
the emulator's ``charged_total`` are the same unit. Every wait is bounded; time the
tests need to pass (Anti-Captcha's 60 s report window) is moved with the emulator's
``clock_offset``, never slept.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from capbatch._providers.profiles import get_profile
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    KEY,
    REPO,
    CliResult,
    oracle,
    run_args,
    run_cli,
    sample_frame,
    write_table,
)

pytestmark = pytest.mark.e2e

Start = Callable[..., EmulatorHandle]
PROVIDERS = ("capsolver", "anticaptcha", "capmonster", "twocaptcha")
#: ``--app-id`` per provider: CapSolver's appId is a string, the others' softId a number.
APP_ID = {"capsolver": "capbatch-e2e", "anticaptcha": "4580", "capmonster": "55"}
APP_ID["twocaptcha"] = "4580"
#: What each dialect's report endpoint records a report as (``reports_by_task``).
REPORT_KIND = {"capsolver": "feedback"} | dict.fromkeys(PROVIDERS[1:], "incorrect")
EPS = 1e-12


def price(provider: str) -> float:
    """The profile's table price of an image task, which its emulator charges."""
    return get_profile(provider).price_for("ImageToTextTask")


def key_env(provider: str) -> dict[str, str]:
    variable = get_profile(provider).key_env_var
    assert variable is not None
    return {variable: KEY}


def serve(emulator: Start, provider: str, **options: Any) -> EmulatorHandle:
    """An oracle emulator speaking ``provider``'s dialect at its profile's price.

    Why not one default price per dialect in the emulator: the profiles' prices are
    capbatch's *unconfirmed* guesses (docs/providers.md), and the emulator stands for
    the provider, not for capbatch's table; tests that need a provider's price say so.
    """
    options.setdefault("price", price(provider))
    return oracle(emulator, dialect=provider, **options)


def run(
    provider: str,
    server: EmulatorHandle,
    table: Path,
    out: Path,
    *extra: str | Path,
    quiet: bool = True,
) -> CliResult:
    """``capbatch run --provider P`` against ``server``, the key in P's variable only."""
    args = run_args(server, table, out, "--provider", provider, *extra, quiet=quiet)
    return run_cli(*args, key=None, env=key_env(provider))


def feedback(provider: str, out: Path, *extra: str) -> CliResult:
    return run_cli(
        "feedback",
        out,
        "--label-column",
        "label",
        "--rate",
        "50",
        *extra,
        key=None,
        env=key_env(provider),
    )


def double_payments(done: CliResult) -> int:
    found = re.search(r"possible double payments: (\d+)", done.stderr)
    assert found, done.output
    return int(found.group(1))


def settled(server: EmulatorHandle, seconds: float = 10.0) -> dict[str, Any]:
    """The emulator's stats once no task holds money back (every task created has been
    charged or released); bounded by ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        stats = server.stats()
        if stats["reserved"] == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def assert_task_ids(provider: str, ids: pd.Series) -> None:
    """The provider's own kind of task id: a UUID for CapSolver, else an integer
    (2Captcha's of 11 digits)."""
    for task_id in ids:
        if provider == "capsolver":
            assert uuid.UUID(task_id).version == 4, task_id
        else:
            assert task_id.isdigit() and str(int(task_id)) == task_id, task_id
            assert provider != "twocaptcha" or len(task_id) == 11, task_id


def wrong_rows(result: pd.DataFrame) -> pd.Series:
    return result["answer"].str.casefold() != result["label"].str.casefold()


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# --- (1) a run, and (5) its wrong answers reported ----------------------------------


def test_a_run_then_feedback_reports_exactly_the_wrong_rows_once(
    tmp_path: Path, emulator: Start, provider: str
) -> None:
    # The oracle answers from the labels and makes 40 % of them wrong by one character,
    # the wrong answers a report is for.
    server = serve(emulator, provider, error_rate=0.4, seed=5)
    rows = 16
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run(provider, server, table, out, "--rate", "100", "--app-id", APP_ID[provider])
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
    assert (result["provider"] == provider).all()
    is_wrong = wrong_rows(result)
    wrong = set(result.loc[is_wrong, "task_id"])
    assert 0 < len(wrong) < rows
    answers, labels = result.loc[is_wrong, "answer"], result.loc[is_wrong, "label"]
    for answer, label in zip(answers, labels, strict=True):
        assert len(answer) == len(label)
        assert sum(a != b for a, b in zip(answer, label, strict=True)) == 1, (answer, label)
    assert_task_ids(provider, result["task_id"])
    assert result["task_id"].nunique() == rows
    stats = server.stats()
    assert stats["dialect"] == provider and stats["create_calls"] == rows
    assert stats["developer_ids"] == {APP_ID[provider]: rows}
    assert stats["developer_id_ignored"] == 0
    paid = stats["charged_total"]
    assert abs(paid - rows * price(provider)) < EPS
    assert abs(result["cost_usd"].sum() - paid) < EPS

    done = feedback(provider, out)
    assert done.returncode == 0, done.output
    assert f"wrong answers: {len(wrong)}; reports: {len(wrong)} reported" in done.stdout
    stats = server.stats()
    by_task = stats["reports_by_task"]
    assert set(by_task) == wrong
    for reports in by_task.values():
        assert len(reports) == 1 and reports[0]["accepted"] is True
        assert reports[0]["kind"] == REPORT_KIND[provider]
    assert (stats["reports"], stats["reports_refused"]) == (len(wrong), 0)
    # A refund (Anti-Captcha, 2Captcha) shows in the account, never in cost_usd.
    assert abs(stats["charged_total"] + stats["refunded_total"] - paid) < EPS
    assert abs(pd.read_parquet(out)["cost_usd"].sum() - paid) < EPS

    again = feedback(provider, out)
    assert again.returncode == 0, again.output
    assert f"already reported before: {len(wrong)}" in again.stdout
    assert server.stats()["reports"] == len(wrong)


# --- (2) resume after kill -9 ---------------------------------------------------------


def start_run(provider: str, args: list[Any], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(key_env(provider))
    with open(log, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "capbatch", *map(str, args)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end is killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_run_killed_part_way_resumes_and_pays_only_what_it_counts(
    tmp_path: Path,
    emulator: Start,
    provider: str,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # Every task takes 1-2 s: when the kill comes, tasks are created and unanswered.
    server = serve(emulator, provider, deferred=1.0, solve_time=(1.0, 2.0), seed=5)
    rows = 24
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--provider", provider, "--rate", "20", quiet=False)
    proc = start_run(provider, args, tmp_path / "killed.log")
    processes.append(proc)
    deadline = time.monotonic() + 30
    while server.stats()["create_calls"] < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    assert proc.wait(timeout=10) == -9
    assert 0 < server.stats()["create_calls"] < rows
    done = run_cli(*args, key=None, env=key_env(provider))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
    assert (result["answer"] == result["label"]).all()
    stats = settled(server)
    assert stats["reserved"] == 0
    # Tasks made but never in the output: created by a createTask whose task id the kill
    # kept from the journal. Each one was paid and sent again, and each is counted.
    orphans = stats["create_accepted"] - result["task_id"].nunique()
    assert orphans == stats["create_accepted"] - rows
    assert orphans <= double_payments(done)
    charged = result["cost_usd"].sum() + orphans * price(provider)
    assert abs(stats["charged_total"] - charged) < EPS


# --- (3) faults -----------------------------------------------------------------------


def test_injected_faults_leave_every_row_final_and_every_paid_answer_delivered(
    tmp_path: Path, emulator: Start, provider: str
) -> None:
    faults = {
        "http_5xx_rate": 0.1,
        "drop_rate": 0.08,
        "malformed_rate": 0.05,
        "unsolvable_rate": 0.1,
        "unavailable_rate": 0.05,
    }
    if provider == "twocaptcha":
        # Each "no slot" holds the whole run 5 s, as 2Captcha asks (error_waits):
        # tested in tests/unit; here it would only make the test slow.
        faults["unavailable_rate"] = 0.0
    server = serve(emulator, provider, seed=13, **faults)
    rows = 16
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run(provider, server, table, out, "--rate", "100", "--max-attempts", "10", quiet=False)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert set(result["status"]) <= {"solved", "failed"}
    failed = result[result["status"] == "failed"]
    assert (failed["error_code"] == "ERROR_CAPTCHA_UNSOLVABLE").all(), failed
    solved = result[result["status"] == "solved"]
    assert (solved["answer"] == solved["label"]).all()
    stats = settled(server)
    assert sum(stats["faults"].values()) > 0
    # Every answer the emulator charged for reached the output, except those of tasks
    # whose createTask reply was dropped (the client never learned their id).
    delivered = solved["task_id"].nunique()
    assert 0 <= stats["solved"] - delivered <= stats["dropped_after_create"]
    # Money: the output's costs plus some of those lost tasks, each counted.
    lost = (stats["charged_total"] - result["cost_usd"].sum()) / price(provider)
    assert abs(lost - round(lost)) < 1e-6
    assert 0 <= round(lost) <= min(stats["dropped_after_create"], double_payments(done))


# --- (4) the spend cap ----------------------------------------------------------------


def test_the_spend_cap_is_never_exceeded_at_the_provider(
    tmp_path: Path, emulator: Start, provider: str
) -> None:
    server = serve(emulator, provider, deferred=0.5, solve_time=(0.2, 0.5), seed=2)
    rows = 30
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    cap = 8 * price(provider)
    extra = ("--rate", "200", "--max-in-flight", "20", "--max-spend", repr(cap))
    done = run(provider, server, table, out, *extra)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    stats = settled(server)
    assert stats["charged_total"] <= cap + EPS
    assert abs(result["cost_usd"].sum() - stats["charged_total"]) < EPS
    solved = int((result["status"] == "solved").sum())
    assert 0 < solved == stats["create_accepted"]
    not_sent = result[result["error_code"] == "SPEND_CAP_REACHED"]
    assert len(not_sent) == rows - solved


# --- (5) Anti-Captcha's report window ------------------------------------------------


def test_anticaptcha_reports_during_the_run_meet_the_60_s_window(
    tmp_path: Path, emulator: Start
) -> None:
    provider = "anticaptcha"
    server = serve(emulator, provider, error_rate=0.4, seed=5)
    rows = 16
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    live = tmp_path / "live.parquet"
    extra = ("--rate", "100", "--label-column", "label", "--report-wrong")
    done = run(provider, server, table, live, *extra, quiet=False)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(live)
    wrong = set(result.loc[wrong_rows(result), "task_id"])
    assert 0 < len(wrong) < rows
    by_task = server.stats()["reports_by_task"]
    assert set(by_task) == wrong
    assert all(len(r) == 1 and r[0]["accepted"] is True for r in by_task.values())
    assert set(result.loc[result["reported"] == "reported", "task_id"]) == wrong

    # The same table reported only afterwards, 61 s after its tasks finished on the
    # provider's clock: every report is too late, and Anti-Captcha refuses it.
    later = tmp_path / "later.parquet"
    assert run(provider, server, table, later, "--rate", "100", "--no-cache").returncode == 0
    late = pd.read_parquet(later)
    late_wrong = set(late.loc[wrong_rows(late), "task_id"])
    assert late_wrong and not late_wrong & wrong
    api = server.control  # the emulator's clock moves; real time does not
    api(clock_offset=61.0)
    refused = feedback(provider, later)
    assert refused.returncode == 0, refused.output
    assert f"{len(late_wrong)} refused" in refused.stdout
    stats = server.stats()
    for task_id in late_wrong:
        assert [r["accepted"] for r in stats["reports_by_task"][task_id]] == [False]
    # The reports made during the run stay the only accepted ones, sent once.
    assert stats["reports"] == len(wrong)


def test_capmonster_at_a_price_above_its_table_price_keeps_the_cap_and_exact_costs(
    tmp_path: Path, emulator: Start
) -> None:
    # CapMonster's replies carry no cost: the emulator's default price ($0.0004) is
    # above the profile's $0.0003 and shows only in the balance, which the run reads.
    provider = "capmonster"
    server = oracle(emulator, dialect=provider, price=0.0004, seed=2)
    assert price(provider) < 0.0004
    rows = 20
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    cap = 8 * 0.0004
    extra = ("--rate", "200", "--max-in-flight", "20", "--max-spend", repr(cap))
    done = run(provider, server, table, out, *extra, quiet=False)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    stats = settled(server)
    assert stats["charged_total"] <= cap + EPS
    solved = int((result["status"] == "solved").sum())
    assert 0 < solved == stats["create_accepted"]
    assert abs(stats["charged_total"] - solved * 0.0004) < EPS
    assert abs(result["cost_usd"].sum() - stats["charged_total"]) < EPS, done.stderr
