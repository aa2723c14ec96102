"""Writing the ``reported`` result column into a results file already published.

``capbatch feedback`` (and a run with ``--report-wrong``, whose reports finish after
rows were written) fills one result column of an existing results file. The file is
rewritten beside itself and moved over the old one (``os.replace``, atomic on one
filesystem), so a crash leaves the old file or the new one, never half of one. Parquet
keeps its schema metadata (the run's settings and summary); CSV is written as
``ResultWriter`` writes it (``to_csv_batch``: the formula guard, UTC times).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from capbatch._exceptions import OutputError
from capbatch._io.csv_results import read_results_csv, to_csv_batch
from capbatch._io.outputs import output_format, run_metadata
from capbatch._io.record import RESULT_COLUMNS, RESULT_SCHEMA

COLUMN = "reported"


def with_column(table: pa.Table, values: Sequence[str | None]) -> pa.Table:
    """``table`` with its ``reported`` column set to ``values`` (added, in the record's
    place among the result columns, when a file from before the column lacks it)."""
    if len(values) != table.num_rows:
        raise ValueError(f"{len(values)} values for {table.num_rows} rows")
    column = pa.array(values, type=RESULT_SCHEMA.field(COLUMN).type)
    if COLUMN in table.column_names:
        return table.set_column(table.column_names.index(COLUMN), COLUMN, column)
    position = table.num_columns
    later = RESULT_COLUMNS[RESULT_COLUMNS.index(COLUMN) + 1 :]
    for name in later:
        if name in table.column_names:
            position = min(position, table.column_names.index(name))
    return table.add_column(position, RESULT_SCHEMA.field(COLUMN), column)


def read_reported(path: Path) -> list[str | None]:
    """The ``reported`` column of a results file (all empty if it has none)."""
    table = _read(path)
    if COLUMN not in table.column_names:
        return [None] * table.num_rows
    return [None if v is None else str(v) for v in table[COLUMN].to_pylist()]


def write_reported(path: Path, values: Sequence[str | None]) -> None:
    """Rewrite the results file ``path`` with its ``reported`` column set to ``values``."""
    table = with_column(_read(path), values)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if output_format(path) == "parquet":
            _write_parquet(table, tmp, run_metadata(path))
        else:
            _write_csv(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the bytes on disk before the rename, as ResultWriter
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"cannot rewrite {path}: {exc.strerror or exc}") from None


def _read(path: Path) -> pa.Table:
    if output_format(path) == "parquet":
        return pq.read_table(path)
    return read_results_csv(path)


def _write_parquet(table: pa.Table, tmp: Path, metadata: dict[str, str]) -> None:
    """As ``ResultWriter`` writes Parquet, the run's key-value metadata kept."""
    with pq.ParquetWriter(str(tmp), table.schema, compression="zstd") as writer:
        writer.write_table(table)
        if metadata:
            writer.add_key_value_metadata(metadata)


def _write_csv(table: pa.Table, tmp: Path) -> None:
    """As ``ResultWriter`` writes CSV: the input columns (text, as they were read) and
    then the result columns in the record's order."""
    inputs = [n for n in table.column_names if n not in RESULT_COLUMNS]
    missing = [n for n in RESULT_COLUMNS if n not in table.column_names]
    for name in missing:  # a file from before a column: empty
        field = RESULT_SCHEMA.field(name)
        table = table.append_column(field, pa.nulls(table.num_rows, type=field.type))
    ordered = table.select([*inputs, *RESULT_COLUMNS])
    input_schema = pa.schema([ordered.schema.field(n) for n in inputs])
    batches = [to_csv_batch(b, input_schema) for b in ordered.to_batches()]
    if not batches:
        empty = pa.RecordBatch.from_pylist([], schema=ordered.schema)
        batches = [to_csv_batch(empty, input_schema)]
    with pa_csv.CSVWriter(str(tmp), batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
