"""Result columns, incremental writing and atomic finish of the output table.

The runner hands ``ResultWriter.write`` one input ``RecordBatch`` at a time, in input
order, together with one ``RowResult`` per row. The writer appends the result columns
(``RESULT_SCHEMA``) to the input columns and streams them into a temporary file next to
the destination; ``finish()`` renames it into place, so a reader never sees a half-written
table and a crashed run never leaves one behind under the real name.

Formats, chosen by the destination's extension (or ``format=``):

* Parquet (``.parquet``, ``.pq``): typed, zstd-compressed, small batches gathered into row
  groups of about ``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES`` bytes. Run metadata goes
  into the file's key-value metadata (``run_metadata`` reads it back).
* CSV (``.csv``): for spreadsheets and shell tools. Result timestamps are ISO 8601 UTC
  (``2024-05-01T12:00:00.123Z``). Text that came from the remote service and starts with
  ``= + - @``, tab or carriage return gets a leading ``'`` so a spreadsheet does not run it
  as a formula (OWASP CSV injection advice); ``read_results`` takes the quote off again.
  Input columns are written as they are, except those a CSV cannot hold: binary
  columns become base64 text, nested columns (lists, structs, maps) become JSON text.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import json
import os
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from capbatch._exceptions import ConfigError, OutputError

if TYPE_CHECKING:
    import pandas as pd

_TS = pa.timestamp("ms", tz="UTC")



#: Result columns whose text comes from the remote service, guarded in CSV output.
UNTRUSTED_COLUMNS = ("answer", "solution", "error_code", "error_message", "task_id")
_FORMULA_START = r"^([=+\-@\t\r])"

#: Parquet row groups are flushed at whichever limit is reached first.
ROW_GROUP_ROWS = 64 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024

_EXTENSIONS: Mapping[str, str] = types.MappingProxyType(
    {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
)
#: "pending": an interrupted run did not finish the row; the same command resumes it.
_STATUSES = frozenset({"solved", "failed", "pending"})
_METADATA_PREFIX = "capbatch."


def _column(
    arrow: pa.DataType, *, nullable: bool = True, encode: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """A result column's definition, kept on its ``RowResult`` field: the Arrow type, and
    how a value is turned into one the Arrow type holds."""
    return {"arrow": arrow, "nullable": nullable, "encode": encode}


# One encoder made once: json.dumps with options builds a new encoder on every call, about
# a third of the cost of a million rows. default=str: a paid answer must never be lost
# because one value of its solution is not JSON-native.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


@dataclass(frozen=True, slots=True)
class RowResult:
    """The outcome of one input row, one value per result column: THE definition of the
    result columns. ``RESULT_SCHEMA`` and ``results_to_arrays`` are derived from these
    fields and their metadata, so a new column is one field here (plus, if a resumed row
    must show it, its place in the journal).

    Times are unix seconds (``time.time()``); they are stored as UTC millisecond
    timestamps. ``solution`` is the provider's whole solution object, kept as JSON text.
    """

    status: str = dataclasses.field(metadata=_column(pa.string(), nullable=False))
    answer: str | None = dataclasses.field(default=None, metadata=_column(pa.string()))
    solution: Mapping[str, Any] | None = dataclasses.field(
        default=None, metadata=_column(pa.string(), encode=_encode_json)
    )
    error_code: str | None = dataclasses.field(default=None, metadata=_column(pa.string()))
    error_message: str | None = dataclasses.field(default=None, metadata=_column(pa.string()))
    task_id: str | None = dataclasses.field(default=None, metadata=_column(pa.string()))
    provider: str | None = dataclasses.field(default=None, metadata=_column(pa.string()))
    attempts: int = dataclasses.field(default=0, metadata=_column(pa.int32(), nullable=False))
    polls: int = dataclasses.field(default=0, metadata=_column(pa.int32(), nullable=False))
    submitted_at: float | None = dataclasses.field(default=None, metadata=_column(_TS))
    finished_at: float | None = dataclasses.field(default=None, metadata=_column(_TS))
    latency_ms: float | None = dataclasses.field(default=None, metadata=_column(pa.float64()))
    queue_ms: float | None = dataclasses.field(default=None, metadata=_column(pa.float64()))
    cost_usd: float = dataclasses.field(
        default=0.0, metadata=_column(pa.float64(), nullable=False)
    )
    from_cache: bool = dataclasses.field(
        default=False, metadata=_column(pa.bool_(), nullable=False)
    )

    def __post_init__(self) -> None:
        # Fail where the bad value is made, not thousands of rows later in the writer.
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {self.status!r}")


RESULT_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field(f.name, f.metadata["arrow"], nullable=f.metadata["nullable"])
        for f in dataclasses.fields(RowResult)
    ]
)
RESULT_COLUMNS: tuple[str, ...] = tuple(RESULT_SCHEMA.names)
#: Per result column: how to read it off a ``RowResult`` and how to encode a value.
_COLUMN_READERS = [
    (attrgetter(f.name), f.metadata["encode"]) for f in dataclasses.fields(RowResult)
]


def output_schema(input_schema: pa.Schema) -> pa.Schema:
    """Return the input columns (renamed where they collide) followed by ``RESULT_SCHEMA``.

    An input column named like a result column (``status``, ``answer``...) becomes
    ``input_<name>``; if the input already has that name (or an earlier rename took it),
    ``input_<name>_2``, then ``_3`` and so on. Only colliding columns are renamed, with
    one ``input_`` prefix at most, so re-running capbatch on its own output keeps the
    earlier input columns as they are and renames the previous results: ``status``
    becomes ``input_status``, or ``input_status_2`` when ``input_status`` is there.
    """
    taken = set(input_schema.names) | set(RESULT_COLUMNS)
    fields = []
    for field in input_schema:
        if field.name in RESULT_COLUMNS:
            name, n = f"input_{field.name}", 1
            while name in taken:
                n += 1
                name = f"input_{field.name}_{n}"
            taken.add(name)
            field = field.with_name(name)  # noqa: PLW2901 - the renamed field replaces it
        fields.append(field)
    # Schema-level metadata is dropped on purpose: pandas' index description in it names
    # columns that may have been renamed, and would confuse ``to_pandas`` on read-back.
    return pa.schema(fields + list(RESULT_SCHEMA))




def _timestamps(seconds: list[float | None]) -> pa.Array[Any]:
    """Unix seconds to UTC millisecond timestamps, rounded (vectorised, nulls kept)."""
    ms = pc.round(pc.multiply(pa.array(seconds, type=pa.float64()), 1000.0))
    return ms.cast(pa.int64()).cast(_TS)


def results_to_arrays(results: Sequence[RowResult]) -> list[pa.Array[Any]]:
    """Build the result columns for ``results``, in ``RESULT_SCHEMA`` order.

    One list comprehension per column and one ``pa.array`` call each: converting Python
    lists in bulk is an order of magnitude faster than appending row by row.
    """
    columns: list[list[Any]] = []
    for read, encode in _COLUMN_READERS:
        values = [read(r) for r in results]
        if encode is not None:
            values = [None if v is None else encode(v) for v in values]
        columns.append(values)
    return [
        _timestamps(values) if f.type == _TS else pa.array(values, type=f.type)
        for values, f in zip(columns, RESULT_SCHEMA, strict=True)
    ]


def output_format(path: Path) -> str | None:
    """``"parquet"`` or ``"csv"`` by ``path``'s extension (the one table of them), or None."""
    return _EXTENSIONS.get(path.suffix.lower())


