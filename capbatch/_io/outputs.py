"""Result files: incremental writing, atomic finish, and reading them back.

The runner hands ``ResultWriter.write`` one input ``RecordBatch`` at a time, in input
order, together with one ``RowResult`` per row. The writer appends the result columns
(``RESULT_SCHEMA``, defined by the record in ``capbatch._io.record``) to the input columns
and streams them into a temporary file next to the destination; ``finish()`` renames it
into place, so a reader never sees a half-written table and a crashed run never leaves one
behind under the real name. ``read_results`` and ``run_metadata`` read a finished file.

Formats, chosen by the destination's extension (or ``format=``):

* Parquet (``.parquet``, ``.pq``): typed, zstd-compressed, small batches gathered into row
  groups of about ``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES`` bytes. Run metadata goes
  into the file's key-value metadata (``run_metadata`` reads it back) and, as one typed
  object, into the Arrow schema's metadata (``capbatch._io.file_metadata``).
* CSV (``.csv``): for spreadsheets and shell tools. Result timestamps are ISO 8601 UTC
  (``2024-05-01T12:00:00.123Z``). Text that came from the remote service and starts with
  ``= + - @``, tab or carriage return gets a leading ``'`` so a spreadsheet does not run it
  as a formula (OWASP CSV injection advice); ``read_results`` takes the quote off again.
  Input columns are written as they are, except those a CSV cannot hold: binary
  columns become base64 text, nested columns (lists, structs, maps) become JSON text.
  These conversions, both ways, are ``capbatch._io.csv_results``. Run metadata goes into
  a sidecar file, ``<output>.meta.json``.

``read_results(p).attrs["capbatch"]`` is the run metadata object, for both formats.
"""

from __future__ import annotations

import contextlib
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from capbatch._exceptions import ConfigError, OutputError
from capbatch._io.csv_results import read_results_csv, to_csv_batch
from capbatch._io.file_metadata import (
    parquet_entries,
    parquet_object,
    publish_with_sidecar,
    read_sidecar,
    replace_parquet_footer,
    sidecar_path,
    to_entries,
)
from capbatch._io.frame_index import index_levels, result_schema, with_index
from capbatch._io.record import RowResult, results_to_arrays

if TYPE_CHECKING:
    import pandas as pd

#: Parquet row groups are flushed at whichever limit is reached first.
ROW_GROUP_ROWS = 64 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024

_EXTENSIONS: Mapping[str, str] = types.MappingProxyType(
    {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
)


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


def temp_pattern(target: Path) -> re.Pattern[str]:
    """The names ``ResultWriter`` gives its temporaries beside ``target``:
    ``.NAME.PID.tmp`` and ``.NAME.PID.N.tmp``, and ``.NAME.meta.json.PID.tmp`` for a CSV's
    metadata sidecar."""
    sidecar = re.escape(sidecar_path(target).name.removeprefix(target.name))
    return re.compile(rf"\.{re.escape(target.name)}(?:{sidecar})?\.\d+(?:\.\d+)?\.tmp")


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
        self.schema = result_schema(input_schema)
        self.rows_written = 0
        self._closed = False  # the pyarrow writers are closed
        self._done = False  # finished or aborted: nothing more to do
        self._failure: OutputError | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_rows = 0
        self._buffer_bytes = 0
        if self.path.is_dir():
            # Caught up front by the run (_run.workspace); here for direct callers.
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
                header = to_csv_batch(
                    pa.RecordBatch.from_arrays(empty, schema=self.schema), input_schema
                )
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
                self._csv.write_batch(to_csv_batch(out, self.input_schema))
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

    def finish(
        self, metadata: Mapping[str, str] | None = None, *, expected_rows: int | None = None
    ) -> Path:
        """Close the file, prove it complete, and move it into place atomically; return
        the final path.

        ``expected_rows`` is the number of input rows: unless exactly that many were
        written the file is not published (``OutputError``). Either way the closed file
        is read back and must hold every row written. On any failure the temporary file
        is deleted and a previous file under the final name is left untouched.

        ``metadata`` (text entries like ``capbatch.provider``, ``capbatch._run.metadata``)
        goes, for Parquet, into the file's key-value metadata and, as one typed object,
        into its Arrow schema's metadata (``capbatch._io.file_metadata``); for CSV, as
        the object, into the sidecar ``<output>.meta.json``, published with the file (a
        sidecar of an earlier run is removed first, never left beside new results).
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
                self._close_writers()
                if metadata and self.format == "parquet":
                    doing = "writing its metadata"
                    self._write_parquet_metadata(metadata)
                doing = "reading it back"
                self._verify()
                # Flush the bytes to disk before the rename, or a power cut could publish
                # an empty file under the final name on some filesystems.
                doing = "flushing it to disk"
                with open(self._tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                doing = "moving it into place"
                if self.format == "csv":
                    levels = index_levels(self.schema)
                    publish_with_sidecar(self._tmp, self.path, metadata, levels)
                else:
                    os.replace(self._tmp, self.path)
            except OSError as exc:
                raise self._fail(self._os_error(doing, exc)) from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def _write_parquet_metadata(self, metadata: Mapping[str, str]) -> None:
        try:
            replace_parquet_footer(self._tmp, self.schema, metadata)
        except (pa.ArrowException, ValueError) as exc:
            why = " ".join(str(exc).split())[:200]
            raise self._fail(
                OutputError(f"cannot write the metadata of {self.path}: {why}; not published")
            ) from None

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
    missing. A DataFrame input's index is the frame's index again (``frame_index``).
    The run metadata is in ``attrs["capbatch"]``. The API and the reports both use it.
    """
    p = Path(path)
    if _format_for(p, None) == "parquet":
        table = pq.read_table(p)
        frame = table.to_pandas()
        info = parquet_object(table.schema, p)
    else:
        info = read_sidecar(p)
        frame = with_index(read_results_csv(p).to_pandas(), info.pop("index", None))
    if info:
        frame.attrs["capbatch"] = info
    return frame


def run_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The run metadata of a results file as ``capbatch.*`` text entries (a Parquet file's
    key-value metadata; for CSV, of its ``<output>.meta.json``, ``{}`` without one).
    ``read_results(path).attrs["capbatch"]`` is the same, typed."""
    p = Path(path)
    if _format_for(p, None) != "parquet":
        return to_entries(read_sidecar(p))
    return parquet_entries(p)


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
        schema = result_schema(batch.schema)
        arrays = list(batch.columns) + results_to_arrays(results)
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))

    def table(self, input_schema: pa.Schema) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=result_schema(input_schema))
