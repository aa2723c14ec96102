"""The promises attacked through the real CLI against the real emulator on loopback:
the spend cap (bad values, every run of a job, the provider's real price), a graceful
stop on SIGINT/SIGTERM that pays nothing twice, failed rows retried by the next run,
an unreachable provider, answers kept apart per server, and ``--no-cache`` keys."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    KEY,
    PRICE,
    oracle,
    run_cli,
    sample_frame,
    start_cli,
    write_table,
)
from tests.e2e.runner_helpers import (
    run_args as quiet_run_args,
)

Start = Callable[..., EmulatorHandle]


def run_args(server: EmulatorHandle, table: Path, out: Path, *extra: str | Path) -> list[Any]:
    """The run's arguments, summary on: these tests read what it says."""
    return quiet_run_args(server, table, out, *extra, quiet=False)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- the spend cap ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--max-spend", "nan"), "--max-spend"),
        (("--max-spend", "inf"), "--max-spend"),
        (("--max-spend", "-1"), "--max-spend"),
        (("--price", "nan", "--max-spend", "1"), "--price"),
        (("--price", "-0.001"), "--price"),
        (("--price", "0", "--max-spend", "0.001"), "--price USD"),
    ],
)
def test_money_values_that_cannot_cap_are_refused_up_front(
    tmp_path: Path, emulator: Start, flags: tuple[str, ...], said: str
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(5), tmp_path / "in.parquet")
    done = run_cli(*run_args(server, table, tmp_path / "out.parquet", *flags))
    assert done.returncode == 2, done.output
    assert said in done.stderr and "Traceback" not in done.stderr
    assert server.stats()["create_calls"] == 0


def test_the_cap_is_the_jobs_over_every_run(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(30), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    cap = 10 * PRICE
    args = run_args(server, table, out, "--price", str(PRICE), "--max-spend", str(cap))
    first = run_cli(*args)
    assert first.returncode == 0, first.output
    charged = server.stats()["charged_total"]
    assert 0 < charged <= cap + 1e-12
    # The same command again: the cap is reached already, so nothing is sent.
    creates = server.stats()["create_calls"]
    again = run_cli(*args)
    assert again.returncode == 0, again.output
    assert server.stats()["create_calls"] == creates
    assert server.stats()["charged_total"] == charged
    assert "earlier" in again.stderr
    # Raising the cap goes on from there, and the job's total stays under it.
    more = run_cli(*run_args(server, table, out, "--price", str(PRICE), "--max-spend", "1"))
    assert more.returncode == 0, more.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all()
    assert server.stats()["create_calls"] == 30


def test_the_cap_holds_on_what_the_provider_really_charges(tmp_path: Path, emulator: Start) -> None:
    # The emulator charges 25x the table price capbatch assumes for CapSolver.
    server = oracle(emulator, price=0.01, deferred=0.5, solve_time=(0.1, 0.3), seed=4)
    table = write_table(sample_frame(40), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out, "--max-spend", "0.02", "--max-in-flight", "20"))
    assert done.returncode == 0, done.output
    stats = server.stats()
    assert 0 < stats["charged_total"] <= 0.02 + 1e-9
    result = pd.read_parquet(out)
    assert result["cost_usd"].sum() == pytest.approx(stats["charged_total"])
    assert "charges $0.010000 a task" in done.stderr


# --- a graceful stop ----------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_waits_for_requests_in_flight_and_pays_nothing_twice(
    tmp_path: Path, emulator: Start, sig: signal.Signals, status: int
) -> None:
    # Slow replies: when the signal comes, requests are certainly out.
    server = oracle(emulator, deferred=0.5, solve_time=(0.3, 0.8), latency=(0.3, 0.6), seed=8)
    table = write_table(sample_frame(60), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "40", "--max-in-flight", "10")
    log = tmp_path / "first.log"
    proc = start_cli(*args, log=log)
    wait_for(lambda: server.stats()["create_calls"] >= 15)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == status
    text = log.read_text()
    assert "waiting up to" in text and "run the same command to resume" in text
    assert "Traceback" not in text
    # The output is there, every row in it, the unfinished ones pending, and marked so.
    first = pd.read_parquet(out)
    assert list(first["id"]) == list(sample_frame(60)["id"])
    assert set(first["status"]) <= {"solved", "pending"}
    assert (first["status"] == "pending").any()
    assert pq.read_metadata(out).metadata[b"capbatch.complete"] == b"false"
    assert not list(tmp_path.glob(".out.parquet.*.tmp"))
    creates = server.stats()["create_calls"]
    done = run_cli(*args)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all()
    # Every task created once: the stop journaled every task id that came back.
    assert server.stats()["create_calls"] == 60 >= creates
    assert "possible double payments: 0" in done.stderr


