"""The Ray engine against the real emulator on loopback, on one local Ray cluster.

The emulator's counters are the proof: its one-second window of arrivals (the rate), what
it charged (the spend cap), how often it created each image (no task created twice after a
worker or the driver is killed, beyond the possible double payments the journal counts).
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import capbatch
from capbatch._exceptions import InUseError
from capbatch._run.options import RunOptions
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, PRICE, oracle, sample_frame, write_table
from tests.e2e.s3 import S3Store

# xdist_group: under --dist loadgroup (pyproject's addopts) the cluster tests share one
# worker, one cluster. Ray starts worker processes for each run (10-15 s on a loaded
# 2-core machine), so each test may take longer than the suite's 120 s default.
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray"), pytest.mark.timeout(300)]

COMPARED = ["id", "answer", "status", "error_code", "from_cache", "cost_usd"]


def stats(server: EmulatorHandle) -> dict[str, Any]:
    reply = httpx.get(f"{server.url}/_stats", timeout=10)
    reply.raise_for_status()
    data: dict[str, Any] = reply.json()
    return data


def reset_stats(server: EmulatorHandle) -> None:
    body = {"clientKey": KEY}
    httpx.post(f"{server.url}/_reset_stats", json=body, timeout=10).raise_for_status()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.1)


def twice_created(server: EmulatorHandle) -> int:
    """createTask calls for an image beyond its first."""
    return sum(n - 1 for n in stats(server)["creates_by_hash"].values())


def blocks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """``frame`` in pieces of ``size`` rows: blocks Ray can hand to several workers."""
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


def options(server: EmulatorHandle, **extra: Any) -> RunOptions:
    extra.setdefault("quiet", True)
    return RunOptions(base_url=server.url, api_key=KEY, provider="capsolver", **extra)


def ray_run(table: Path, out: Path, server: EmulatorHandle, **extra: Any) -> Any:
    """``capbatch run TABLE --engine ray`` in this process (the session's cluster)."""
    from capbatch._ray.run import execute_on_ray

    return execute_on_ray(table, options(server, output=str(out), **extra), address=None)


def test_same_rows_as_capbatch_run_at_the_rate(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """24 rows (4 repeated images): the Ray engine's output equals ``capbatch run``'s,
    row for row; each image is created once; no one-second window exceeds --rate."""
    server = oracle(emulator, deferred=0.5, solve_time=(0.1, 0.4))
    frame = sample_frame(20)
    frame = pd.concat([frame, frame.head(4).assign(id=lambda f: f["id"] + "-again")])
    table = write_table(frame.reset_index(drop=True), tmp_path / "in.parquet")
    capbatch.run(
        table,
        output=str(tmp_path / "one.parquet"),
        provider="capsolver",
        base_url=server.url,
        api_key=KEY,
        rate=8,
        quiet=True,
    )
    reset_stats(server)

    outcome = ray_run(table, tmp_path / "ray.parquet", server, rate=8)

    counters = stats(server)
    assert counters["create_calls"] == 20
    assert twice_created(server) == 0
    assert 0 < counters["max_requests_per_second"] <= 8
    one = capbatch.read_results(tmp_path / "one.parquet")[COMPARED]
    on_ray = capbatch.read_results(tmp_path / "ray.parquet")[COMPARED]
    pd.testing.assert_frame_equal(on_ray, one)
    assert outcome.summary.solved == 24 and outcome.summary.from_cache == 4
    assert outcome.summary.creates == 20
    assert outcome.summary.spend_usd == pytest.approx(20 * PRICE)


def test_spend_cap_holds_for_the_cluster(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """``capbatch.ray.solve`` with a cap of 8 tasks over 2 workers: the server charges
    no more than the cap; the rows left say the cap stopped them."""
    import capbatch.ray

    server = oracle(emulator, deferred=1.0, solve_time=(0.2, 0.5))
    frame = sample_frame(30)
    cap = 8 * PRICE + 1e-9
    dataset = ray_cluster.data.from_pandas(blocks(frame, 6))
    solved = capbatch.ray.solve(
        dataset,
        workers=2,
        batch_rows=5,
        base_url=server.url,
        api_key=KEY,
        price=PRICE,
        max_spend=cap,
        rate=40,
        journal=str(tmp_path / "cap.journal.sqlite"),
    ).to_pandas()

    assert len(solved) == 30
    charged = stats(server)["charged_total"]
    assert charged <= cap
    assert (solved["status"] == "solved").sum() == round(charged / PRICE) >= 4
    refused = solved[solved["status"] != "solved"]
    assert set(refused["error_code"]) == {"SPEND_CAP_REACHED"}


def test_a_killed_worker_creates_no_task_twice(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """A worker killed while its tasks are out: Ray restarts it and retries its
    batches; the journal's claims and task ids make the new worker poll those tasks."""
    from capbatch._ray.api import build

    server = oracle(emulator, deferred=1.0, solve_time=(2.0, 3.0))
    frame = sample_frame(24)
    run = options(server, rate=40, journal=str(tmp_path / "kill.journal.sqlite"))
    stage, actors = build(
        ray_cluster.data.from_pandas(blocks(frame, 6)), run, workers=2, batch_rows=6
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(stage.to_pandas)
        wait_for(lambda: stats(server)["create_calls"] >= 8, 60, "tasks created")
        workers = ray_cluster.get(actors.journal.workers.remote())
        victim = next(iter(workers.values()))
        ray_cluster.kill(victim, no_restart=False)
        solved = result.result(timeout=90)

    assert (solved["status"] == "solved").all() and len(solved) == 24
    assert len(ray_cluster.get(actors.journal.workers.remote())) > len(workers)  # restarted
    assert twice_created(server) <= actors.remote.total_uncertain()
    assert stats(server)["create_calls"] <= 24 + actors.remote.total_uncertain()


def test_a_killed_driver_resumes_without_paying_twice(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """``capbatch run --engine ray --ray-address`` killed (SIGKILL, the whole process
    group) with tasks out; the same command run again polls the journaled task ids."""
    server = oracle(emulator, deferred=1.0, solve_time=(2.0, 3.0))
    table = write_table(sample_frame(20), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    address = ray_cluster.get_runtime_context().gcs_address
    args = ["run", table, "-o", out, "--base-url", server.url, "--quiet", "--rate", "20"]
    env = {**os.environ, "CAPSOLVER_API_KEY": KEY}
    command = [sys.executable, "-m", "capbatch", *map(str, args), "--engine", "ray"]
    child = subprocess.Popen([*command, "--ray-address", address], env=env, start_new_session=True)
    try:
        wait_for(lambda: stats(server)["create_calls"] >= 8, 180, "tasks created")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    created_before = stats(server)["create_calls"]
    assert created_before < 20 and not out.exists()

    outcome = None
    for _ in range(40):  # the killed driver's journal actor is going away
        try:
            outcome = ray_run(table, out, server, rate=20)
            break
        except InUseError:
            time.sleep(0.5)
    assert outcome is not None

    results = capbatch.read_results(out)
    assert (results["status"] == "solved").all() and len(results) == 20
    double = outcome.summary.possible_double_payments
    assert twice_created(server) <= double
    assert stats(server)["create_calls"] == 20 + twice_created(server)
    assert outcome.summary.creates == 20 - created_before + twice_created(server)


def test_the_local_solver_on_every_worker_reads_as_in_one_process(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """``provider="local"`` on 2 workers (one ddddocr model each, loaded once per actor):
    the same answers as ``capbatch.run`` with the local solver, nothing sent anywhere."""
    from capbatch._ray.api import build

    frame = sample_frame(16)
    expected = capbatch.run(frame, provider="local", quiet=True, journal=str(tmp_path / "one"))
    run = RunOptions(provider="local", quiet=True, journal=str(tmp_path / "ray.sqlite"))
    stage, actors = build(
        ray_cluster.data.from_pandas(blocks(frame, 4)), run, workers=2, batch_rows=4
    )
    solved = stage.to_pandas().sort_values("id").reset_index(drop=True)

    assert list(solved["answer"]) == list(expected["answer"])
    assert (solved["status"] == "solved").all()
    assert len(ray_cluster.get(actors.journal.workers.remote())) == 2  # two models, no more


def test_a_table_in_an_object_store_on_the_cli(
    ray_cluster: Any,
    cluster_store: S3Store,
    emulator: Callable[..., EmulatorHandle],
    tmp_path: Path,
) -> None:
    """``capbatch run s3://.../t.parquet --engine ray``: the table read from S3, every
    image read from S3 by the worker that solves it (its cells are URIs), the results
    written to S3 whole at the end; the same rows as ``capbatch run`` on a local copy."""
    server = oracle(emulator)
    frame = sample_frame(10)
    prefix = f"ray-{tmp_path.name}"
    frame["image_path"] = [
        cluster_store.put(Path(p), f"{prefix}/images/{Path(p).name}") for p in frame["image_path"]
    ]
    local = write_table(frame, tmp_path / "t.parquet")
    uri = cluster_store.put(local, f"{prefix}/t.parquet")
    one_path = str(tmp_path / "one.parquet")
    capbatch.run(local, output=one_path, base_url=server.url, api_key=KEY, quiet=True)
    reset_stats(server)
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "CAPSOLVER_API_KEY": KEY, "CAPBATCH_CACHE_DIR": str(tmp_path / "c")}
    args = ["run", uri, "--base-url", server.url, "--engine", "ray", "--ray-address", address]

    done = subprocess.run(
        [sys.executable, "-m", "capbatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{uri}.results.parquet"
    data = cluster_store.get(f"{prefix}/t.parquet.results.parquet")
    assert data is not None
    on_ray = pd.read_parquet(io.BytesIO(data))[COMPARED]
    one = capbatch.read_results(tmp_path / "one.parquet")[COMPARED]
    pd.testing.assert_frame_equal(on_ray, one)
    assert (on_ray["status"] == "solved").all() and stats(server)["create_calls"] == 10


def test_the_cascade_on_ray_sends_what_one_process_sends(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """``--local-first`` on the workers (each reads with its own model, journaled at the
    cluster's journal): the same rows kept and sent on as ``capbatch run``, each sent
    row created once, the summary's cascade line from every worker's counts."""
    server = oracle(emulator)
    table = write_table(sample_frame(24), tmp_path / "in.parquet")
    capbatch.run(
        table,
        output=str(tmp_path / "one.parquet"),
        base_url=server.url,
        api_key=KEY,
        local_first=0.98,
        quiet=True,
    )
    sent_alone = stats(server)["create_calls"]
    reset_stats(server)

    outcome = ray_run(table, tmp_path / "ray.parquet", server, local_first=0.98)

    columns = [*COMPARED, "provider", "local_answer", "local_confidence"]
    one = capbatch.read_results(tmp_path / "one.parquet")[columns]
    on_ray = capbatch.read_results(tmp_path / "ray.parquet")[columns]
    pd.testing.assert_frame_equal(on_ray, one)
    assert 0 < sent_alone < 24 and stats(server)["create_calls"] == sent_alone
    cascade = outcome.summary.cascade
    assert cascade["threshold"] == 0.98 and cascade["read"] == 24
    assert cascade["kept"] == (one["provider"] == "local").sum()
    assert cascade["sent_on"] == sent_alone


def test_wrong_answers_are_reported_from_the_driver_as_they_arrive(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """``--report-wrong`` on Ray: each wrong answer reported once, through the cluster's
    rate, its outcome in the output's ``reported`` column and in the journal, so the
    same command again reports nothing twice."""
    server = oracle(emulator, error_rate=0.4, seed=5)
    table = write_table(sample_frame(16), tmp_path / "in.parquet")
    out = tmp_path / "ray.parquet"
    flags = {"label_column": "label", "report_wrong": True, "rate": 8}

    outcome = ray_run(table, out, server, **flags)

    result = capbatch.read_results(out)
    wrong = set(result.loc[result["answer"] != result["label"], "task_id"])
    assert 0 < len(wrong) < 16
    assert stats(server)["feedbacks"] == len(wrong)
    assert set(result.loc[result["reported"] == "reported", "task_id"]) == wrong
    line = f"wrong answers: {len(wrong)}; reports: {len(wrong)} reported"
    assert any(line in notice for notice in outcome.summary.notices)
    assert stats(server)["max_requests_per_second"] <= 8

    ray_run(table, out, server, **flags)
    assert stats(server)["feedbacks"] == len(wrong)


def test_answers_come_by_callback_to_the_cluster_s_one_receiver(
    ray_cluster: Any, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """``--callback-url`` on Ray: one receiver on the driver's node, every worker waiting
    there for its tasks' callbacks: few polls, the answers as polled ones would be."""
    from tests.e2e.test_callbacks_cli import free_port

    port = free_port()
    server = oracle(emulator, deferred=1.0, solve_time=(0.3, 0.8), callback_allow=(str(port),))
    table = write_table(sample_frame(16), tmp_path / "in.parquet")
    out = tmp_path / "ray.parquet"
    flags = {"callback_url": f"http://127.0.0.1:{port}/cb", "callback_listen": f"127.0.0.1:{port}"}

    outcome = ray_run(table, out, server, rate=50, **flags)

    result = capbatch.read_results(out)
    assert (result["status"] == "solved").all() and (result["answer"] == result["label"]).all()
    counters = stats(server)
    assert counters["create_calls"] == 16 and counters["callbacks_sent"] == 16
    summary = outcome.summary
    assert summary.callbacks_received == 16 and summary.callbacks_refused == 0
    assert counters["polls"] <= 2, counters  # the fallback only, if a callback was late
    assert summary.callbacks_used >= 16 - counters["polls"]
    assert b"/cb/" not in out.read_bytes()