def _format_for(path: Path, format: str | None) -> str:
    accepted = ", ".join(_EXTENSIONS)
    if format is not None:
        if format not in ("parquet", "csv"):
            raise ConfigError(f"unknown output format {format!r} for {path}: use parquet or csv")
        return format
    found = output_format(path)
    if found is None:
        raise ConfigError(f"cannot tell the output format of {path}: use one of {accepted}")
    return found


_BINARY_TESTS = (
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_fixed_size_binary,
    pa.types.is_binary_view,
)


def _csv_column(column: pa.Array[Any], dtype: pa.DataType) -> pa.Array[Any]:
    """Make an input column writable as CSV text; other columns pass unchanged."""
    if any(test(dtype) for test in _BINARY_TESTS):
        # CSV cannot hold bytes and pyarrow has no base64 kernel, hence the Python loop.
        encoded = [
            None if b is None else base64.b64encode(b).decode("ascii") for b in column.to_pylist()
        ]
        return pa.array(encoded, type=pa.string())
    if pa.types.is_nested(dtype):
        dumped = [
            None if v is None else json.dumps(v, ensure_ascii=False, default=str)
            for v in column.to_pylist()
        ]
        return pa.array(dumped, type=pa.string())
    if pa.types.is_string_view(dtype):
        return column.cast(pa.string())
    return column


def _guard_formula(column: pa.Array[Any]) -> pa.Array[Any]:
    """Prefix ``'`` to values a spreadsheet would evaluate as a formula (one kernel)."""
    # An anchored regex with a back-reference does match-and-prefix in a single pass.
    return pc.replace_substring_regex(column, pattern=_FORMULA_START, replacement=r"'\1")


