"""The streaming reader: an input table as record batches of one fixed schema.

``TableSource`` streams Parquet, CSV and JSON Lines files (CSV and JSONL may be ``.gz``),
pandas DataFrames and pyarrow Tables as ``pyarrow.RecordBatch`` objects of at most
``batch_rows`` rows, all with exactly ``TableSource.schema``. Files are never loaded
whole: memory is a batch plus a few MB of reader buffers, whatever the file size.

A CSV's field separator is read off its header line: ``,`` unless the header has no
comma and one of ``;``, tab, ``|``. When the header holds several of them, the one that
splits the first lines into the same number of fields (more than one) wins, the most
fields first, ``,`` on a tie. The table must be a regular file: a pipe or device is
refused before it is opened (it could block, and the table is read more than once).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from capbatch._exceptions import ConfigError, TableError
from capbatch._io.image_column import guess_image_column, is_image_type

# Tried in this order, case-insensitively, before looking at the values.
IMAGE_COLUMN_NAMES: Final = tuple(
    "image image_path image_b64 image_base64 image_bytes img path file filename file_path"  # noqa: SIM905
    " captcha body".split()
)
ID_COLUMN_NAMES: Final = ("id", "row_id", "uuid", "key")
_FORMATS: Final = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
_FORMATS.update({".ndjson": "jsonl", ".json": "jsonl"})  # .json must hold JSON Lines
_READ_ERRORS: Final = (pa.ArrowException, OSError, ValueError, EOFError)
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
class _Reader:
    """One format's reader: a fixed schema and a way to stream from the first row."""

    schema: pa.Schema
    stream: Callable[[int], Iterable[pa.RecordBatch]]  # batch_rows -> batches
    num_rows: int | None = None
    count: Callable[[], int] | None = None  # for formats without a cheap count
    delimiter: str | None = None  # CSV only


class TableSource:
    """A re-iterable stream of record batches from a file or an in-memory table.

    ``path`` is None in memory; relative image paths resolve against ``base_dir`` (the
    table's folder, else the working directory); ``format`` is parquet, csv, jsonl,
    dataframe or arrow; ``num_rows`` is None for CSV until ``count_rows()``;
    ``delimiter`` is the CSV field separator found (None for other formats).

    Construction reads metadata, the first batch if the image column must be found by
    content, and (JSON Lines only) the whole file once to fix column types. It raises
    ``TableError`` for an unusable table; one with no rows is fine (no batches).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | pd.DataFrame | pa.Table,
        *,
        image_column: str | None = None,
        id_column: str | None = None,
        batch_rows: int = 1024,
    ) -> None:
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ConfigError(f"batch_rows must be a positive integer, not {batch_rows!r}")
        self.batch_rows = batch_rows
        self.path: Path | None = None
        self.base_dir = Path.cwd()
        if isinstance(source, pd.DataFrame):
            self.format, self._reader = "dataframe", _frame_reader(source)
        elif isinstance(source, pa.Table):
            self.format = "arrow"  # zero-copy slices
            self._reader = _Reader(source.schema, source.to_batches, source.num_rows)
        elif isinstance(source, (str, os.PathLike)):
            self.path = Path(source).expanduser().absolute()
            self.base_dir = self.path.parent
            self.format, gz = _check_file(self.path)
            self._reader = _file_reader(self.path, self.format, gz)
        else:  # for untyped callers
            what = type(source).__name__  # type: ignore[unreachable]
            raise TableError(f"cannot read a {what}: pass a path, a DataFrame or a pyarrow Table")
        self.schema: pa.Schema = self._reader.schema
        self.num_rows: int | None = self._reader.num_rows
        self.delimiter: str | None = self._reader.delimiter
        names = self.schema.names
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise TableError(f"{self._name} has duplicate column names: {', '.join(duplicates)}")
        self.image_column: str = self._find_image_column(image_column)
        self.id_column: str | None = self._find_id_column(id_column)

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else f"the input {self.format}"

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else self.format
        return f"TableSource({where!r}, format={self.format!r}, image_column={self.image_column!r})"

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Stream from the first row, in order: non-empty batches of up to ``batch_rows``
        rows with exactly ``schema``. A read error part-way through is a ``TableError``."""
        try:
            raw = self._reader.stream(self.batch_rows)
            yield from _rechunk(raw, self.schema, self.batch_rows)
        except _READ_ERRORS as exc:
            raise TableError(f"cannot read {self._name}: {_short(exc)}") from exc

    def count_rows(self) -> int:
        """The number of rows; streams a CSV once (one column only) the first time."""
        if self.num_rows is None and self._reader.count is not None:
            try:
                self.num_rows = self._reader.count()
            except _READ_ERRORS as exc:
                raise TableError(f"cannot read {self._name}: {_short(exc)}") from exc
        return self.num_rows or 0

    def _find_image_column(self, wanted: str | None) -> str:
        names = self.schema.names
        if wanted is not None:
            self._check_named("image", wanted)
            dtype = self.schema.field(wanted).type
            if not is_image_type(dtype):
                what = "paths, base64 strings, data URIs or bytes"
                raise TableError(f"image column {wanted!r} holds {dtype} values, not {what}")
            return wanted
        for candidate in IMAGE_COLUMN_NAMES:
            for name in names:
                if name.lower() == candidate and is_image_type(self.schema.field(name).type):
                    return name
        first = next(self.batches(), None)
        if (found := guess_image_column(first) if first is not None else None) is None:
            raise TableError(
                f"no image column found in {self._name}; columns: {', '.join(map(repr, names))}."
                " Name it 'image' (or image_path, image_b64, ...) or pass the image column"
            )
        return found

    def _find_id_column(self, wanted: str | None) -> str | None:
        if wanted is not None:
            self._check_named("id", wanted)
        for candidate in ID_COLUMN_NAMES if wanted is None else ():
            for name in self.schema.names:
                if name.lower() == candidate and name != self.image_column:
                    return name
        return wanted

    def _check_named(self, role: str, wanted: str) -> None:
        names = self.schema.names
        if wanted not in names:
            hint = [f" (did you mean {n!r}?)" for n in names if n.lower() == wanted.lower()]
            raise TableError(
                f"{role} column {wanted!r} is not in {self._name}{''.join(hint[:1])}; "
                f"columns: {', '.join(map(repr, names))}"
            )


