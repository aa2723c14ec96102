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
STATUSES = frozenset({"solved", "failed", "pending"})

#: The ``reported`` column's values: the provider accepted the report ("reported"), or
#: answered it with an error ("refused"); it may have reached the provider without a
#: reply ("uncertain"); it was not sent: outside the provider's window, no report call,
#: no task id ("not_reportable"), or the connection failed before anything was sent
#: ("unsent", tried again by the next ``capbatch feedback``).
REPORT_OUTCOMES = frozenset({"reported", "refused", "uncertain", "not_reportable", "unsent"})


#: How the journal merges a task's final write with what it already holds for the task:
#: "set" replaces, "add" adds (money, polls), "keep" keeps the first value, "newer" takes
#: the new value when there is one, "none" leaves the column to the journal's own
#: bookkeeping (attempts, counted as each createTask is journaled).
JOURNAL_MERGES = frozenset({"set", "add", "keep", "newer", "none"})


def _column(
    arrow: pa.DataType,
    *,
    nullable: bool = True,
    encode: Callable[[Any], Any] | None = None,
    journal: str | None = "set",
    journal_name: str | None = None,
    payer_only: bool = False,
) -> dict[str, Any]:
    """A result column's definition, kept on its ``RowResult`` field: the Arrow type; how
    a value is turned into one the Arrow type holds; how the journal keeps it
    (``journal``: a merge rule of ``JOURNAL_MERGES``, or None for a column the journal
    does not keep; ``journal_name`` if its journal column is named otherwise); and
    ``payer_only``: the value belongs to the row that paid for the task, and a row that
    reuses the answer (an identical image, a cached answer) shows the default instead."""
    if journal is not None and journal not in JOURNAL_MERGES:
        raise ValueError(f"journal merge must be one of {sorted(JOURNAL_MERGES)}")
    return {
        "arrow": arrow,
        "nullable": nullable,
        "encode": encode,
        "journal": journal,
        "journal_name": journal_name,
        "payer_only": payer_only,
    }


# One encoder made once: json.dumps with options builds a new encoder on every call, about
# a third of the cost of a million rows. default=str: a paid answer must never be lost
# because one value of its solution is not JSON-native.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


@dataclass(frozen=True, slots=True)
class RowResult:
    """The outcome of one input row, one value per result column: THE definition of the
    result columns. ``RESULT_SCHEMA`` and ``results_to_arrays`` are derived from these
    fields and their metadata, and so are the journal's columns and its final write
    (``JOURNAL_COLUMNS``): a new column is one field here.

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
    task_id: str | None = dataclasses.field(
        default=None, metadata=_column(pa.string(), journal="newer")
    )
    provider: str | None = dataclasses.field(
        default=None, metadata=_column(pa.string(), journal="keep")
    )
    attempts: int = dataclasses.field(
        default=0, metadata=_column(pa.int32(), nullable=False, journal="none", payer_only=True)
    )
    polls: int = dataclasses.field(
        default=0, metadata=_column(pa.int32(), nullable=False, journal="add", payer_only=True)
    )
    submitted_at: float | None = dataclasses.field(
        default=None, metadata=_column(_TS, journal="keep", payer_only=True)
    )
    finished_at: float | None = dataclasses.field(
        default=None, metadata=_column(_TS, payer_only=True)
    )
    latency_ms: float | None = dataclasses.field(
        default=None, metadata=_column(pa.float64(), payer_only=True)
    )
    queue_ms: float | None = dataclasses.field(
        default=None, metadata=_column(pa.float64(), payer_only=True)
    )
    cost_usd: float = dataclasses.field(
        default=0.0,
        metadata=_column(
            pa.float64(), nullable=False, journal="add", journal_name="cost", payer_only=True
        ),
    )
    #: Not journaled: a row's answer is from the cache when another row paid for it.
    from_cache: bool = dataclasses.field(
        default=False, metadata=_column(pa.bool_(), nullable=False, journal=None)
    )
    #: What became of reporting this row's answer as wrong (``capbatch feedback``, ``run
    #: --report-wrong``): ``REPORT_OUTCOMES``; empty when it was not reported. Kept by the
    #: journal ("newer": a run's final write, which has none, keeps a report's outcome).
    reported: str | None = dataclasses.field(
        default=None, metadata=_column(pa.string(), journal="newer")
    )
    #: How sure the solver was of ``answer``, 0 to 1, where it says (the local solver;
    #: a provider's ``solution.confidence``); else empty.
    confidence: float | None = dataclasses.field(default=None, metadata=_column(pa.float64()))
    #: The cascade (``--local-first``): the local solver's answer and confidence for the
    #: row, whichever stage answered it, so the gate can be tuned again from any output.
    #: Not journaled: read from the local stage's own journal entry.
    local_answer: str | None = dataclasses.field(
        default=None, metadata=_column(pa.string(), journal=None)
    )
    local_confidence: float | None = dataclasses.field(
        default=None, metadata=_column(pa.float64(), journal=None)
    )

    def __post_init__(self) -> None:
        # Fail where the bad value is made, not thousands of rows later in the writer.
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {sorted(STATUSES)}, not {self.status!r}")


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


def as_reused(result: RowResult) -> RowResult:
    """``result`` as a row that did not pay for it shows it (an identical image solved
    for another row, or an answer from the journal): the payer-only fields at their
    defaults, ``from_cache`` set."""
    return dataclasses.replace(result, **_REUSED)


_REUSED: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(RowResult) if f.metadata["payer_only"]
} | {"from_cache": True}


@dataclass(frozen=True)
class JournalColumn:
    """One result field as the journal keeps it (derived from the field's ``_column``)."""

    field: str
    name: str
    #: Its SQLite declaration: every result column may be empty until the task is done,
    #: except counters, which start at 0.
    sql: str
    merge: str
    #: Python value -> stored value (the solution object as JSON text), if not as is.
    encode: Callable[[Any], Any] | None


def _sql_type(arrow: pa.DataType, nullable: bool) -> str:
    if pa.types.is_integer(arrow):
        return "INTEGER" if nullable else "INTEGER NOT NULL DEFAULT 0"
    if pa.types.is_floating(arrow) or pa.types.is_timestamp(arrow):
        return "REAL"
    return "TEXT"


#: The journal's result columns, in ``RowResult`` order.
JOURNAL_COLUMNS: tuple[JournalColumn, ...] = tuple(
    JournalColumn(
        field=f.name,
        name=f.metadata["journal_name"] or f.name,
        sql=_sql_type(f.metadata["arrow"], f.metadata["nullable"]),
        merge=f.metadata["journal"],
        encode=f.metadata["encode"],
    )
    for f in dataclasses.fields(RowResult)
    if f.metadata["journal"] is not None
)
