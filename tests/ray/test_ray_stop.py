"""Ctrl-C on ``capbatch run --engine ray``: the real CLI as a subprocess against the
emulator, the signal sent to its whole process group, as a terminal sends it; and the
driver's handlers (``_ray/stops.py``) on their own, without a cluster.

The first signal stops the cluster gracefully (no createTask after it took effect; the
replies to requests out are journaled; the output is written with the unfinished rows
pending; exit 130), and the same command run again finishes every row without creating
any image twice. A second signal stops at once, the journal as it stands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import capbatch
from capbatch._exceptions import RunInterrupted
from capbatch._ray.stops import DriverStops, StopAtOnce
from capbatch._run.summary import RunSummary
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, oracle, sample_frame, write_table
from tests.ray.test_ray_runs import ray_run, stats, twice_created, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray"), pytest.mark.timeout(300)]

NOTICE = "stopping; waiting up to"
#: Seconds from the notice line to the last createTask the stop may let through. The
#: notice is printed once the budget actor holds the stop; every worker is waiting on
#: that actor's ``until_stopped`` call, so it hears the stop in one actor reply
#: (milliseconds on one node), and a create already past the gate's last check is
#: counted by the emulator as it arrives. One second covers that reply and the event
#: loops of a loaded 2-core machine; a stop that relied on the next heartbeat, or
#: workers that kept creating, would show up after it.
STOP_LAG = 1.0


def start_run(
    table: Path, out: Path, server: EmulatorHandle, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``capbatch run TABLE --engine ray`` in a session (a process group) of its own;
    without ``--ray-address`` in ``extra`` it starts a local cluster of its own."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("RAY_ADDRESS", None)
    env["CAPSOLVER_API_KEY"] = KEY
    args = ["run", str(table), "-o", str(out), "--engine", "ray", "--base-url", server.url]
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "capbatch", *args, "--quiet", *extra],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )


def tasks_created(server: EmulatorHandle) -> int:
    """Tasks the emulator created (a createTask whose connection was cut during the
    emulator's latency counts as a call, not as a task)."""
    return sum(stats(server)["creates_by_hash"].values())


def interrupt(child: subprocess.Popen[bytes]) -> None:
    """Ctrl-C as a terminal sends it: SIGINT to every process of the group."""
    os.killpg(child.pid, signal.SIGINT)


def finished(child: subprocess.Popen[bytes], seconds: float) -> int:
    try:
        return child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        raise


def test_ctrl_c_stops_a_driver_started_cluster_gracefully(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """The real Ctrl-C case: the CLI starts its own local cluster (its services in the
    driver's process group), and SIGINT goes to the whole group once tasks are out."""
    # Slow replies and deferred answers: when the signal comes, requests are out.
    server = oracle(emulator, deferred=1.0, solve_time=(2.0, 3.0), latency=(0.3, 0.6))
    rows = 24
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out, log = tmp_path / "out.parquet", tmp_path / "first.log"
    child = start_run(table, out, server, log, "--rate", "8")
    try:
        wait_for(lambda: stats(server)["create_calls"] >= 6, 180, "tasks created")
        interrupt(child)
        wait_for(lambda: NOTICE in log.read_text(), 20, "the stop's notice")
        time.sleep(STOP_LAG)
        settled = stats(server)["create_calls"]
        assert finished(child, 90) == 130, log.read_text()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    text = log.read_text()
    assert "capbatch: SIGINT: stopping; waiting up to 30 s for" in text
    assert "run the same command to resume" in text and "Traceback" not in text
    created = stats(server)["create_calls"]
    assert created == settled < rows  # nothing created once the stop took effect
    # The output: every row, the unfinished ones pending, marked incomplete.
    first = capbatch.read_results(out)
    assert list(first["id"]) == list(sample_frame(rows)["id"])
    assert set(first["status"]) <= {"solved", "pending"}
    assert (first["status"] == "pending").any()
    assert pq.read_metadata(out).metadata[b"capbatch.complete"] == b"false"

    # The same command again (here on the session's cluster): every task created
    # before the stop is polled by its journaled id, not created again.
    server.control(latency=(0.0, 0.0), solve_time=(0.1, 0.2))  # a quick resume
    before = tasks_created(server)
    outcome = ray_run(table, out, server, rate=40)
    results = capbatch.read_results(out)
    assert (results["status"] == "solved").all() and len(results) == rows
    assert twice_created(server) <= outcome.summary.possible_double_payments
    assert tasks_created(server) == rows + twice_created(server)
    assert outcome.summary.creates == rows - before + twice_created(server)


def test_a_second_ctrl_c_stops_at_once_with_the_journal_intact(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """On the session's cluster (``--ray-address``): two SIGINTs to the group, with
    replies slow enough that the graceful drain would take seconds: the driver stops
    at once, writes no output, and the journal lets the next run (here ``capbatch
    run``'s own engine: either resumes the other's journal) pay nothing twice uncounted."""
    server = oracle(emulator, deferred=1.0, solve_time=(2.0, 3.0), latency=(8.0, 9.0))
    rows = 20
    table = write_table(sample_frame(rows), tmp_path / "in.parquet")
    out, log = tmp_path / "out.parquet", tmp_path / "first.log"
    address = ray_cluster.get_runtime_context().gcs_address
    child = start_run(table, out, server, log, "--rate", "20", "--ray-address", address)
    try:
        wait_for(lambda: stats(server)["create_calls"] >= 6, 180, "tasks created")
        interrupt(child)
        wait_for(lambda: NOTICE in log.read_text(), 20, "the stop's notice")
        started = time.monotonic()
        interrupt(child)
        assert finished(child, 60) == 130, log.read_text()
        stopped_in = time.monotonic() - started
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    text = log.read_text()
    assert "stopped at once by SIGINT" in text and "Traceback" not in text
    assert stopped_in < 6.0  # replies out take 8-9 s: it did not wait for them
    assert not out.exists()  # no output: a run stopped at once writes none
    server.control(latency=(0.0, 0.0), solve_time=(0.1, 0.2))  # a quick resume
    for _ in range(40):  # the stopped driver's journal actor is going away
        try:
            frame = capbatch.run(
                table,
                output=str(out),
                provider="capsolver",
                base_url=server.url,
                api_key=KEY,
                rate=20,
                quiet=True,
            )
            break
        except capbatch.InUseError:
            time.sleep(0.5)
    assert (frame["status"] == "solved").all() and len(frame) == rows
    double = frame.attrs["capbatch"]["possible_double_payments"]
    assert twice_created(server) <= double
    assert tasks_created(server) == rows + twice_created(server)


# --- the driver's handlers, without a cluster ----------------------------------------------


class _Budget:
    """The budget actor's ``stop`` as the driver calls it (``ray.get`` patched out)."""

    def __init__(self) -> None:
        self.stops: list[tuple[str, int]] = []
        budget = self

        class _Stop:
            @staticmethod
            def remote(message: str, number: int) -> int:
                budget.stops.append((message, number))
                return 3  # requests out, as the workers last said

        self.stop = _Stop()


@pytest.fixture
def no_ray_get(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "get", lambda value, timeout=None: value)


def test_the_first_signal_stops_the_cluster_a_second_at_once(no_ray_get: None) -> None:
    said: list[str] = []
    stops = DriverStops(said.append, enabled=True, drain_timeout=30)
    previous = signal.getsignal(signal.SIGINT)
    budget = _Budget()
    stops.install()
    try:
        stops.streaming(budget)
        signal.raise_signal(signal.SIGINT)  # a real signal, to the handler installed
        wait_for(lambda: bool(said), 5, "the notice")
        assert said == [
            "capbatch: SIGINT: stopping; waiting up to 30 s for 3 requests in flight to "
            "come back (send it again to stop at once)"
        ]
        assert budget.stops == [("interrupted by SIGINT", signal.SIGINT)]
        with pytest.raises(StopAtOnce):
            signal.raise_signal(signal.SIGTERM)
        assert str(stops.aborted) == "stopped at once by SIGTERM"
        signal.raise_signal(signal.SIGINT)  # stopping already: nothing more to do
    finally:
        stops.close()
    assert signal.getsignal(signal.SIGINT) is previous  # the caller's handler is back
    summary = RunSummary(provider="capsolver", task_type="ImageToTextTask")
    stops.mark(summary)
    assert not summary.complete and summary.stopped_by == "RUN_INTERRUPTED"
    with pytest.raises(RunInterrupted) as raised:
        stops.raise_if_interrupted(summary)
    assert raised.value.summary is summary and raised.value.signal_number == signal.SIGINT


def test_a_signal_before_the_stream_or_twice_while_writing_stops_at_once() -> None:
    """Before the stream nothing is out to wait for; once every batch is in, a first
    signal lets the output be written, a second stops at once."""
    early = DriverStops(print, enabled=True, drain_timeout=30)
    with pytest.raises(StopAtOnce):
        early._on_signal(signal.SIGINT, None)
    assert str(early.aborted) == "stopped at once by SIGINT" and early.interrupted is None

    late = DriverStops(print, enabled=True, drain_timeout=30)
    late.streaming(_Budget())
    late.ending()
    late._on_signal(signal.SIGTERM, None)
    assert late.interrupted is None and late.aborted is None
    with pytest.raises(StopAtOnce):
        late._on_signal(signal.SIGTERM, None)
    summary = RunSummary(provider="capsolver", task_type="ImageToTextTask")
    late.mark(summary)
    late.raise_if_interrupted(summary)  # not interrupted: the run's outcome stands
    assert summary.complete
