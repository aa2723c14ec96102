"""``capbatch run`` with its table and results in an object store: moto's S3 server on
127.0.0.1 (``tests/e2e/s3.py``) and the real emulator, through the real CLI.

The attacks: a rerun must not pay again (the journal lives on this machine, beside the
staged output); an output object made from another input must not be overwritten; a
credential written into the URI must not reach the output, the journal or the terminal.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import (
    KEY,
    assert_key_absent,
    oracle,
    run_args,
    run_cli,
    sample_frame,
    write_table,
)
from tests.e2e.s3 import ACCESS_KEY, SECRET_KEY, S3Store, s3_store

COMPARED = ["id", "answer", "status", "error_code", "cost_usd"]


@pytest.fixture
def s3() -> Iterator[S3Store]:
    with s3_store() as store:
        yield store


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """The cache folder the CLI stages into (and keeps its journals in)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


def creates(server: EmulatorHandle) -> int:
    return int(httpx.get(f"{server.url}/_stats", timeout=10).json()["create_calls"])


def cli(s3: S3Store, cache: Path, *args: str | Path) -> tuple[int, str]:
    result = run_cli(*args, env={**s3.env, "CAPBATCH_CACHE_DIR": str(cache)})
    return result.returncode, result.output


def read_object(s3: S3Store, key: str) -> pd.DataFrame:
    data = s3.get(key)
    assert data is not None, f"no object {key}; the bucket holds {s3.keys()}"
    return pd.read_parquet(io.BytesIO(data))


