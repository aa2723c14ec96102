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
  A CSV output has the index levels as columns (as text, like every CSV column), named
  in its metadata sidecar (``index_levels``), so ``read_results`` sets them back as the
  index (``with_index``).

Only a DataFrame or Arrow input has this description: the Parquet reader leaves out a
file's own (its ``__index_level_N__`` columns are dropped, not read as data).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from capbatch._io.record import output_schema

if TYPE_CHECKING:
    import pandas as pd

PANDAS_KEY: Final = b"pandas"


def _description(schema: pa.Schema) -> dict[str, Any] | None:
    raw = (schema.metadata or {}).get(PANDAS_KEY)
    try:
        description = json.loads(raw) if raw is not None else None
    except ValueError:
        return None  # not pandas' own: nothing to carry
    return description if isinstance(description, dict) else None


def index_levels(schema: pa.Schema) -> list[list[str | None]]:
    """``[column, index name]`` for each index level the schema holds in a column (none
    for the default index or a ``RangeIndex``, kept as a description only)."""
    description = _description(schema) or {}
    names = {c.get("field_name"): c.get("name") for c in description.get("columns", [])}
    levels = description.get("index_columns", [])
    return [[c, names.get(c)] for c in levels if isinstance(c, str) and c in schema.names]


def with_index(frame: pd.DataFrame, levels: Any) -> pd.DataFrame:
    """``frame`` with the columns ``levels`` names (``index_levels``) as its index, named
    as they were; ``frame`` unchanged if any is missing or ``levels`` is not a list."""
    if not isinstance(levels, list) or not levels:
        return frame
    try:
        columns = [str(column) for column, _ in levels]
        names = [None if name is None else str(name) for _, name in levels]
    except (TypeError, ValueError):
        return frame  # a damaged sidecar: the results as they are
    if not set(columns) <= set(frame.columns):
        return frame
    frame = frame.set_index(columns)
    frame.index.names = names
    return frame


def result_schema(input_schema: pa.Schema) -> pa.Schema:
    """``output_schema(input_schema)`` with the input's ``pandas`` metadata kept, its
    column names following the renames (an input column named like a result column)."""
    out = output_schema(input_schema)
    description = _description(input_schema)
    if description is None:
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
