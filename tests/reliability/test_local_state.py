"""Reliability: the run's own files (journal, output, locks, temporaries) going wrong.

Each test drives the real CLI (or ``capbatch.run``) against the real emulator on
loopback and checks what matters to someone paying: a broken local state stops the run
with one clear line, nothing is sent twice, and nothing incomplete is published.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import capbatch
from capbatch._io.outputs import read_results, temp_pattern
from capbatch._run.workspace import CACHE_ENV
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, SAMPLE, run_cli, running_cli, sample_frame, write_table

Start = Callable[..., EmulatorHandle]
ROWS = 240
SAFE_ADVICE = "wait for it to finish, or stop it; to run a different job use a different -o"


def oracle(emulator: Start, **options: object) -> EmulatorHandle:
    return emulator(api_key=KEY, solver="oracle", labels=str(SAMPLE / "labels.csv"), **options)


def slow(emulator: Start) -> EmulatorHandle:
    """Every task answered 1-2 s later: a run of 60 rows at 10 in flight lasts ~10 s."""
    return oracle(emulator, deferred=1.0, solve_time=(1.0, 2.0))


def error_line(stderr: str) -> str:
    """The one error line of a failed run; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("capbatch: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def answered(journal: Path) -> int:
    """Keys the journal holds as done (read with plain sqlite3, then let go)."""
    db = sqlite3.connect(journal)
    try:
        return int(db.execute("SELECT COUNT(*) FROM tasks WHERE state = 'done'").fetchone()[0])
    finally:
        db.close()


def temporaries(folder: Path, output: Path) -> list[Path]:
    pattern = temp_pattern(output)
    return [p for p in folder.iterdir() if pattern.fullmatch(p.name)]


@contextlib.contextmanager
def small_disk(mount_point: Path, size: str = "300k") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mount_point``, unmounted afterwards whatever happens."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root to mount")
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30, check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], timeout=30, check=False)