def test_a_table_in_s3_gives_results_in_s3_and_a_rerun_pays_nothing(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    server = oracle(emulator)
    frame = sample_frame(12)
    table = write_table(frame, tmp_path / "in.parquet")
    uri = s3.put(table, "jobs/in.parquet")
    expected_code, said = cli(s3, cache, *run_args(server, table, tmp_path / "local.parquet"))
    assert expected_code == 0, said
    expected = pd.read_parquet(tmp_path / "local.parquet")
    sent = creates(server)

    args = ["run", uri, "--base-url", server.url, "--quiet"]
    code, said = cli(s3, cache, *args)

    assert code == 0, said
    results = read_object(s3, "jobs/in.parquet.results.parquet")  # the default, beside it
    pd.testing.assert_frame_equal(results[COMPARED], expected[COMPARED])
    assert creates(server) == 2 * sent  # its own journal: every image once more
    sent = creates(server)
    assert s3.keys() == ["jobs/in.parquet", "jobs/in.parquet.results.parquet"]  # no .partial
    meta = pq.read_metadata(io.BytesIO(s3.get("jobs/in.parquet.results.parquet") or b"")).metadata
    assert meta[b"capbatch.input_uri"] == uri.encode()

    code, said = cli(s3, cache, *args[:-1])  # the same command again, with its summary
    assert code == 0, said
    assert creates(server) == sent
    assert "s3://capbatch-tests/jobs/in.parquet.results.parquet" in said
    assert "12 from an earlier run" in said or "earlier" in said


def test_images_named_by_uri_or_relative_to_the_table_in_the_store(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """A CSV in the store whose image cells are URIs or paths relative to it (each
    read from the store), results to a local file; a missing object is that row's
    error, named by its URI, and the run goes on."""
    server = oracle(emulator)
    frame = sample_frame(6)
    cells = []
    for i, local in enumerate(frame["image_path"]):
        key = f"data/images/{Path(local).name}"
        uri = s3.put(Path(local), key)
        cells.append(uri if i % 2 else f"images/{Path(local).name}")
    cells[-1] = "images/missing.png"
    frame["image_path"] = cells
    table = s3.put(write_table(frame, tmp_path / "t.csv"), "data/t.csv")
    out = tmp_path / "out.parquet"

    code, said = cli(s3, cache, *run_args(server, table, out))  # type: ignore[arg-type]

    assert code == 0, said
    results = pd.read_parquet(out)
    assert list(results["status"][:5]) == ["solved"] * 5
    assert list(results["answer"][:5]) == list(frame["label"][:5])
    assert results["error_code"].iloc[5] == "INPUT_FILE_NOT_FOUND"
    assert "s3://capbatch-tests/data/images/missing.png" in results["error_message"].iloc[5]
    assert creates(server) == 5


def test_an_output_object_made_from_another_input_is_not_overwritten(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    server = oracle(emulator)
    first = s3.put(write_table(sample_frame(3), tmp_path / "a.parquet"), "a.parquet")
    other = s3.put(write_table(sample_frame(3, start=5), tmp_path / "b.parquet"), "b.parquet")
    shared = s3.uri("shared.parquet")
    code, said = cli(s3, cache, *run_args(server, first, shared))  # type: ignore[arg-type]
    assert code == 0, said
    before, sent = s3.get("shared.parquet"), creates(server)

    code, said = cli(s3, cache, *run_args(server, other, shared))  # type: ignore[arg-type]

    assert code == 2, said
    assert f"belongs to the input {first}" in said and len(said.strip().splitlines()) == 1
    assert s3.get("shared.parquet") == before and creates(server) == sent


def test_an_output_uri_naming_the_input_is_refused(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    server = oracle(emulator)
    uri = s3.put(write_table(sample_frame(3), tmp_path / "in.parquet"), "in.parquet")
    before = s3.get("in.parquet")
    code, said = cli(s3, cache, *run_args(server, uri, uri))  # type: ignore[arg-type]
    assert code == 2 and "is the input file" in said, said
    assert s3.get("in.parquet") == before and creates(server) == 0


def test_an_output_that_cannot_be_written_stops_the_run_before_it_pays(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    server = oracle(emulator)
    uri = s3.put(write_table(sample_frame(3), tmp_path / "in.parquet"), "in.parquet")
    out = "s3://no-such-bucket/out.parquet"
    code, said = cli(s3, cache, *run_args(server, uri, out))  # type: ignore[arg-type]
    assert code == 2, said
    assert said.strip().startswith("capbatch: error: cannot write to s3://no-such-bucket/")
    assert creates(server) == 0


def test_credentials_in_the_uri_reach_no_output_journal_or_terminal(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """pyarrow takes ``s3://KEY:SECRET@bucket/...``: the run works with it and says the
    URI without them, everywhere."""
    server = oracle(emulator)
    s3.put(write_table(sample_frame(3), tmp_path / "in.parquet"), "in.parquet")
    env = {k: v for k, v in s3.env.items() if not k.startswith("AWS_SECRET")}
    env["AWS_ACCESS_KEY_ID"] = "unused"
    secret_uri = f"s3://{ACCESS_KEY}:{SECRET_KEY}@capbatch-tests/in.parquet"
    args = ["run", secret_uri, "--base-url", server.url]
    result = run_cli(*args, env={**env, "CAPBATCH_CACHE_DIR": str(cache)})

    assert result.returncode == 0, result.output
    assert "s3://capbatch-tests/in.parquet.results.parquet" in result.stdout
    output = s3.get("in.parquet.results.parquet") or b""
    assert len(output) > 0
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert_key_absent(secret, result.output, output.decode("latin-1"), roots=(cache,))


def test_a_missing_input_object_stops_with_one_line(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle]
) -> None:
    server = oracle(emulator)
    code, said = cli(s3, cache, "run", s3.uri("nope.parquet"), "--base-url", server.url)
    assert code != 0
    assert said.strip() == "capbatch: error: input file not found: s3://capbatch-tests/nope.parquet"
    assert creates(server) == 0


def test_a_ctrl_c_uploads_the_output_with_its_unfinished_rows_pending(
    s3: S3Store, cache: Path, emulator: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """As a local run leaves its output on a graceful stop, so does a run to S3: its
    rows pending (their task ids journaled), marked incomplete; the same command
    finishes them, polling those tasks instead of creating them again."""
    server = oracle(emulator, deferred=1.0, solve_time=(1.5, 2.5))
    uri = s3.put(write_table(sample_frame(12), tmp_path / "in.parquet"), "in.parquet")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(s3.env, CAPSOLVER_API_KEY=KEY, CAPBATCH_CACHE_DIR=str(cache))
    args = ["run", uri, "--base-url", server.url, "--quiet", "--rate", "3"]
    child = subprocess.Popen(
        [sys.executable, "-m", "capbatch", *args], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while creates(server) < 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, said = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, said

    results = read_object(s3, "in.parquet.results.parquet")
    statuses = results["status"].value_counts().to_dict()
    assert statuses.get("pending", 0) > 0, statuses
    sent = creates(server)
    assert statuses.get("solved", 0) <= sent >= 3  # tasks out are journaled: polled next
    meta = pq.read_metadata(io.BytesIO(s3.get("in.parquet.results.parquet") or b"")).metadata
    assert meta[b"capbatch.complete"] == b"false"

    code, said = cli(s3, cache, *args)
    assert code == 0, said
    assert (read_object(s3, "in.parquet.results.parquet")["status"] == "solved").all()
    assert creates(server) == 12  # the interrupted run's tasks polled, not created again