def _short(exc: BaseException, limit: int = 300) -> str:
    # pyarrow quotes whole offending rows (a base64 image can be megabytes): one short line.
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_file(path: Path) -> tuple[str, bool]:
    """The format of ``path`` and whether it is gzip-compressed; TableError if unusable."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    gz = suffixes[-1:] == [".gz"]
    fmt = _FORMATS.get(suffixes[-2 if gz else -1] if len(suffixes) > gz else "")
    try:
        if path.is_dir():
            raise TableError(f"input path is a directory, not a table file: {path}")
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            # Checked before opening: opening a FIFO waits for a writer, maybe for ever.
            raise TableError(
                f"input is not a regular file (a pipe, FIFO or device): {path}; capbatch "
                "reads the table more than once, save it to a file first"
            )
        size = st.st_size
        with path.open("rb"):  # permission problems surface here, with a clear message
            pass
    except FileNotFoundError:
        raise TableError(f"input file not found: {path}") from None
    except OSError as exc:
        raise TableError(f"cannot read input file {path}: {exc.strerror or exc}") from exc
    if fmt is None or (gz and fmt == "parquet"):
        raise TableError(
            f"unknown table file type {''.join(path.suffixes) or '(no extension)'!r}: {path};"
            " use .parquet/.pq, .csv, or .jsonl/.ndjson/.json (JSON Lines), .csv/JSONL may be .gz"
        )
    if size == 0:
        raise TableError(f"input file is empty (0 bytes): {path}")
    return fmt, gz


def _file_reader(path: Path, fmt: str, gz: bool) -> _Reader:
    try:
        if fmt == "parquet":
            return _parquet_reader(path)
        return _csv_reader(path, gz) if fmt == "csv" else _jsonl_reader(path, gz)
    except _READ_ERRORS as exc:
        if "Empty CSV file" in str(exc):
            raise TableError(f"input file is empty: {path}") from exc
        raise TableError(f"{path} is not a valid {fmt.upper()} file: {_short(exc)}") from exc


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``: readers agree on types but not on metadata."""
    if batch.schema.equals(schema, check_metadata=True):
        return batch
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _rechunk(
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


def _frame_reader(frame: pd.DataFrame) -> _Reader:
    """A DataFrame, converted one slice at a time (never a full copy); index dropped.

    Types are inferred once from the whole frame (object columns of bytes become binary)
    so that every slice gets the same schema.
    """
    try:
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise TableError(f"cannot convert the input DataFrame to Arrow: {_short(exc)}") from exc
    for i, field in enumerate(schema):
        # pyarrow silently stores str as UTF-8 *bytes* in a column that also holds bytes,
        # which would make a path look like (broken) image bytes: refuse it instead.
        if field.type == pa.binary() and any(isinstance(v, str) for v in frame.iloc[:, i]):
            raise TableError(f"DataFrame column {field.name!r} mixes str and bytes values")

    def stream(batch_rows: int) -> Iterator[pa.RecordBatch]:
        for start in range(0, len(frame), batch_rows):
            chunk = frame.iloc[start : start + batch_rows]
            yield pa.RecordBatch.from_pandas(chunk, schema=schema, preserve_index=False)

    return _Reader(schema, stream, len(frame))


def _parquet_reader(path: Path) -> _Reader:
    with pq.ParquetFile(path) as pf:
        full, num_rows = pf.schema_arrow, pf.metadata.num_rows
    keep = [n for n in full.names if not _PANDAS_INDEX.fullmatch(n)]
    columns = keep if len(keep) < len(full.names) else None
    # With the index dropped, the pandas metadata would describe columns that are gone.
    schema = pa.schema([full.field(n) for n in keep]) if columns else full

    def stream(batch_rows: int) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=_PARQUET_BUFFER) as pf:
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)

    return _Reader(schema, stream, num_rows)


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


def _csv_reader(path: Path, gz: bool) -> _Reader:
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
    return _Reader(
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


def _jsonl_reader(path: Path, gz: bool) -> _Reader:
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
                    raise TableError(f"{path} line {number}: {_short(exc, 120)}") from None
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

    return _Reader(schema, stream, rows)