def fill(disk: Path, leave: int) -> None:
    """Take all but ``leave`` bytes of ``disk``."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


# --- 1. journal integrity -------------------------------------------------------------


def damage(journal: Path, how: str) -> None:
    """Damage a closed journal the way a bad disk block would."""
    assert not Path(f"{journal}-wal").exists() or Path(f"{journal}-wal").stat().st_size == 0
    db = sqlite3.connect(journal)
    name = "sqlite_autoindex_tasks_1" if how == "key index" else "tasks"
    sql = "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno"
    pages = [int(row[0]) for row in db.execute(sql, (name,))]
    keys = [str(row[0]) for row in db.execute("SELECT key FROM tasks")]
    size = int(db.execute("PRAGMA page_size").fetchone()[0])
    db.close()
    data = bytearray(journal.read_bytes())
    start = (pages[0] - 1) * size
    if how == "key index":
        # Well-formed page, wrong keys: the answered rows on it look unanswered.
        flipped = 0
        for key in keys:
            at = data.find(key.encode(), start, start + size)
            if at >= 0:
                data[at + 20] = ord("0") if data[at + 20] != ord("0") else ord("1")
                flipped += 1
        assert flipped >= 10
    else:
        data[start : start + size] = bytes(size)
    journal.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["key index", "table page"])
def test_a_damaged_journal_stops_the_run_before_anything_is_sent(
    tmp_path: Path, emulator: Start, how: str
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = ["run", table, "-o", out, "--base-url", server.url, "--quiet", "--rate", "300"]
    first = run_cli(*args)
    assert first.returncode == 0, first.output
    published = out.read_bytes()
    journal = tmp_path / "out.journal.sqlite"
    damage(journal, how)
    before = server.stats()
    again = run_cli(*args)
    assert again.returncode == 2, again.output
    line = error_line(again.stderr)
    assert str(journal) in line and "is damaged" in line
    assert "move it aside to start over (this pays again for every row)" in line
    assert "restore it from a backup" in line
    after = server.stats()
    # Not one request: no answered row re-sent, not even a balance check.
    assert after["create_calls"] == before["create_calls"] == ROWS
    assert after["requests_total"] == before["requests_total"]
    assert out.read_bytes() == published


# --- 2. writable paths up front -------------------------------------------------------


def unusable(tmp_path: Path, case: str) -> list[str | Path]:
    """Set up ``case``; the extra CLI arguments that make it."""
    if case == "output is a directory":
        (tmp_path / "d.parquet").mkdir()
        return ["-o", tmp_path / "d.parquet"]
    if case == "journal is a directory":
        (tmp_path / "j.sqlite").mkdir()
        return ["-o", tmp_path / "out.parquet", "--journal", tmp_path / "j.sqlite"]
    if case == "output folder is a file":
        (tmp_path / "plain").write_text("x")
        return ["-o", tmp_path / "plain" / "out.parquet"]
    if case == "journal is the output":
        return ["-o", tmp_path / "j.parquet", "--journal", tmp_path / "j.parquet"]
    if case == "journal is the output, relative":
        (tmp_path / "sub").mkdir()
        relative = os.path.relpath(tmp_path / "sub" / ".." / "j.parquet", Path.cwd())
        return ["-o", tmp_path / "j.parquet", "--journal", relative]
    assert case == "journal is the output, via a symlink"
    (tmp_path / "j.parquet").write_bytes(b"")
    (tmp_path / "link.sqlite").symlink_to(tmp_path / "j.parquet")
    return ["-o", tmp_path / "j.parquet", "--journal", tmp_path / "link.sqlite"]


@pytest.mark.parametrize(
    "case",
    [
        "output is a directory",
        "journal is a directory",
        "output folder is a file",
        "journal is the output",
        "journal is the output, relative",
        "journal is the output, via a symlink",
    ],
)
def test_unusable_paths_stop_the_run_before_anything_is_sent(
    tmp_path: Path, emulator: Start, case: str
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(20), tmp_path / "in.parquet")
    extra = unusable(tmp_path, case)
    done = run_cli("run", table, *extra, "--base-url", server.url, "--quiet")
    assert done.returncode == 2, done.output
    line = error_line(done.stderr)
    assert "directory" in line or "folder" in line or "same file" in line, line
    assert server.stats()["requests_total"] == 0
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".probe"))]


# --- 3. disk full ---------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_a_full_disk_under_the_output_publishes_nothing_and_keeps_every_answer(
    tmp_path: Path, emulator: Start, ext: str
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    journal = tmp_path / "j.sqlite"
    with small_disk(tmp_path / "disk") as disk:
        out = disk / f"out{ext}"
        previous = b"an earlier run's output"
        out.write_bytes(previous)
        fill(disk, leave=16 * 1024)  # room for the lock file and the first bytes only
        done = run_cli(
            "run", table, "-o", out, "--journal", journal, "--base-url", server.url, "--quiet",
            "--rate", "300",
        )  # fmt: skip
        assert done.returncode == 1, done.output
        line = error_line(done.stderr)
        assert str(out) in line and "No space left on device" in line
        assert out.read_bytes() == previous  # untouched
        assert temporaries(disk, out) == []
    creates = server.stats()["create_calls"]
    kept = answered(journal)
    assert kept == ROWS  # every row was answered before the output's disk filled up
    fine = tmp_path / f"out{ext}"
    rerun = run_cli(
        "run", table, "-o", fine, "--journal", journal, "--base-url", server.url, "--quiet",
        "--rate", "300",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.output
    assert server.stats()["create_calls"] == creates  # nothing paid twice
    result = read_results(fine)
    assert len(result) == ROWS and (result["status"] == "solved").all()


def test_a_full_disk_under_the_journal_stops_with_the_journal_intact(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(ROWS), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    saved = tmp_path / "saved.sqlite"
    with small_disk(tmp_path / "disk") as disk:
        journal = disk / "j.sqlite"
        done = run_cli(
            "run", table, "-o", out, "--journal", journal, "--base-url", server.url, "--quiet",
            "--rate", "300",
        )  # fmt: skip
        assert done.returncode == 1, done.output
        line = error_line(done.stderr)
        assert str(journal) in line and "full" in line, line
        assert not out.exists() and temporaries(tmp_path, out) == []
        # Copy the journal (with its write-ahead log) off the full disk, as a user would.
        shutil.copy(journal, saved)
        if Path(f"{journal}-wal").exists():
            shutil.copy(f"{journal}-wal", f"{saved}-wal")
    kept = answered(saved)
    creates = server.stats()["create_calls"]
    assert 0 < kept < ROWS
    rerun = run_cli(
        "run", table, "-o", out, "--journal", saved, "--base-url", server.url, "--quiet",
        "--rate", "300",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.output
    # Rows answered before the disk filled up are not sent again.
    assert server.stats()["create_calls"] - creates <= ROWS - kept
    result = read_results(out)
    assert len(result) == ROWS and (result["status"] == "solved").all()


# --- 4 and 5. one run per output, whatever is deleted under it -------------------------


def test_a_second_run_on_the_same_output_stops_at_once_even_with_the_journal_deleted(
    tmp_path: Path, emulator: Start
) -> None:
    server = slow(emulator)
    rows = 60
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.journal.sqlite"
    args = ["run", table, "-o", out, "--base-url", server.url, "--no-cache"]
    # 3 requests a second: the first run needs 20 s to send its rows, far longer than
    # the two refused runs take to start, even on a loaded machine.
    args += ["--max-in-flight", "10", "--quiet", "--rate", "3"]
    with running_cli(*args, log=tmp_path / "first.log") as first:
        wait_until(
            lambda: server.stats()["create_calls"] >= 3 or first.poll() is not None,
            30,
            "the first run to start sending",
        )
        assert first.poll() is None, "the first run ended before the test could race it"
        # SQLite's lock lives on this inode: deleting it used to let a second run in.
        for path in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm")):
            path.unlink(missing_ok=True)
        started = time.monotonic()
        second = run_cli(*args, timeout=60)
        other_journal = run_cli(*args, "--journal", tmp_path / "other.sqlite", timeout=60)
        assert time.monotonic() - started < 30  # each stopped at once, sending nothing
        assert first.poll() is None, "the first run ended: the refusals raced nothing"
        for refused in (second, other_journal):
            assert refused.returncode == 2, refused.output
            line = error_line(refused.stderr)
            assert f"the output {out} is in use by another capbatch run" in line
            assert SAFE_ADVICE in line and "--journal" not in line
        first.kill()
        first.wait(timeout=10)
    stats = server.stats()
    # Only the first run sent anything, and no image twice.
    assert 0 < stats["create_calls"] < rows
    assert max(stats["creates_by_hash"].values()) == 1


# --- 6. stale temporaries -------------------------------------------------------------


def test_the_temporary_of_a_killed_run_is_removed_by_the_next_run(
    tmp_path: Path, emulator: Start
) -> None:
    server = slow(emulator)
    rows = 60
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out = tmp_path / "out.csv"
    args = ["run", table, "-o", out, "--base-url", server.url, "--max-in-flight", "10"]
    args += ["--rate", "100"]
    with running_cli(*args, "--quiet") as proc:
        wait_until(
            lambda: bool(temporaries(tmp_path, out)) and server.stats()["create_calls"] > 0,
            30,
            "the run to start writing",
        )
        proc.kill()  # kill -9: no cleanup of any kind
        proc.wait(timeout=10)
    assert temporaries(tmp_path, out), "the kill left no temporary: the test proves nothing"
    done = run_cli(*args, "--quiet", timeout=120)
    assert done.returncode == 0, done.output
    assert temporaries(tmp_path, out) == []
    assert not (tmp_path / f".{out.name}.lock").exists()
    result = read_results(out)
    assert len(result) == rows and (result["status"] == "solved").all()


# --- 7. in-memory inputs keep a journal on disk ---------------------------------------


def test_an_in_memory_run_resumes_from_its_journal_in_the_cache(
    tmp_path: Path, emulator: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    server = oracle(emulator)
    frame = sample_frame(12)
    notices: list[str] = []
    options = {"api_key": KEY, "base_url": server.url, "progress": False, "rate": 200}
    # A first run that stops part-way: its spend cap lets about 5 of 12 tasks through
    # (like a kernel that died part-way, it leaves answered rows and unsent ones).
    first = capbatch.run(frame, max_spend=0.002, price=0.0004, notice=notices.append, **options)
    solved_first = int((first["status"] == "solved").sum())
    assert 0 < solved_first < len(frame)
    journal = first.attrs["capbatch"]["journal"]
    assert journal is not None and Path(journal).is_file()
    assert Path(journal).is_relative_to(tmp_path / "cache" / "journals")
    assert [n for n in notices if journal in n] == [notices[0]]  # said once, on one line
    assert "\n" not in notices[0]
    creates = server.stats()["create_calls"]
    # The same call again (no cap this time): answered rows come from the journal.
    second = capbatch.run(frame.copy(), **options)
    assert second.attrs["capbatch"]["journal"] == journal
    assert server.stats()["create_calls"] - creates == len(frame) - solved_first
    assert (second["status"] == "solved").all() and (second["answer"] == second["label"]).all()


def test_in_memory_opt_out_and_the_local_solver(
    tmp_path: Path, emulator: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    server = oracle(emulator)
    frame = sample_frame(3)
    kept = capbatch.run(frame, api_key=KEY, base_url=server.url, quiet=True, journal=":memory:")
    assert kept.attrs["capbatch"]["journal"] is None
    assert not (tmp_path / "cache" / "journals").exists()
    local = capbatch.run(frame, provider="local", quiet=True)
    assert len(local) == 3 and set(local["status"]) <= {"solved", "failed"}
    assert Path(local.attrs["capbatch"]["journal"]).parent == tmp_path / "cache" / "journals"