def _iso_utc(column: pa.Array[Any]) -> pa.Array[Any]:
    """UTC timestamps as ISO 8601 text, ``2024-05-01T12:00:00.123Z``."""
    # Formatting a tz-aware column costs ~0.9 s per million values (a zone lookup each);
    # the values are UTC, so format them tz-naive (~0.1 s) and add the "T" and "Z".
    text = column.cast(pa.timestamp("ms")).cast(pa.string())
    return pc.replace_substring_regex(text, pattern=r"^(\S+) (\S+)$", replacement=r"\1T\2Z")


def temp_pattern(target: Path) -> re.Pattern[str]:
    """The names ``ResultWriter`` gives its temporaries beside ``target``:
    ``.NAME.PID.tmp`` and ``.NAME.PID.N.tmp``."""
    return re.compile(rf"\.{re.escape(target.name)}\.\d+(?:\.\d+)?\.tmp")


def _os_reason(exc: OSError) -> str:
    """The OS's words for ``exc``, on one line (pyarrow wraps them in its own text)."""
    if exc.errno:
        return os.strerror(exc.errno)
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def count_rows(path: Path, format: str) -> int:
    """The data rows of a finished output file, read back from disk.

    Parquet: the footer's row count (the footer is written last, so a file cut short
    has none). CSV: the file must end with a newline (a row cut mid-line may still
    parse), then pyarrow's CSV reader counts the rows, quoted newlines included, and
    fails on a row with a wrong number of fields. Measured on this project's 2-core VM,
    a 1M-row output (236 MB, 18 columns) written by ResultWriter: 0.96 s to count,
    against ~9 s to write it (and hours to solve it); 0.6 s without quoted-newline
    support, which a correct count needs.
    Raises ``OSError`` or ``pa.ArrowException`` when the file cannot be read back.
    """
    if format == "parquet":
        return int(pq.read_metadata(path).num_rows)
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return -1
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            return -1
    # Generated names read the header as a row (parsed like any other, quotes and all)
    # and keep duplicate input column names from mattering; one column is converted.
    # (A row longer than a block, a big base64 image, is read fine: see the tests.)
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(autogenerate_column_names=True, block_size=1 << 22),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            include_columns=["f0"], column_types={"f0": pa.string()}
        ),
    )
    with contextlib.closing(reader):
        return sum(batch.num_rows for batch in reader) - 1  # the header


