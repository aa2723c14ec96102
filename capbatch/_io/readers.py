"""One reader per input format (Parquet, CSV, JSON Lines, a DataFrame, an Arrow table),
each a fixed schema and a stream of record batches of at most ``batch_rows`` rows, read
without loading the file whole. ``TableSource`` (``inputs.py``) picks one."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeGuard

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from capbatch._exceptions import TableError

if TYPE_CHECKING:
    import pandas as pd

READ_ERRORS: Final = (pa.ArrowException, OSError, ValueError, EOFError)
# Columns pandas writes for a non-default index: index, not data.
_PANDAS_INDEX: Final = re.compile(r"__index_level_\d+__")
# Measured: pyarrow's CSV reader keeps ~40 blocks in flight (not configurable): ~3 MB with
# 64 KiB blocks, 43 MB with 1 MiB, at the same speed. Longer rows make the block grow.
_CSV_BLOCK, _CSV_MAX_BLOCK = 1 << 16, 1 << 30
# ParquetFile's defaults load a row group's whole column chunks, and pandas writes a row
# group per million rows (71 MB peak for a 60 MB file); buffered page reads keep 15 MB.
_PARQUET_BUFFER: Final = 1 << 20
# CSV separators recognised, in order of preference, and how much of the file is looked
# at to choose (the header plus the first rows, unless a row holds a big image).
_DELIMITERS: Final = (",", ";", "\t", "|")
_SNIFF_BYTES: Final = 1 << 16
_SNIFF_ROWS: Final = 20


@dataclass
class Reader:
    """One format's reader: a fixed schema and a way to stream from the first row."""

    schema: pa.Schema
    stream: Callable[[int], Iterable[pa.RecordBatch]]  # batch_rows -> batches
    num_rows: int | None = None
    count: Callable[[], int] | None = None  # for formats without a cheap count
    delimiter: str | None = None  # CSV only


def short_error(exc: BaseException, limit: int = 300) -> str:
    # pyarrow quotes whole offending rows (a base64 image can be megabytes): one short line.
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def file_reader(path: Path, fmt: str, gz: bool) -> Reader:
    try:
        if fmt == "parquet":
            return _parquet_reader(path)
        return _csv_reader(path, gz) if fmt == "csv" else _jsonl_reader(path, gz)
    except READ_ERRORS as exc:
        if "Empty CSV file" in str(exc):
            raise TableError(f"input file is empty: {path}") from exc
        raise TableError(f"{path} is not a valid {fmt.upper()} file: {short_error(exc)}") from exc


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``: readers agree on types but not on metadata."""
    if batch.schema.equals(schema, check_metadata=True):
        return batch
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def rechunk(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, size: int
) -> Iterator[pa.RecordBatch]:
    """Re-cut batches of any sizes into batches of ``size`` rows (the last may be short),
    copying only when small batches must be joined; a big batch is sliced zero-copy."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows:
            pending.append(_conform(batch, schema))
            count += batch.num_rows
        while count >= size:
            merged = pending[0] if len(pending) == 1 else _concat(pending, schema)
            yield merged.slice(0, size)
            rest = merged.slice(size)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pending[0] if len(pending) == 1 else _concat(pending, schema)


