"""A DataFrame input's index and column dtypes, carried through to its results.

``capbatch.run(df.set_index("id"))`` returns its results with ``df``'s index, as
``df.assign`` would, the way pandas itself carries an index through Arrow and Parquet:

* ``readers.frame_reader`` converts the frame with its index when it is not the default
  ``RangeIndex`` (0, 1, 2...): each level becomes a column at the end of the input
  schema, named by the level's name (``__index_level_N__`` when it has none), and the
  schema's ``pandas`` metadata says which columns make the index and each column's dtype
  (what ``pa.Schema.from_pandas`` writes).
* ``result_schema`` (here) is the output schema with that description kept: in memory,
  ``to_pandas()`` rebuilds the index, and a Parquet output holds it as a file written by
  ``DataFrame.to_parquet`` does, so ``pd.read_parquet`` and ``read_results`` rebuild it.
  A CSV output has the index levels as ordinary columns (as text, like every CSV column).

Only a DataFrame or Arrow input has this description: the Parquet reader leaves out a
file's own (its ``__index_level_N__`` columns are dropped, not read as data).
"""

from __future__ import annotations

import json
from typing import Any, Final

import pyarrow as pa

from capbatch._io.record import output_schema

PANDAS_KEY: Final = b"pandas"


def result_schema(input_schema: pa.Schema) -> pa.Schema:
    """``output_schema(input_schema)`` with the input's ``pandas`` metadata kept, its
    column names following the renames (an input column named like a result column)."""
    out = output_schema(input_schema)
    raw = (input_schema.metadata or {}).get(PANDAS_KEY)
    if raw is None:
        return out
    try:
        description = json.loads(raw)
    except ValueError:
        return out  # not pandas' own: nothing to carry
    if not isinstance(description, dict):
        return out
    renamed = {
        old: new for old, new in zip(input_schema.names, out.names, strict=False) if old != new
    }
    if renamed:
        description = _renamed(description, renamed)
    return out.with_metadata({PANDAS_KEY: json.dumps(description).encode()})


def _renamed(description: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    """The description with its columns' Arrow names renamed; an index level keeps its
    own name (``status``), only the column holding it moves (``input_status``)."""
    levels = list(description.get("index_columns", []))
    index = [renamed.get(c, c) if isinstance(c, str) else c for c in levels]
    columns = []
    for column in description.get("columns", []):
        field_name = column.get("field_name")
        if field_name in renamed:
            column = dict(column, field_name=renamed[field_name])  # noqa: PLW2901
            if field_name not in levels:
                column["name"] = renamed[field_name]
        columns.append(column)
    return {**description, "index_columns": index, "columns": columns}