class ResultWriter:
    """Write input batches plus their result columns to a temp file; publish on ``finish``.

    ``rows_written`` counts rows accepted by ``write`` (Parquet may still hold the last of
    them in memory until the next row group or ``finish``). Use as a context manager to
    abort on an exception; on success the caller must still call ``finish``.

    The writer publishes only a file it has proved complete: ``write`` refuses a batch
    whose ``first_row`` leaves a gap or goes back, ``finish(expected_rows=N)`` refuses
    unless exactly N rows were written, and the closed file is read back (``count_rows``)
    before the rename. Any ``OSError`` (disk full, I/O error) becomes an ``OutputError``
    naming the output, after which the writer refuses everything: bytes may be missing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_schema: pa.Schema,
        *,
        format: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = _format_for(self.path, format)
        self.input_schema = input_schema
        self.schema = output_schema(input_schema)
        self.rows_written = 0
        self._closed = False  # the pyarrow writers are closed
        self._done = False  # finished or aborted: nothing more to do
        self._failure: OutputError | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_rows = 0
        self._buffer_bytes = 0
        if self.path.is_dir():
            # Caught up front by the run (_workspace); here for direct callers.
            raise OutputError(f"the output {self.path} is a directory; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Same directory as the target: os.replace is only atomic within one filesystem.
            self._tmp = self._reserve_temp()
        except OSError as exc:
            raise self._os_error("creating its temporary file", exc) from None
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pa_csv.CSVWriter | None = None
        try:
            if self.format == "parquet":
                self._parquet = pq.ParquetWriter(str(self._tmp), self.schema, compression="zstd")
            else:
                # The CSV column types are whatever the conversion makes of an empty batch.
                empty = [pa.array([], type=f.type) for f in self.schema]
                header = self._csv_batch(pa.RecordBatch.from_arrays(empty, schema=self.schema))
                self._csv = pa_csv.CSVWriter(str(self._tmp), header.schema)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._os_error("starting the file", exc) from None
            raise

    def _reserve_temp(self) -> Path:
        # O_EXCL claims a unique name even if two writers in one process share a target;
        # mode 0o666 lets the umask decide the final file's permissions, as for any file.
        # The names match temp_pattern: a later run removes those a killed run left.
        base = f".{self.path.name}.{os.getpid()}"
        for n in range(1000):
            candidate = self.path.with_name(f"{base}.tmp" if n == 0 else f"{base}.{n}.tmp")
            with contextlib.suppress(FileExistsError):
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                return candidate
        raise ConfigError(f"cannot create a temporary file next to {self.path}")

    def _os_error(self, doing: str, exc: OSError) -> OutputError:
        return OutputError(
            f"cannot write the output {self.path} ({doing}): {_os_reason(exc)}; "
            "it was not published"
        )

    def _fail(self, error: OutputError) -> OutputError:
        """Remember ``error``: the file may now lack bytes, so it must never be published."""
        self._failure = error
        return error

    def write(
        self,
        batch: pa.RecordBatch,
        results: Sequence[RowResult],
        first_row: int | None = None,
    ) -> None:
        """Append ``batch`` with one result per row; rows keep the order of the calls.

        ``first_row`` is the 0-based input row number of the batch's first row: when
        given it must equal ``rows_written`` (a gap or a step back raises ``OutputError``
        and the writer then refuses to publish). Without it, the calls are trusted to be
        in order and ``finish(expected_rows=...)`` still catches a missing batch.
        """
        if self._done:
            raise RuntimeError(f"writer for {self.path} is already finished or aborted")
        if self._failure is not None:
            raise self._failure
        if len(results) != batch.num_rows:
            raise ValueError(f"{len(results)} results for a batch of {batch.num_rows} rows")
        if (n := batch.num_columns) != len(self.input_schema):
            raise ValueError(f"batch has {n} columns, the input schema {len(self.input_schema)}")
        if first_row is not None and first_row != self.rows_written:
            what = "a gap" if first_row > self.rows_written else "rows out of order"
            raise self._fail(
                OutputError(
                    f"the output {self.path} got {what}: a batch starting at row {first_row} "
                    f"after {self.rows_written} rows; it will not be published"
                )
            )
        if batch.num_rows == 0:
            return
        inputs = [
            col if col.type == f.type else col.cast(f.type)
            for col, f in zip(batch.columns, self.input_schema, strict=True)
        ]
        out = pa.RecordBatch.from_arrays(inputs + results_to_arrays(results), schema=self.schema)
        try:
            if self._parquet is not None:
                self._buffer.append(out)
                self._buffer_rows += out.num_rows
                self._buffer_bytes += out.nbytes
                if self._buffer_rows >= ROW_GROUP_ROWS or self._buffer_bytes >= ROW_GROUP_BYTES:
                    self._flush()
            else:
                assert self._csv is not None
                self._csv.write_batch(self._csv_batch(out))
        except OSError as exc:
            raise self._fail(self._os_error("writing rows", exc)) from None
        self.rows_written += out.num_rows

    def _flush(self) -> None:
        """Write the buffered batches as one row group (many tiny ones slow every reader)."""
        if self._parquet is None or not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        self._buffer, self._buffer_rows, self._buffer_bytes = [], 0, 0
        self._parquet.write_table(table, row_group_size=table.num_rows)

    def _csv_batch(self, out: pa.RecordBatch) -> pa.RecordBatch:
        """Turn an output batch into CSV-ready columns (see the module docstring)."""
        n = len(self.input_schema)
        inputs = zip(out.columns[:n], self.input_schema, strict=True)
        results = zip(out.columns[n:], RESULT_SCHEMA, strict=True)
        columns = [_csv_column(c, f.type) for c, f in inputs]
        columns += [
            _guard_formula(c)
            if f.name in UNTRUSTED_COLUMNS
            else _iso_utc(c)
            if f.type == _TS
            else c
            for c, f in results
        ]
        return pa.RecordBatch.from_arrays(columns, names=self.schema.names)

    def finish(
        self, metadata: Mapping[str, str] | None = None, *, expected_rows: int | None = None
    ) -> Path:
        """Close the file, prove it complete, and move it into place atomically; return
        the final path.

        ``expected_rows`` is the number of input rows: unless exactly that many were
        written the file is not published (``OutputError``). Either way the closed file
        is read back and must hold every row written. On any failure the temporary file
        is deleted and a previous file under the final name is left untouched.

        For Parquet, ``metadata`` (keys like ``capbatch.provider``) goes into the file's
        key-value metadata. CSV has nowhere to keep it, so it is ignored there.
        """
        if self._done:
            raise RuntimeError(f"writer for {self.path} is already finished or aborted")
        try:
            if self._failure is not None:
                raise self._failure
            if expected_rows is not None and expected_rows != self.rows_written:
                raise self._fail(
                    OutputError(
                        f"the output {self.path} would hold {self.rows_written} of the "
                        f"{expected_rows} input rows; it was not published"
                    )
                )
            doing = "finishing the file"
            try:
                if self._parquet is not None:
                    self._flush()
                    if metadata:
                        self._parquet.add_key_value_metadata(dict(metadata))
                self._close_writers()
                doing = "reading it back"
                self._verify()
                # Flush the bytes to disk before the rename, or a power cut could publish
                # an empty file under the final name on some filesystems.
                doing = "flushing it to disk"
                with open(self._tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                doing = "moving it into place"
                os.replace(self._tmp, self.path)
            except OSError as exc:
                raise self._fail(self._os_error(doing, exc)) from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def _verify(self) -> None:
        """Read the closed temporary file back: it must hold every row written."""
        try:
            found = count_rows(self._tmp, self.format)
        except pa.ArrowException as exc:
            found, why = -1, " ".join(str(exc).split())[:200]
        else:
            why = "cut short" if found < 0 else f"{found} rows read back"
        if found != self.rows_written:
            raise self._fail(
                OutputError(
                    f"the output {self.path} is incomplete on disk ({why}, "
                    f"{self.rows_written} written); it was not published"
                )
            )

    def abort(self) -> None:
        """Close and delete the temporary file. Safe to call more than once."""
        if self._done:
            return
        self._done = True
        self._buffer = []
        # Cleaning up after a failure: a close that fails too (disk full) must not hide it.
        try:
            with contextlib.suppress(OSError):
                self._close_writers()
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)

    def _close_writers(self) -> None:
        self._closed = True
        parquet, csv = self._parquet, self._csv
        self._parquet = self._csv = None
        # Closing a writer can fail (disk full); close the other one regardless.
        try:
            if parquet is not None:
                parquet.close()
        finally:
            if csv is not None:
                csv.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.abort()


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an output table (Parquet or CSV) into a DataFrame.

    For CSV the result columns get their real types back (so an answer like ``0123``
    stays text and timestamps are UTC), the spreadsheet formula guard is taken off the
    provider's text (an answer written ``'=x`` reads ``=x``, as it was answered), and
    every input column is text, as ``capbatch run`` reads a CSV input (a label ``0042``
    stays ``"0042"``). An empty quoted field reads as ``""``, an empty unquoted one as
    missing. The one reader of results: the API and the reports both use it.
    """
    p = Path(path)
    if _format_for(p, None) == "parquet":
        return pq.read_table(p).to_pandas()
    return _unguard(read_results_csv(p)).to_pandas()


