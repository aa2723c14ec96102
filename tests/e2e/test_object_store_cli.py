"""``capbatch run`` with its table and results in an object store: moto's S3 server on
127.0.0.1 (``tests/e2e/s3.py``) and the real emulator, through the real CLI.

The attacks: a rerun must not pay again (the journal lives on this machine, beside the
staged output); an output object made from another input must not be overwritten; a
credential written into the URI must not reach the output, the journal or the terminal.
"""

from __future__ import annotations

import io
import json
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
