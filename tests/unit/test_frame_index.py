"""Tests for capbatch._io.frame_index: a DataFrame input's index comes back with its
results (in memory and through a Parquet output), as ``df.assign`` would keep it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from capbatch._io.frame_index import result_schema
from capbatch._io.inputs import TableSource
from capbatch._io.outputs import MemorySink, ResultWriter, read_results
from capbatch._io.record import RESULT_COLUMNS, RowResult

BASE = pd.DataFrame(
    {
        "id": ["a", "b", "c"],
        "image": ["a.png", "b.png", "c.png"],
        "n": pd.array([1, None, 3], dtype="Int64"),
        "k": [1, 2, 3],
    }
)

FRAMES = {
    "named": BASE.set_index("id"),
    "unnamed": BASE.set_index("id").rename_axis(None),
    "multi": BASE.set_index(["id", "k"]),
    "shifted range": BASE.set_axis(pd.RangeIndex(5, 8)),
    "dates with a zone": BASE.set_axis(pd.date_range("2024-01-01", periods=3, tz="UTC")),
    # An index named like a result column: its column is renamed, its name is kept.
    "named status": BASE.set_axis(pd.Index(["x", "y", "z"], name="status")),
}


def results_of(source: TableSource) -> list[tuple[pa.RecordBatch, list[RowResult]]]:
    return [
        (batch, [RowResult(status="solved", answer=f"ans{i}") for i in range(batch.num_rows)])
        for batch in source.batches()
    ]


@pytest.mark.parametrize("name", list(FRAMES))
def test_in_memory_results_keep_the_index(name: str) -> None:
    frame = FRAMES[name]
    source = TableSource(frame, batch_rows=2)
    sink = MemorySink()
    for batch, results in results_of(source):
        sink.write(batch, results)
    out = sink.table(source.schema).to_pandas()
    assert out.index.equals(frame.index) and out.index.names == frame.index.names
    assert out.index.dtype == frame.index.dtype
    assert list(out.columns) == [*frame.columns, *RESULT_COLUMNS]
    assert out["answer"].tolist() == ["ans0", "ans1", "ans0"]
    if "n" in frame.columns:  # a nullable Int64 column stays one, as with df.assign
        assert str(out["n"].dtype) == "Int64"


@pytest.mark.parametrize("name", ["named", "multi", "named status"])
def test_parquet_output_keeps_the_index_as_pandas_does(tmp_path: Path, name: str) -> None:
    frame = FRAMES[name]
    source = TableSource(frame, batch_rows=2)
    with ResultWriter(tmp_path / "out.parquet", source.schema) as writer:
        for batch, results in results_of(source):
            writer.write(batch, results)
        out = writer.finish({"capbatch.provider": "local"})
    for back in (pd.read_parquet(out), read_results(out)):
        pd.testing.assert_index_equal(back.index, frame.index)
        assert list(back.columns) == [*frame.columns, *RESULT_COLUMNS]
    assert read_results(out).attrs["capbatch"] == {"provider": "local"}


@pytest.mark.parametrize("name", ["named", "unnamed", "multi"])
def test_csv_output_has_the_index_levels_as_columns_named_in_its_sidecar(
    tmp_path: Path, name: str
) -> None:
    frame = FRAMES[name]
    source = TableSource(frame, batch_rows=2)
    with ResultWriter(tmp_path / "out.csv", source.schema) as writer:
        for batch, results in results_of(source):
            writer.write(batch, results)
        out = writer.finish({"capbatch.provider": "local"})
    levels = [
        list(pair)
        for pair in zip(source.schema.names[-frame.index.nlevels :], frame.index.names, strict=True)
    ]
    sidecar = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert sidecar == {"provider": "local", "index": levels}
    assert pd.read_csv(out, dtype=str).columns.tolist()[: len(source.schema)] == (
        source.schema.names
    )
    back = read_results(out)  # the index is set back, as text like every CSV input column
    assert back.index.names == frame.index.names
    assert back.index.equals(
        frame.index.map(lambda v: tuple(map(str, v)) if isinstance(v, tuple) else str(v))
    )
    assert list(back.columns) == [*frame.columns, *RESULT_COLUMNS]
    assert back.attrs["capbatch"] == {"provider": "local"}


def test_a_damaged_index_in_the_sidecar_leaves_the_columns(tmp_path: Path) -> None:
    source = TableSource(FRAMES["named"])
    with ResultWriter(tmp_path / "out.csv", source.schema) as writer:
        for batch, results in results_of(source):
            writer.write(batch, results)
        out = writer.finish({"capbatch.provider": "local"})
    for damaged in ([["nope", "id"]], "id", [[1]]):
        (tmp_path / "out.csv.meta.json").write_text(json.dumps({"index": damaged}))
        assert read_results(out)["id"].tolist() == ["a", "b", "c"]


def test_default_index_adds_no_column() -> None:
    """A frame with the default RangeIndex converts as before: same columns (and so the
    same content hash, the in-memory journal's name)."""
    source = TableSource(BASE)
    assert source.schema.names == ["id", "image", "n", "k"]
    description = json.loads(source.schema.metadata[b"pandas"])
    assert description["index_columns"] == []


def test_result_schema_follows_renamed_columns() -> None:
    schema = TableSource(FRAMES["named status"].assign(answer="old")).schema
    out = result_schema(schema)
    assert out.names[:5] == ["id", "image", "n", "k", "input_answer"]
    assert out.names[5] == "input_status"
    description = json.loads(out.metadata[b"pandas"])
    assert description["index_columns"] == ["input_status"]
    by_field = {c["field_name"]: c["name"] for c in description["columns"]}
    assert by_field["input_status"] == "status"  # the index keeps its name
    assert by_field["input_answer"] == "input_answer"  # a data column shows its new one


def test_schema_without_pandas_metadata_passes() -> None:
    schema = pa.schema([("image", pa.string())])
    assert result_schema(schema).metadata is None
    odd = schema.with_metadata({b"pandas": b"not json"})
    assert result_schema(odd).metadata is None


@pytest.mark.parametrize(
    "index",
    [pd.Index([1, "x", 2.5]), pd.Index([1, 2, 3], name=0)],
    ids=["mixed types", "a level named by a number"],
)
def test_an_index_arrow_cannot_hold_is_left_behind(index: pd.Index) -> None:
    """As before the index was kept: the frame converts without it (to_parquet fails)."""
    frame = BASE.set_axis(index)
    with pytest.warns(UserWarning) if index.name == 0 else contextlib.nullcontext():
        source = TableSource(frame)
    assert source.schema.names == list(frame.columns)
    sink = MemorySink()
    for batch, results in results_of(source):
        sink.write(batch, results)
    assert sink.table(source.schema).to_pandas().index.tolist() == [0, 1, 2]