def test_a_second_signal_stops_at_once_with_the_journal_intact(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, deferred=1.0, solve_time=(2.0, 3.0), latency=(1.0, 1.5), seed=9)
    table = write_table(sample_frame(40), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "40", "--max-in-flight", "10")
    proc = start_cli(*args, log=tmp_path / "first.log")
    wait_for(lambda: server.stats()["create_calls"] >= 10)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - started < 5
    assert "stopped at once" in (tmp_path / "first.log").read_text()
    server.control(latency=(0.0, 0.0), solve_time=(0.1, 0.2))  # a quick resume
    done = run_cli(*args, "--quiet")
    assert done.returncode == 0, done.output
    assert (pd.read_parquet(out)["status"] == "solved").all()


# --- failed rows and the next run ---------------------------------------------------------


def test_rows_failed_for_a_passing_reason_are_sent_again(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, http_5xx_rate=0.4, seed=3)
    table = write_table(sample_frame(30), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--max-attempts", "1", "--rate", "20")
    first = run_cli(*args)
    assert first.returncode == 0, first.output
    failed = pd.read_parquet(out)
    passing = failed["error_code"].fillna("").str.startswith("HTTP_5")
    assert passing.any()
    server.control(http_5xx_rate=0.0)
    creates = server.stats()["create_calls"]
    done = run_cli(*args)
    assert done.returncode == 0, done.output
    assert (pd.read_parquet(out)["status"] == "solved").all()
    assert f"{int(passing.sum())} sent again" in done.stderr
    assert server.stats()["create_calls"] == creates + int(passing.sum())


def test_rows_failed_for_good_are_kept_unless_asked(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, unsolvable_rate=1.0)
    table = write_table(sample_frame(6), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--max-attempts", "2")
    assert run_cli(*args).returncode == 0
    assert (pd.read_parquet(out)["error_code"] == "ERROR_CAPTCHA_UNSOLVABLE").all()
    server.control(unsolvable_rate=0.0)
    creates = server.stats()["create_calls"]
    kept = run_cli(*args)
    assert kept.returncode == 0 and server.stats()["create_calls"] == creates
    assert "6 kept as failed for good" in kept.stderr and "--retry-failed" in kept.stderr
    retried = run_cli(*args, "--retry-failed")
    assert retried.returncode == 0, retried.output
    assert (pd.read_parquet(out)["status"] == "solved").all()


# --- the provider's URL and outages -------------------------------------------------------


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1/x", "http://", "http://h:99999"])
def test_a_provider_url_that_cannot_work_is_refused_up_front(tmp_path: Path, url: str) -> None:
    table = write_table(sample_frame(3), tmp_path / "in.parquet")
    done = run_cli("run", table, "-o", tmp_path / "out.parquet", "--base-url", url)
    assert done.returncode == 2, done.output
    assert "--base-url" in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_provider_stops_the_run_without_failing_rows(
    tmp_path: Path, emulator: Start
) -> None:
    table = write_table(sample_frame(20), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    started = time.monotonic()
    # Port 9 (discard) on loopback: nothing listens, every connect is refused.
    dead = run_cli(
        "run", table, "-o", out, "--base-url", "http://127.0.0.1:9", "--outage-timeout", "3"
    )
    assert dead.returncode == 1, dead.output
    assert time.monotonic() - started < 60
    assert "has not answered" in dead.stderr and "Traceback" not in dead.stderr
    assert not out.exists()
    # No row was journaled as failed: against a working server every row is solved.
    server = oracle(emulator)
    done = run_cli(*run_args(server, table, out))
    assert done.returncode == 0, done.output
    assert (pd.read_parquet(out)["status"] == "solved").all()


def test_an_outage_pauses_the_run_and_it_goes_on_by_itself(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, latency=(0.05, 0.1), seed=5)
    table = write_table(sample_frame(60), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "20", "--max-attempts", "2")
    proc = start_cli(*args, log=tmp_path / "run.log")
    wait_for(lambda: server.stats()["create_calls"] >= 10)
    server.control(http_5xx_rate=1.0)
    time.sleep(4)
    server.control(http_5xx_rate=0.0)
    assert proc.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
    result = pd.read_parquet(out)
    # Without the pause, rows would have used up their two attempts on the 500s.
    assert (result["status"] == "solved").all(), result["error_code"].value_counts()
    assert "unreachable 1 time" in (tmp_path / "run.log").read_text()


# --- what a cached answer is --------------------------------------------------------------


def test_answers_from_another_server_are_not_reused(tmp_path: Path, emulator: Start) -> None:
    first = emulator(api_key=KEY, solver="constant", answer="first")
    second = emulator(api_key=KEY, solver="constant", answer="second")
    table = write_table(sample_frame(5), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    assert run_cli(*run_args(first, table, out)).returncode == 0
    done = run_cli(*run_args(second, table, out))
    assert done.returncode == 0, done.output
    assert set(pd.read_parquet(out)["answer"]) == {"second"}
    assert second.stats()["create_calls"] == 5
    assert "also holds answers from capsolver at http://127.0.0.1" in done.stderr


def test_no_cache_keys_survive_reordered_rows(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    frame = pd.concat([sample_frame(8), sample_frame(4)], ignore_index=True)
    frame["id"] = [f"r{i}" for i in range(12)]
    out = tmp_path / "out.parquet"
    table = write_table(frame, tmp_path / "in.parquet")
    assert run_cli(*run_args(server, table, out, "--no-cache")).returncode == 0
    assert server.stats()["create_calls"] == 12
    write_table(frame.iloc[::-1].reset_index(drop=True), table)
    assert run_cli(*run_args(server, table, out, "--no-cache")).returncode == 0
    assert server.stats()["create_calls"] == 12
    # Without an id column: the n-th occurrence of an image is the same row.
    plain = tmp_path / "plain.parquet"
    frame_no_id = frame.drop(columns=["id"])
    write_table(frame_no_id, plain)
    out2 = tmp_path / "out2.parquet"
    assert run_cli(*run_args(server, plain, out2, "--no-cache")).returncode == 0
    write_table(frame_no_id.iloc[::-1].reset_index(drop=True), plain)
    assert run_cli(*run_args(server, plain, out2, "--no-cache")).returncode == 0
    assert server.stats()["create_calls"] == 24


def test_identical_images_far_apart_in_a_batch_are_paid_once(
    tmp_path: Path, emulator: Start
) -> None:
    # Rows 240-299 repeat rows 0-59. With few jobs open at once, the first copies'
    # jobs end long before the repeats are scheduled: they must come from the cache.
    server = oracle(emulator)
    table = write_table(sample_frame(300), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out, "--max-in-flight", "2", "--rate", "500"))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert server.stats()["create_calls"] == 240
    assert result["from_cache"].sum() == 60
    assert result["cost_usd"].sum() == pytest.approx(server.stats()["charged_total"])


# --- a fault inside a row's job -----------------------------------------------------------


class _BrokenService:
    """Answers the first rows, then fails in a way no one planned for."""

    def __init__(self) -> None:
        self.calls = 0

    async def create_task(self, task: Any, *, callback_url: str | None = None) -> Any:
        from capbatch._providers.protocol import TaskReply

        self.calls += 1
        if self.calls > 5:
            raise RuntimeError("an unplanned fault")
        return TaskReply(task_id=None, status="ready", raw_status="ready", solution={"text": "x"})

    async def get_task_result(self, task_id: str) -> Any:
        raise AssertionError("not deferred")

    async def get_balance(self) -> float | None:
        return None

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        return False

    async def aclose(self) -> None:
        return None


def test_an_unexpected_fault_in_a_job_stops_the_run_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    import capbatch
    from capbatch._exceptions import RunFailed

    table = write_table(sample_frame(40), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    service = _BrokenService()
    with pytest.raises(RunFailed, match="unexpected RuntimeError: an unplanned fault"):
        capbatch.run(table, output=out, service=service, max_in_flight=1, progress=False)
    assert not out.exists()  # not published as if complete
    assert not list(tmp_path.glob(".out.parquet.*"))
    # The answers it had are in the journal: the next run does not ask for them again.
    again = _BrokenService()
    again.calls = -100
    result = capbatch.run(table, output=out, service=again, progress=False)
    assert (result["status"] == "solved").all()
    assert again.calls == -100 + 40 - 5


# --- key files as editors and shells write them -------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("utf16.txt", ("\ufeff" + KEY + "\r\n").encode("utf-16-le")),  # PowerShell's >
        ("bom.txt", ("\ufeff" + KEY + "\n").encode("utf-8")),
        ("spaced.txt", f"# my capsolver key\n\n   {KEY}   \n".encode()),
    ],
)
def test_key_files_in_common_encodings_are_read(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    emulator: Start,
    name: str,
    content: bytes,
) -> None:
    server = oracle(emulator)
    # Outside tmp_path, which is scanned for the key after the test.
    key_file = tmp_path_factory.mktemp("keys") / name
    key_file.write_bytes(content)
    table = write_table(sample_frame(3), tmp_path / "in.parquet")
    done = run_cli(
        *run_args(server, table, tmp_path / "out.parquet", "--api-key-file", key_file), key=None
    )
    assert done.returncode == 0, done.output
    assert server.stats()["create_calls"] == 3


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "empty"),
        (b"# only a comment\n", "comment"),
        (b"sk abc def\n", "space"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_a_bad_key_file_is_one_line_that_says_what_is_wrong(
    tmp_path: Path, content: bytes, said: str
) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_bytes(content)
    table = write_table(sample_frame(3), tmp_path / "in.parquet")
    done = run_cli(
        "run", table, "-o", tmp_path / "out.parquet", "--provider", "capsolver",
        "--base-url", "http://127.0.0.1:9", "--api-key-file", key_file, key=None,
    )  # fmt: skip
    assert done.returncode == 2, done.output
    assert said in done.stderr.lower() and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
