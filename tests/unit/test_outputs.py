"""Tests for capbatch._io.outputs and .record: result columns, writing, atomic finish."""

from __future__ import annotations

import base64
import errno
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capbatch._exceptions import ConfigError, OutputError
from capbatch._io import outputs
from capbatch._io.file_metadata import to_object
from capbatch._io.outputs import ResultWriter, count_rows, read_results, run_metadata, temp_pattern
from capbatch._io.record import (
    RESULT_COLUMNS,
    RESULT_SCHEMA,
    RowResult,
    output_schema,
    results_to_arrays,
)

T0 = 1_714_564_800.123  # 2024-05-01T12:00:00.123Z
INPUT_SCHEMA = pa.schema(
    [pa.field("id", pa.int64()), pa.field("image", pa.string()), pa.field("label", pa.string())]
)


def solved(i: int, **kw: object) -> RowResult:
    fields: dict[str, object] = {
        "status": "solved",
        "answer": f"ans{i}",
        "solution": {"text": f"ans{i}", "confidence": 0.9},
        "task_id": f"task-{i}",
        "provider": "capsolver",
        "attempts": 1,
        "polls": 2,
        "submitted_at": T0 + i,
        "finished_at": T0 + i + 1.5,
        "latency_ms": 1500.0,
        "queue_ms": 3.25,
        "cost_usd": 0.0004,
    }
    fields.update(kw)
    return RowResult(**fields)  # type: ignore[arg-type]


def failed(i: int) -> RowResult:
    return RowResult(
        status="failed",
        error_code="ERROR_CAPTCHA_UNSOLVABLE",
        error_message="could not solve",
        provider="capsolver",
        attempts=3,
    )


def batch(start: int, n: int) -> pa.RecordBatch:
    ids = list(range(start, start + n))
    return pa.RecordBatch.from_pydict(
        {"id": ids, "image": [f"img/{i}.png" for i in ids], "label": [f"l{i}" for i in ids]},
        schema=INPUT_SCHEMA,
    )


def temporaries(final: Path) -> list[Path]:
    """The writers' temporary files beside ``final``, found as a later run finds them
    to clean up (``temp_pattern``)."""
    pattern = temp_pattern(final)
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


def write_sample(path: Path) -> Path:
    """Three write() calls, mixing solved and failed rows; returns the final path."""
    with ResultWriter(path, INPUT_SCHEMA) as writer:
        for start in (0, 3, 6):
            results = [solved(i) if i % 3 else failed(i) for i in range(start, start + 3)]
            writer.write(batch(start, 3), results)
        assert writer.rows_written == 9
        return writer.finish()


