"""The Python API (``capbatch.run``/``arun``) against the real emulator on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import capbatch
from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, SAMPLE, sample_frame

Start = Callable[..., EmulatorHandle]


def oracle(emulator: Start, **options: object) -> EmulatorHandle:
    return emulator(api_key=KEY, solver="oracle", labels=str(SAMPLE / "labels.csv"), **options)


def test_run_on_a_dataframe_returns_every_row_with_results(emulator: Start) -> None:
    server = oracle(emulator, deferred=0.5, solve_time=(0.05, 0.2), seed=4)
    frame = sample_frame(12)
    result = capbatch.run(
        frame, provider="capsolver", api_key=KEY, base_url=server.url, rate=200, quiet=True
    )
    assert list(result["id"]) == list(frame["id"])
    assert (result["answer"] == result["label"]).all()
    assert set(capbatch.RESULT_COLUMNS) <= set(result.columns)
    summary = result.attrs["capbatch"]
    assert summary["solved"] == 12 and summary["provider"] == "capsolver"
    assert summary["balance_before"] > summary["balance_after"]


def test_arun_on_a_pyarrow_table_with_bytes(emulator: Start) -> None:
    server = oracle(emulator)
    frame = sample_frame(5)
    images = [Path(p).read_bytes() for p in frame["image_path"]]
    table = pa.table({"img": pa.array(images, pa.binary()), "label": frame["label"]})
    result = asyncio.run(
        capbatch.arun(table, api_key=KEY, base_url=server.url, quiet=True, rate=100)
    )
    assert (result["answer"] == result["label"]).all()
    assert result["img"].tolist() == images  # input columns come back untouched


def test_run_works_inside_a_running_event_loop(emulator: Start) -> None:
    server = oracle(emulator)

    async def notebook_cell() -> pd.DataFrame:
        # Like Jupyter: a loop is already running in this thread.
        return capbatch.run(sample_frame(3), api_key=KEY, base_url=server.url, quiet=True, rate=100)

    result = asyncio.run(notebook_cell())
    assert (result["answer"] == result["label"]).all()


def test_rate_limited_by_the_service_the_run_slows_down_and_finishes(
    emulator: Start, tmp_path: Path
) -> None:
    server = oracle(emulator, rate_limit=20)
    result = capbatch.run(
        sample_frame(40),
        api_key=KEY,
        base_url=server.url,
        rate=200,
        max_in_flight=20,
        quiet=True,
        output=tmp_path / "out.parquet",
    )
    assert (result["answer"] == result["label"]).all()
    stats = server.stats()
    assert stats["errors_by_code"].get("ERROR_RATE_LIMIT", 0) > 0
    assert result.attrs["capbatch"]["rate_limited"] > 0
    # It slowed down instead of hammering: far fewer 429s than the 40 rows at 200/s
    # would draw if every request kept going at full speed.
    assert stats["errors_by_code"]["ERROR_RATE_LIMIT"] < 200


def test_unknown_option_and_missing_key_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPSOLVER_API_KEY", raising=False)
    with pytest.raises(capbatch.ConfigError, match="unknown run option"):
        capbatch.run(sample_frame(1), rate_per_second=3)
    with pytest.raises(capbatch.ConfigError, match="CAPSOLVER_API_KEY"):
        capbatch.run(sample_frame(1), provider="capsolver")


def test_options_repr_never_shows_the_key() -> None:
    options = capbatch.RunOptions(api_key=KEY)
    assert KEY not in repr(options)


def test_run_writes_a_dataframe_s_results_to_an_object_store(
    emulator: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``capbatch.run(df, output="<store URI>")``: the results object appears whole, the
    frame returned is the same, and the same call again pays nothing (its journal is in
    the cache folder, beside the staged output). fsspec's in-process ``memory://``
    store stands in for S3 (tests/e2e/test_object_store_cli.py has a real one)."""
    fsspec = pytest.importorskip("fsspec")
    monkeypatch.setenv("CAPBATCH_CACHE_DIR", str(tmp_path / "cache"))
    memory = fsspec.filesystem("memory")
    memory.store.clear()
    server = oracle(emulator)
    options = {"api_key": KEY, "base_url": server.url, "quiet": True}

    frame = capbatch.run(sample_frame(4), output="memory://answers/out.parquet", **options)

    with memory.open("/answers/out.parquet", "rb") as stored:
        published = pd.read_parquet(stored)
    assert (published["status"] == "solved").all()
    assert list(published["answer"]) == list(frame["answer"])
    capbatch.run(sample_frame(4), output="memory://answers/out.parquet", **options)
    assert server.stats()["create_calls"] == 4
    memory.store.clear()
