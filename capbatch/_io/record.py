"""The one result record: every output column is a field here; schema, arrays and readers
are derived from the fields.

``RowResult`` holds the outcome of one input row. Each field carries its column's Arrow
type, nullability and encoder (``_column``), and everything else is read off the fields:
``RESULT_SCHEMA`` and ``RESULT_COLUMNS`` (the result columns, in order), the per-column
readers, ``results_to_arrays`` (a batch of records to Arrow columns) and
``output_schema`` (input columns plus result columns). Adding a column is adding a field.
Writing and reading result files is ``capbatch._io.outputs``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_TS = pa.timestamp("ms", tz="UTC")

#: "pending": an interrupted run did not finish the row; the same command resumes it.
_STATUSES = frozenset({"solved", "failed", "pending"})


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
    cost_usd: float = dataclasses.field(default=0.0, metadata=_column(pa.float64(), nullable=False))
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