def _concat(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    combined = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    return _conform(combined.to_batches()[0], schema)


def is_data_frame(source: object) -> TypeGuard[pd.DataFrame]:
    """True for a pandas DataFrame, without importing pandas: a run from a file never
    needs it (0.3 s of start-up), and a DataFrame exists only if pandas is loaded."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(source, pandas.DataFrame)


def frame_reader(frame: pd.DataFrame) -> Reader:
    """A DataFrame, converted one slice at a time (never a full copy).

    Types are inferred once from the whole frame (object columns of bytes become binary)
    so that every slice gets the same schema. An index other than the default
    ``RangeIndex`` comes along as columns at the end, described in the schema's
    ``pandas`` metadata, so that the results get it back (``frame_index``); one Arrow
    cannot hold (values of mixed types, a level named by a number) is left behind, as
    ``DataFrame.to_parquet`` would fail on it.
    """
    index = frame.index
    default = (
        type(index).__name__ == "RangeIndex"  # (pandas is not imported here)
        and (index.start, index.step, index.name) == (0, 1, None)  # type: ignore[attr-defined]
    )
    schema = None if default else _schema_with_index(frame)
    keep_index = schema is not None
    try:
        schema = schema or pa.Schema.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise TableError(
            f"cannot convert the input DataFrame to Arrow: {short_error(exc)}"
        ) from exc
    for i in range(frame.shape[1]):  # the frame's columns (the index levels come after)
        field = schema.field(i)
        # pyarrow silently stores str as UTF-8 *bytes* in a column that also holds bytes,
        # which would make a path look like (broken) image bytes: refuse it instead.
        if field.type == pa.binary() and any(isinstance(v, str) for v in frame.iloc[:, i]):
            raise TableError(f"DataFrame column {field.name!r} mixes str and bytes values")

    def stream(batch_rows: int) -> Iterator[pa.RecordBatch]:
        for start in range(0, len(frame), batch_rows):
            chunk = frame.iloc[start : start + batch_rows]
            yield pa.RecordBatch.from_pandas(chunk, schema=schema, preserve_index=keep_index)

    return Reader(schema, stream, len(frame))


def _schema_with_index(frame: pd.DataFrame) -> pa.Schema | None:
    """``frame``'s schema with its index levels, or None when Arrow cannot hold them: its
    type not found, or a first row not converted (a level named by a number)."""
    try:
        schema = pa.Schema.from_pandas(frame, preserve_index=True)
        pa.RecordBatch.from_pandas(frame.iloc[:1], schema=schema, preserve_index=True)
    except (pa.ArrowException, TypeError, ValueError, KeyError):
        return None
    return schema


def _parquet_reader(path: Path) -> Reader:
    with pq.ParquetFile(path) as pf:
        full, num_rows = pf.schema_arrow, pf.metadata.num_rows
    keep = [n for n in full.names if not _PANDAS_INDEX.fullmatch(n)]
    columns = keep if len(keep) < len(full.names) else None
    # Without metadata: with the index dropped, the pandas metadata would describe columns
    # that are gone, and a results file's run metadata is not this run's.
    schema = pa.schema([full.field(n) for n in keep])

    def stream(batch_rows: int) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=_PARQUET_BUFFER) as pf:
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)

    return Reader(schema, stream, num_rows)


def sniff_delimiter(path: Path, gz: bool = False) -> str:
    """The field separator of a CSV file, by the rule in the module docstring."""
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return ","  # the reader itself then reports what is wrong with the file
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    header = text.split("\n", 1)[0]
    candidates = [d for d in _DELIMITERS if d in header]
    if "," not in candidates and len(candidates) == 1:
        return candidates[0]
    if len(candidates) <= 1:
        return ","
    if len(head) == _SNIFF_BYTES:  # the last line may be cut short: leave it out
        text = text[: text.rfind("\n") + 1] or text
    widths: dict[str, int] = {}
    for delimiter in candidates:
        rows = itertools.islice(csv.reader(io.StringIO(text), delimiter=delimiter), _SNIFF_ROWS)
        counts = {len(row) for row in rows if row}
        if len(counts) == 1 and (width := counts.pop()) > 1:
            widths[delimiter] = width
    if not widths:
        return "," if "," in candidates else candidates[0]
    # max() keeps the first of equals, and candidates are in order of preference.
    return max(widths, key=lambda d: widths[d])


def _csv_reader(path: Path, gz: bool) -> Reader:
    """Every column is read as text, so no block can infer a type another contradicts.
    (pyarrow decompresses a ``.gz`` path by itself, going by the file name.)"""
    block = [_CSV_BLOCK]  # grows, for all later reads, when a row is longer than a block
    parse = pacsv.ParseOptions(newlines_in_values=True, delimiter=sniff_delimiter(path, gz))

    def stream(convert: pacsv.ConvertOptions) -> Iterator[pa.RecordBatch]:
        emitted = 0
        while True:
            try:
                reader = pacsv.open_csv(
                    str(path),  # a path, not a Python file: pyarrow then reads natively
                    read_options=pacsv.ReadOptions(block_size=block[0]),
                    parse_options=parse,
                    convert_options=convert,
                )
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
                skip = emitted  # after a restart, drop the rows already handed out
                for raw in reader:
                    batch = raw.slice(min(skip, raw.num_rows))
                    skip = max(0, skip - raw.num_rows)
                    emitted += batch.num_rows
                    yield batch
                return
            except pa.ArrowInvalid as exc:
                # A row longer than a block (a big base64 image): retry with bigger blocks.
                if "straddl" not in str(exc) or block[0] >= _CSV_MAX_BLOCK:
                    raise
                block[0] *= 4

    def convert(columns: list[str] | None = None) -> pacsv.ConvertOptions:
        # Only "" is null: pyarrow's default list also nulls "NA", "null", "nan"...
        types = {n: pa.string() for n in names}
        return pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True, include_columns=columns
        )

    names = next(stream(pacsv.ConvertOptions())).schema.names
    schema = pa.schema([pa.field(n, pa.string()) for n in names])
    return Reader(
        schema,
        lambda _: stream(convert()),
        count=lambda: sum(b.num_rows for b in stream(convert(names[:1]))),
        delimiter=parse.delimiter,
    )


# JSON kinds -> Arrow types; "str" also holds mixed kinds, big ints and nested values.
_JSON_TYPES: Final[dict[str, pa.DataType]] = {"bool": pa.bool_(), "str": pa.string()}
_JSON_TYPES.update(int=pa.int64(), float=pa.float64())


def _json_kind(value: object) -> str | None:
    if value is None or isinstance(value, (bool, float)):
        return None if value is None else type(value).__name__
    fits = isinstance(value, int) and -(2**63) <= value < 2**63
    return "int" if fits else "str"  # str: strings, big ints, objects and arrays (as JSON)


def _jsonl_reader(path: Path, gz: bool) -> Reader:
    """JSON Lines, scanned once up front so that every batch shares one schema.

    Types come from *all* lines, not the first chunk: a column null in the early lines
    and text later, or int then float, gets its right type instead of a failed cast in
    the middle of a run. Mixed types make a text column; nested values are JSON text.
    """

    def objects() -> Iterator[dict[str, Any]]:
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    raise TableError(f"{path} line {number}: {short_error(exc, 120)}") from None
                if not isinstance(obj, dict):
                    what = "a JSON array" if isinstance(obj, list) else "not a JSON object"
                    raise TableError(f"{path} line {number} is {what}, not a JSON Lines row")
                yield obj

    kinds: dict[str, str | None] = {}
    rows = 0
    for obj in objects():
        rows += 1
        for key, value in obj.items():
            old, new = kinds.get(key), _json_kind(value)
            if old is None or new is None or old == new:
                kinds[key] = old or new
            else:
                kinds[key] = "float" if {old, new} == {"int", "float"} else "str"
    if rows == 0:
        raise TableError(f"input file has no JSON lines: {path}")
    schema = pa.schema([(key, _JSON_TYPES[kind or "str"]) for key, kind in kinds.items()])

    def to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
        arrays = []
        for field in schema:
            values = [row.get(field.name) for row in rows]
            if pa.types.is_string(field.type):
                values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
            elif pa.types.is_floating(field.type):
                values = [None if v is None else float(v) for v in values]
            arrays.append(pa.array(values, type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def stream(batch_rows: int) -> Iterator[pa.RecordBatch]:
        lines = objects()
        while chunk := list(itertools.islice(lines, batch_rows)):
            yield to_batch(chunk)

    return Reader(schema, stream, rows)
