"""The CSV form of a result table, both ways: what a CSV cannot hold becomes text on the
way out, and the result columns get their types back on the way in.

Out (``to_csv_batch``): binary input columns become base64 text and nested ones (lists,
structs, maps) JSON text; result timestamps become ISO 8601 UTC text
(``2024-05-01T12:00:00.123Z``); durations are rounded to 0.1 ms and money to 6 decimals
(``CSV_DECIMALS``; Parquet keeps the full values); text that came from the remote service
and starts with ``= + - @``, tab or carriage return gets a leading ``'`` so a spreadsheet
does not run it as a formula (OWASP CSV injection advice). In (``read_results_csv``): the
result columns are typed by ``RESULT_SCHEMA``, every other column is text, and the formula
guard is taken off again. Writing the file itself is ``capbatch._io.outputs``.
"""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from capbatch._io.record import RESULT_SCHEMA

#: Result columns whose text comes from the remote service, guarded in CSV output.
UNTRUSTED_COLUMNS = ("answer", "solution", "error_code", "error_message", "task_id")
_FORMULA_START = r"^([=+\-@\t\r])"
#: How the guard looks in a CSV output, to take it off on reading.
_GUARDED = r"^'([=+\-@\t\r])"
#: Decimals a CSV output keeps of a float result column. Durations: 0.1 ms is far below
#: what a network round trip can measure (``302.45280265808105`` ms says nothing more than
#: ``302.5``). Money: every provider prices and reports costs in whole micro-dollars at
#: most (Anti-Captcha's ``"0.000700"``, 2Captcha's ``"0.00299"``: docs/providers.md AC10,
#: TC11), so 6 decimals keep each cost exact and drop only float noise.
CSV_DECIMALS = {"latency_ms": 1, "queue_ms": 1, "cost_usd": 6}


def to_csv_batch(out: pa.RecordBatch, input_schema: pa.Schema) -> pa.RecordBatch:
    """An output batch (``input_schema``'s columns, then the result columns) as CSV-ready
    columns, by the rules in the module docstring; the column names are kept."""
    n = len(input_schema)
    inputs = zip(out.columns[:n], input_schema, strict=True)
    results = zip(out.columns[n:], RESULT_SCHEMA, strict=True)
    columns = [_csv_column(c, f.type) for c, f in inputs]
    columns += [
        _guard_formula(c)
        if f.name in UNTRUSTED_COLUMNS
        else _iso_utc(c)
        if pa.types.is_timestamp(f.type)
        else pc.round(c, ndigits=CSV_DECIMALS[f.name], round_mode="half_towards_infinity")
        if f.name in CSV_DECIMALS
        else c
        for c, f in results
    ]
    return pa.RecordBatch.from_arrays(columns, names=out.schema.names)


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


def read_results_csv(path: Path) -> pa.Table:
    """A CSV output as an Arrow table: result columns typed, the others text, and the
    formula guard taken off the provider's text (``'=x`` reads ``=x``, as answered)."""
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    types: dict[str, pa.DataType] = {name: pa.string() for name in header}
    types.update({f.name: f.type for f in RESULT_SCHEMA})
    options = pa_csv.ConvertOptions(
        column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    return _unguard(pa_csv.read_csv(path, parse_options=parse, convert_options=options))


def _unguard(table: pa.Table) -> pa.Table:
    """Take the formula guard off the provider's text columns of a CSV output."""
    for name in UNTRUSTED_COLUMNS:
        if name in table.column_names:
            index = table.column_names.index(name)
            column = pc.replace_substring_regex(table[name], pattern=_GUARDED, replacement=r"\1")
            table = table.set_column(index, name, column)
    return table