#: CSV output prefixes provider text a spreadsheet would run as a formula with "'".
_GUARDED = r"^'([=+\-@\t\r])"


def _unguard(table: pa.Table) -> pa.Table:
    """Take the formula guard off the provider's text columns of a CSV output."""
    for name in UNTRUSTED_COLUMNS:
        if name in table.column_names:
            index = table.column_names.index(name)
            column = pc.replace_substring_regex(table[name], pattern=_GUARDED, replacement=r"\1")
            table = table.set_column(index, name, column)
    return table


def read_results_csv(path: Path) -> pa.Table:
    """A CSV output as an Arrow table: result columns typed, the others text."""
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    types: dict[str, pa.DataType] = {name: pa.string() for name in header}
    types.update({f.name: f.type for f in RESULT_SCHEMA})
    options = pa_csv.ConvertOptions(
        column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    return pa_csv.read_csv(path, parse_options=parse, convert_options=options)


def run_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the ``capbatch.*`` key-value metadata of a Parquet output; ``{}`` for CSV."""
    p = Path(path)
    if _format_for(p, None) != "parquet":
        return {}
    raw = pq.read_metadata(p).metadata or {}
    prefix = _METADATA_PREFIX.encode()
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}


class MemorySink:
    """Collects result batches in memory, for in-memory inputs without an output path."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0

    def write(
        self, batch: pa.RecordBatch, results: list[RowResult], first_row: int | None = None
    ) -> None:
        if first_row is not None and first_row != self.rows:  # as ResultWriter.write
            raise OutputError(
                f"the results got a batch starting at row {first_row} after {self.rows} rows"
            )
        self.rows += batch.num_rows
        schema = output_schema(batch.schema)
        arrays = list(batch.columns) + results_to_arrays(results)
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))

    def table(self, input_schema: pa.Schema) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=output_schema(input_schema))