@pytest.mark.parametrize("ext", [".parquet", ".pq", ".csv"])
def test_round_trip(tmp_path: Path, ext: str) -> None:
    out = write_sample(tmp_path / f"out{ext}")
    df = read_results(out)
    assert list(df.columns) == [*INPUT_SCHEMA.names, *RESULT_COLUMNS]
    # Input order kept across write() calls; a CSV's input columns read back as text.
    ids = [str(i) if ext == ".csv" else i for i in range(9)]
    assert df["id"].tolist() == ids
    assert df["status"].tolist() == ["failed" if i % 3 == 0 else "solved" for i in range(9)]
    row = df.iloc[1]
    assert row["answer"] == "ans1"
    assert json.loads(row["solution"]) == {"text": "ans1", "confidence": 0.9}
    assert row["task_id"] == "task-1"
    assert (row["attempts"], row["polls"], row["from_cache"]) == (1, 2, False)
    assert row["cost_usd"] == pytest.approx(0.0004)
    # A CSV keeps 0.1 ms of a duration (3.25 rounds half away from zero); Parquet all.
    assert row["queue_ms"] == (3.3 if ext == ".csv" else 3.25)
    expected = datetime(2024, 5, 1, 12, 0, 1, 123000, tzinfo=timezone.utc)
    assert row["submitted_at"] == pd.Timestamp(expected)
    assert str(df["submitted_at"].dt.tz) == "UTC"
    assert row["finished_at"] - row["submitted_at"] == pd.Timedelta(milliseconds=1500)
    bad = df.iloc[0]
    assert pd.isna(bad["answer"]) and pd.isna(bad["solution"]) and pd.isna(bad["task_id"])
    assert pd.isna(bad["submitted_at"]) and pd.isna(bad["latency_ms"])
    assert bad["error_code"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert bad["attempts"] == 3


def test_parquet_types_are_the_result_schema(tmp_path: Path) -> None:
    schema = pq.read_schema(write_sample(tmp_path / "out.parquet"))
    for field in RESULT_SCHEMA:
        assert schema.field(field.name).type == field.type
    assert schema.field("submitted_at").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("attempts").type == pa.int32()


def test_csv_timestamps_are_iso_utc_and_text_stays_text(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with ResultWriter(out, INPUT_SCHEMA) as writer:
        writer.write(batch(0, 2), [solved(0, answer="0123"), solved(1, answer="")])
        writer.finish()
    text = out.read_text(encoding="utf-8")
    assert "2024-05-01T12:00:00.123Z" in text
    df = read_results(out)
    assert df["answer"].tolist() == ["0123", ""]  # not a number, not missing


def test_results_to_arrays_types() -> None:
    arrays = results_to_arrays([solved(0), failed(1)])
    assert [a.type for a in arrays] == list(RESULT_SCHEMA.types)
    assert arrays[RESULT_COLUMNS.index("submitted_at")][0].as_py() == datetime(
        2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc
    )


def test_row_result_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status"):
        RowResult(status="maybe")  # "pending" is a status now (interrupted runs)


def test_colliding_input_columns_are_renamed(tmp_path: Path) -> None:
    schema = pa.schema(
        [
            pa.field("status", pa.string()),
            pa.field("input_status", pa.string()),
            pa.field("answer", pa.string()),
            pa.field("keep", pa.int64()),
        ]
    )
    assert output_schema(schema).names == [
        "input_status_2",
        "input_status",
        "input_answer",
        "keep",
        *RESULT_COLUMNS,
    ]
    data = pa.RecordBatch.from_pydict(
        {"status": ["old"], "input_status": ["older"], "answer": ["prev"], "keep": [7]},
        schema=schema,
    )
    with ResultWriter(tmp_path / "again.parquet", schema) as writer:
        writer.write(data, [solved(0)])
        out = writer.finish()
    row = read_results(out).iloc[0]
    assert (row["input_status_2"], row["input_status"], row["input_answer"]) == (
        "old",
        "older",
        "prev",
    )
    assert (row["status"], row["answer"], row["keep"]) == ("solved", "ans0", 7)


def test_renaming_rule_counts_up_and_never_stacks_prefixes() -> None:
    def names(*columns: str) -> list[str]:
        schema = pa.schema([pa.field(c, pa.string()) for c in columns])
        return output_schema(schema).names[: len(columns)]

    assert names("status", "keep") == ["input_status", "keep"]
    assert names("status", "input_status", "input_status_2") == [
        "input_status_3",
        "input_status",
        "input_status_2",
    ]
    # An input column named like a rename still keeps its name; the rename moves on.
    assert names("input_answer", "answer", "input_answer_2") == [
        "input_answer",
        "input_answer_3",
        "input_answer_2",
    ]


def test_renaming_is_stable_over_reruns_on_the_output() -> None:
    schema = pa.schema([pa.field("id", pa.string()), pa.field("status", pa.string())])
    runs = [output_schema(schema)]
    for _ in range(3):  # re-run on the previous output, three times
        runs.append(output_schema(pa.schema(list(runs[-1]))))
    for before, after in itertools.pairwise(runs):
        kept = [n for n in before.names if n not in RESULT_COLUMNS]
        assert after.names[: len(kept)] == kept  # earlier input columns keep their names
        assert not [n for n in after.names if n.startswith("input_input_")]
    assert [n for n in runs[-1].names if n.startswith("input_status")] == [
        "input_status",
        "input_status_2",
        "input_status_3",
        "input_status_4",
    ]


def test_parquet_metadata_after_finish(tmp_path: Path) -> None:
    run = json.dumps({"provider": "capsolver", "rows": 1, "note": "ünïcode"})
    with ResultWriter(tmp_path / "out.parquet", INPUT_SCHEMA) as writer:
        writer.write(batch(0, 1), [solved(0)])
        out = writer.finish({"capbatch.provider": "capsolver", "capbatch.run": run})
    meta = run_metadata(out)
    assert meta == {"capbatch.provider": "capsolver", "capbatch.run": run}
    assert json.loads(meta["capbatch.run"])["note"] == "ünïcode"
    assert run_metadata(write_sample(tmp_path / "out.csv")) == {}


ENTRIES = {
    "capbatch.version": "9.9",
    "capbatch.provider": "capsolver",
    "capbatch.spend_usd": "0.001200",
    "capbatch.balance_after": "4.5",
    "capbatch.complete": "false",
    "capbatch.settings": json.dumps({"rate": 5.0, "cache": True}),
    "capbatch.run": json.dumps({"rows": 1, "resumed": 0, "latency_p50_ms": None}),
}
#: ENTRIES as the typed object: numbers, booleans, objects, and null for what is missing.
OBJECT = {
    "version": "9.9",
    "provider": "capsolver",
    "spend_usd": 0.0012,
    "balance_before": None,
    "balance_after": 4.5,
    "complete": False,
    "settings": {"rate": 5.0, "cache": True},
    "run": {"rows": 1, "resumed": 0, "latency_p50_ms": None},
    "input": None,
}


def test_parquet_metadata_where_pandas_and_pyarrow_look(tmp_path: Path) -> None:
    with ResultWriter(tmp_path / "out.parquet", INPUT_SCHEMA) as writer:
        for start in range(0, 6, 2):  # several row groups kept through the footer swap
            writer.write(batch(start, 2), [solved(start), failed(start + 1)])
            writer._flush()
        out = writer.finish(ENTRIES, expected_rows=6)
    assert pq.read_metadata(out).num_row_groups == 3
    assert json.loads(pq.read_schema(out).metadata[b"capbatch"]) == OBJECT
    assert pd.read_parquet(out).attrs == {"capbatch": OBJECT}
    frame = read_results(out)
    assert frame.attrs["capbatch"] == OBJECT
    assert frame["id"].tolist() == list(range(6))
    assert frame["answer"].fillna("-").tolist() == ["ans0", "-", "ans2", "-", "ans4", "-"]
    assert run_metadata(out) == ENTRIES  # the text entries, as every version wrote them


def test_a_failed_footer_swap_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write_sample(tmp_path / "out.parquet")
    before = out.read_bytes()

    def broken(*_: object) -> None:
        raise ValueError("does not end as a Parquet file")

    monkeypatch.setattr(outputs, "replace_parquet_footer", broken)
    with ResultWriter(out, INPUT_SCHEMA) as writer:
        writer.write(batch(0, 1), [solved(0)])
        with pytest.raises(OutputError, match=r"cannot write the metadata of .*not published"):
            writer.finish(ENTRIES)
    assert out.read_bytes() == before and temporaries(out) == []


def test_old_parquet_metadata_read_typed(tmp_path: Path) -> None:
    """A file written before the schema metadata (text entries only, "" for missing)."""
    out = tmp_path / "old.parquet"
    table = pa.Table.from_batches(
        [
            pa.RecordBatch.from_arrays(
                batch(0, 1).columns + results_to_arrays([solved(0)]),
                schema=output_schema(INPUT_SCHEMA),
            )
        ]
    )
    with pq.ParquetWriter(out, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata(
            {**ENTRIES, "capbatch.balance_before": "", "capbatch.input": ""}
        )
    assert read_results(out).attrs["capbatch"] == OBJECT
    assert run_metadata(out)["capbatch.provider"] == "capsolver"


def test_csv_metadata_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    sidecar = tmp_path / "out.csv.meta.json"
    sidecar.write_text('{"provider": "an earlier run"}')
    with ResultWriter(out, INPUT_SCHEMA) as writer:
        writer.write(batch(0, 1), [solved(0, latency_ms=302.45280265808105, cost_usd=1 / 3)])
        writer.finish(ENTRIES)
    assert json.loads(sidecar.read_text()) == OBJECT
    assert read_results(out).attrs["capbatch"] == OBJECT
    assert to_object(run_metadata(out)) == OBJECT  # the same entries, written afresh
    text = out.read_text()
    assert ",302.5," in text and ",0.333333," in text  # rounded in CSV only
    # Results without metadata never keep an earlier run's sidecar beside them.
    write_sample(out)
    assert not sidecar.exists()
    assert "capbatch" not in read_results(out).attrs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_parquet_keeps_full_float_values(tmp_path: Path) -> None:
    with ResultWriter(tmp_path / "out.parquet", INPUT_SCHEMA) as writer:
        writer.write(batch(0, 1), [solved(0, latency_ms=302.45280265808105, cost_usd=1 / 3)])
        out = writer.finish()
    row = read_results(out).iloc[0]
    assert (row["latency_ms"], row["cost_usd"]) == (302.45280265808105, 1 / 3)


def test_temp_file_invisible_until_finish(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.parquet"
    writer = ResultWriter(final, INPUT_SCHEMA)
    writer.write(batch(0, 2), [solved(0), solved(1)])
    assert not final.exists()
    [temporary] = temporaries(final)  # beside the target: os.replace stays atomic
    assert temporary.name.startswith(".out.parquet.")
    assert writer.finish() == final
    assert final.exists() and not temporary.exists()
    assert [p.name for p in final.parent.iterdir()] == ["out.parquet"]
    with pytest.raises(RuntimeError):
        writer.write(batch(2, 1), [solved(2)])


@pytest.mark.parametrize("ext", [".parquet", ".csv"])
def test_abort_removes_temp_and_is_idempotent(tmp_path: Path, ext: str) -> None:
    final = tmp_path / f"out{ext}"
    writer = ResultWriter(final, INPUT_SCHEMA)
    writer.write(batch(0, 1), [solved(0)])
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_context_manager_aborts_on_exception(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    with pytest.raises(KeyError), ResultWriter(final, INPUT_SCHEMA) as writer:
        writer.write(batch(0, 1), [solved(0)])
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_empty_run_writes_header_or_schema(tmp_path: Path) -> None:
    for name in ("empty.csv", "empty.parquet"):
        with ResultWriter(tmp_path / name, INPUT_SCHEMA) as writer:
            out = writer.finish()
        df = read_results(out)
        assert len(df) == 0 and list(df.columns) == [*INPUT_SCHEMA.names, *RESULT_COLUMNS]


def test_csv_formula_injection_guard(tmp_path: Path) -> None:
    risky = ['=HYPERLINK("http://evil","x")', "+1", "-2", "@x", "\tfoo", "\rbar"]
    answers = [*risky, "normal", "a=b"]
    n = len(answers)
    data = pa.RecordBatch.from_pydict(
        {"id": list(range(n)), "image": ["=cmd|' /C calc'!A0"] * n, "label": ["+lab"] * n},
        schema=INPUT_SCHEMA,
    )
    results = [
        solved(i, answer=a, error_message="-oops", task_id="@t") for i, a in enumerate(answers)
    ]
    with ResultWriter(tmp_path / "out.csv", INPUT_SCHEMA) as writer:
        writer.write(data, results)
        out = writer.finish()
    # In the file a spreadsheet opens, the provider's text is guarded...
    import csv

    with open(out, newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    assert [r["answer"] for r in raw] == [f"'{a}" for a in risky] + ["normal", "a=b"]
    assert {r["error_message"] for r in raw} == {"'-oops"}
    assert {r["task_id"] for r in raw} == {"'@t"}
    assert {r["image"] for r in raw} == {"=cmd|' /C calc'!A0"}  # input columns as they are
    # ... and reading the results back gives the text as the provider sent it.
    df = read_results(out)
    assert df["answer"].tolist() == answers
    assert set(df["error_message"]) == {"-oops"} and set(df["task_id"]) == {"@t"}
    assert set(df["label"]) == {"+lab"}
    # Parquet is typed data, not a spreadsheet: unchanged.
    with ResultWriter(tmp_path / "out.parquet", INPUT_SCHEMA) as writer:
        writer.write(data, results)
        assert read_results(writer.finish())["answer"].tolist() == answers


def test_binary_input_column_as_base64_in_csv(tmp_path: Path) -> None:
    schema = pa.schema([("image", pa.binary()), ("tags", pa.list_(pa.string()))])
    blobs = [b"\x89PNG\r\n\x1a\n\x00\xff", None]
    data = pa.RecordBatch.from_pydict({"image": blobs, "tags": [["a", "b"], None]}, schema=schema)
    with ResultWriter(tmp_path / "out.csv", schema) as writer:
        writer.write(data, [solved(0), failed(1)])
        out = writer.finish()
    df = read_results(out)
    assert base64.b64decode(df["image"][0]) == blobs[0]
    assert pd.isna(df["image"][1])
    assert json.loads(df["tags"][0]) == ["a", "b"]
    with ResultWriter(tmp_path / "out.parquet", schema) as writer:
        writer.write(data, [solved(0), failed(1)])
        assert read_results(writer.finish())["image"][0] == blobs[0]


@pytest.mark.parametrize("ext", [".parquet", ".csv"])
def test_unicode_answers(tmp_path: Path, ext: str) -> None:
    answers = ["Привет", "验证码", "🙂ñ", 'ä,"quoted"\nnewline']
    with ResultWriter(tmp_path / f"out{ext}", INPUT_SCHEMA) as writer:
        writer.write(
            batch(0, 4), [solved(i, answer=a, solution={"text": a}) for i, a in enumerate(answers)]
        )
        out = writer.finish()
    df = read_results(out)
    assert df["answer"].tolist() == answers
    assert df["solution"][1] == '{"text":"验证码"}'  # compact, not \\u-escaped


def test_result_count_must_match_rows(tmp_path: Path) -> None:
    with ResultWriter(tmp_path / "out.parquet", INPUT_SCHEMA) as writer:
        with pytest.raises(ValueError, match="2 results for a batch of 3 rows"):
            writer.write(batch(0, 3), [solved(0), solved(1)])
        writer.abort()


def test_unknown_extension_is_config_error(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    with pytest.raises(ConfigError) as info:
        ResultWriter(target, INPUT_SCHEMA)
    assert str(target) in str(info.value)
    assert ".parquet" in str(info.value) and ".csv" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        ResultWriter(tmp_path / "out.parquet", INPUT_SCHEMA, format="xlsx")


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    with ResultWriter(tmp_path / "out.txt", INPUT_SCHEMA, format="csv") as writer:
        writer.write(batch(0, 1), [solved(0)])
        out = writer.finish()
    assert out.read_text(encoding="utf-8").startswith('"id","image","label","status"')


def test_small_batches_are_gathered_into_few_row_groups(tmp_path: Path) -> None:
    results = [solved(i) for i in range(1000)]
    with ResultWriter(tmp_path / "big.parquet", INPUT_SCHEMA) as writer:
        for k in range(200):
            writer.write(batch(k * 1000, 1000), results)
        out = writer.finish()
    meta = pq.read_metadata(out)
    assert meta.num_rows == 200_000
    assert meta.num_row_groups <= 4
    ids = pq.read_table(out, columns=["id"]).column("id")
    assert ids[0].as_py() == 0 and ids[-1].as_py() == 199_999


def test_csv_input_columns_read_back_as_text(tmp_path: Path) -> None:
    # capbatch reads a CSV input as text, so its output must read back the same way: a
    # label "0042" inferred as the integer 42 would be scored wrong against "0042".
    schema = pa.schema([("image", pa.string()), ("label", pa.string()), ("level", pa.string())])
    data = pa.RecordBatch.from_pydict(
        {"image": ["a.png", "b.png"], "label": ["0042", "1e3"], "level": ["2", "10"]},
        schema=schema,
    )
    with ResultWriter(tmp_path / "out.csv", schema) as writer:
        writer.write(data, [solved(0, answer="0042"), solved(1, answer="1e3")])
        df = read_results(writer.finish())
    assert df["label"].tolist() == ["0042", "1e3"]
    assert df["level"].tolist() == ["2", "10"]
    assert df["answer"].tolist() == ["0042", "1e3"]
    assert df["attempts"].tolist() == [1, 1]  # result columns keep their types


# --- local state: nothing incomplete is ever published ----------------------------------


class _FailingWriter:
    """Stands in for pyarrow's writer on a full disk: the OSError pyarrow raises."""

    def __init__(self, *, on: str) -> None:
        self.on = on

    def _fail(self) -> None:
        raise OSError(
            errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"
        )

    def write_batch(self, _batch: object) -> None:
        if self.on == "write":
            self._fail()

    def write_table(self, _table: object, row_group_size: int = 0) -> None:
        if self.on == "write":
            self._fail()

    def close(self) -> None:
        if self.on == "close":
            self._fail()


def _previous(path: Path) -> bytes:
    """An earlier run's output under the final name: it must survive a failed finish."""
    old = b"the previous output, untouched"
    path.write_bytes(old)
    return old


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_a_failed_write_is_an_output_error_and_nothing_is_published(
    tmp_path: Path, ext: str
) -> None:
    final = tmp_path / f"out{ext}"
    old = _previous(final)
    writer = ResultWriter(final, INPUT_SCHEMA)
    writer.write(batch(0, 2), [solved(0), solved(1)], first_row=0)
    if ext == ".csv":
        writer._csv = _FailingWriter(on="write")  # type: ignore[assignment]
        with pytest.raises(OutputError) as caught:
            writer.write(batch(2, 1), [solved(2)], first_row=2)
    else:
        writer._parquet = _FailingWriter(on="close")  # type: ignore[assignment]
        with pytest.raises(OutputError) as caught:
            writer.finish(expected_rows=2)
    message = str(caught.value)
    assert str(final) in message and "No space left on device" in message
    assert "\n" not in message and "not published" in message
    if ext == ".csv":
        # Bytes may be missing now: the writer refuses to go on or to publish.
        with pytest.raises(OutputError):
            writer.write(batch(3, 1), [solved(3)])
        with pytest.raises(OutputError):
            writer.finish(expected_rows=2)
    assert final.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_finish_refuses_fewer_rows_than_the_input_has(tmp_path: Path, ext: str) -> None:
    final = tmp_path / f"out{ext}"
    old = _previous(final)
    writer = ResultWriter(final, INPUT_SCHEMA)
    writer.write(batch(0, 3), [solved(i) for i in range(3)])
    with pytest.raises(OutputError, match="would hold 3 of the 4 input rows"):
        writer.finish(expected_rows=4)
    assert final.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_finish_with_every_row_publishes(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    _previous(final)
    with ResultWriter(final, INPUT_SCHEMA) as writer:
        writer.write(batch(0, 2), [solved(0), solved(1)], first_row=0)
        writer.write(batch(2, 1), [failed(2)], first_row=2)
        writer.finish(expected_rows=3)
    assert list(read_results(final)["id"]) == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("second", "word"), [(5, "a gap"), (0, "rows out of order"), (1, "rows out of order")]
)
def test_write_refuses_a_gap_or_a_step_back(tmp_path: Path, second: int, word: str) -> None:
    final = tmp_path / "out.parquet"
    writer = ResultWriter(final, INPUT_SCHEMA)
    writer.write(batch(0, 2), [solved(0), solved(1)], first_row=0)
    with pytest.raises(OutputError, match=word):
        writer.write(batch(second, 1), [solved(second)], first_row=second)
    # Once refused, the file can never be made whole: finish refuses too.
    with pytest.raises(OutputError):
        writer.finish(expected_rows=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("ext", "cut"),
    [
        (".csv", "mid-line"),  # the disk filled up inside a row
        (".csv", "last-line"),  # ... or exactly at a row's end
        (".parquet", "mid-line"),  # no footer
    ],
)
def test_a_file_cut_short_on_disk_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, cut: str
) -> None:
    final = tmp_path / f"out{ext}"
    old = _previous(final)
    writer = ResultWriter(final, INPUT_SCHEMA)
    writer.write(batch(0, 20), [solved(i) for i in range(20)], first_row=0)
    close = writer._close_writers
    [temporary] = temporaries(final)

    def close_then_lose_the_tail() -> None:
        # What a full disk did to a CSV output: the writer saw no error, the bytes
        # are not all there.
        close()
        data = temporary.read_bytes()
        last_row = data.rstrip(b"\n").rfind(b"\n") + 1
        keep = len(data) - 40 if cut == "mid-line" else last_row
        temporary.write_bytes(data[:keep])

    monkeypatch.setattr(writer, "_close_writers", close_then_lose_the_tail)
    with pytest.raises(OutputError, match="incomplete on disk"):
        writer.finish(expected_rows=20)
    assert final.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_csv_read_back_counts_rows_with_newlines_in_values(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    schema = pa.schema([pa.field("note\nheader", pa.string())])
    notes = pa.RecordBatch.from_pydict({"note\nheader": ["a\nb", 'c,"d"\n\ne', "f"]}, schema=schema)
    with ResultWriter(final, schema) as writer:
        writer.write(notes, [solved(0), solved(1), solved(2)], first_row=0)
        writer.finish(expected_rows=3)
    assert count_rows(final, "csv") == 3


def test_an_output_that_is_a_directory_is_refused_before_writing(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        ResultWriter(tmp_path / "d.parquet", INPUT_SCHEMA)
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]


def test_temporary_names_match_the_stale_temporary_pattern(tmp_path: Path) -> None:
    final = tmp_path / "out.parquet"
    first, second = ResultWriter(final, INPUT_SCHEMA), ResultWriter(final, INPUT_SCHEMA)
    pattern = temp_pattern(final)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(pattern.fullmatch(name) for name in names)
    assert not pattern.fullmatch(".out.parquet.lock")
    assert not pattern.fullmatch(".other.parquet.123.tmp")
    first.abort()
    second.abort()


def test_csv_read_back_handles_rows_longer_than_a_read_block(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    schema = pa.schema([pa.field("image", pa.binary())])
    big = pa.RecordBatch.from_pydict({"image": [b"\x89PNG" * 1_500_000, b"x"]}, schema=schema)
    with ResultWriter(final, schema) as writer:
        writer.write(big, [solved(0), solved(1)], first_row=0)
        writer.finish(expected_rows=2)  # a 8 MB base64 row: more than one 4 MB block
    assert count_rows(final, "csv") == 2


def test_the_result_columns_are_derived_from_the_one_record() -> None:
    import dataclasses

    from capbatch._io.record import RESULT_SCHEMA, results_to_arrays

    record = dataclasses.fields(RowResult)
    # One definition: the schema is the record's fields, in order, with their types.
    assert [f.name for f in record] == RESULT_SCHEMA.names
    assert [f.metadata["arrow"] for f in record] == RESULT_SCHEMA.types
    # And every field reaches its column: a result with each one set comes back whole.
    full = RowResult(
        status="solved", answer="ab12", solution={"text": "ab12", "n": 1}, error_code="E",
        error_message="m", task_id="t-1", provider="capsolver", attempts=2, polls=3,
        submitted_at=1_700_000_000.25, finished_at=1_700_000_001.5, latency_ms=1250.0,
        queue_ms=4.0, cost_usd=0.0004, from_cache=True,
    )  # fmt: skip
    row = {
        name: column.to_pylist()[0]
        for name, column in zip(RESULT_SCHEMA.names, results_to_arrays([full]), strict=True)
    }
    assert row["solution"] == '{"text":"ab12","n":1}'
    assert row["submitted_at"].timestamp() == pytest.approx(1_700_000_000.25)
    for f in record:
        if f.name not in ("solution", "submitted_at", "finished_at"):
            assert row[f.name] == getattr(full, f.name), f.name
