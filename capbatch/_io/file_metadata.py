"""The run metadata a results file carries, where pandas and pyarrow users look for it.

A run describes itself (version, provider, settings, summary, input: ``output_metadata``
in ``capbatch._run.metadata``) as flat ``capbatch.*`` text entries. A results file
holds them in two forms:

* **Text entries** (``capbatch.provider``, ``capbatch.run``...): the Parquet file's
  key-value metadata, as every capbatch version wrote them; ``run_metadata`` returns them.
* **One typed JSON object**: the entries with the prefix dropped and each value typed
  (numbers as numbers, ``complete`` a boolean, ``settings`` and ``run``, the summary, as
  objects, a missing value null). Parquet keeps it in the Arrow schema's metadata, under
  ``capbatch`` (``pq.read_schema(p).metadata[b"capbatch"]``) and under ``PANDAS_ATTRS``
  as ``{"capbatch": {...}}``: the key pandas (2.1 and later) turns into ``DataFrame.attrs``,
  so ``pd.read_parquet(p).attrs["capbatch"]`` is the object. A CSV output gets a sidecar
  file ``<output>.meta.json`` holding it. ``read_results(p).attrs["capbatch"]`` is the
  object for both formats, and for Parquet files of older versions (text entries only).

The schema's metadata is written into the file when the writer opens it, before the run
has a summary; ``replace_parquet_footer`` therefore swaps the finished file's footer for
one with the final metadata (the row groups stay where they are, see its docstring).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

PREFIX: Final = "capbatch."
#: The Arrow schema metadata keys: the object, and pandas' own key for ``DataFrame.attrs``.
SCHEMA_KEY: Final = "capbatch"
PANDAS_ATTRS_KEY: Final = "PANDAS_ATTRS"
SIDECAR_SUFFIX: Final = ".meta.json"

_NUMBERS: Final = frozenset({"spend_usd", "balance_before", "balance_after"})
_BOOLEANS: Final = frozenset({"complete"})
_OBJECTS: Final = frozenset({"settings", "run"})
#: Left out of the entries when unknown, so always in the object: null when missing.
_NULLABLE: Final = ("balance_before", "balance_after", "input")
_PARQUET_MAGIC: Final = b"PAR1"


def _typed(name: str, text: str) -> Any:
    """One text entry's value, typed; an empty text (older files) is null."""
    if text == "":
        return None
    try:
        if name in _NUMBERS:
            return float(text)
        if name in _OBJECTS:
            return json.loads(text)
    except ValueError:
        return text  # a damaged entry stays readable as the text it is
    if name in _BOOLEANS:
        return text == "true"
    return text


def to_object(entries: Mapping[str, str]) -> dict[str, Any]:
    """The typed object of ``capbatch.*`` text entries (other keys are left out)."""
    info = {
        key.removeprefix(PREFIX): _typed(key.removeprefix(PREFIX), value)
        for key, value in entries.items()
        if key.startswith(PREFIX)
    }
    if "run" in info:  # a run's metadata: what it did not know is there, as null
        for name in _NULLABLE:
            info.setdefault(name, None)
    return info


def to_entries(info: Mapping[str, Any]) -> dict[str, str]:
    """The ``capbatch.*`` text entries of a typed object (nulls left out): the inverse of
    ``to_object``."""
    entries: dict[str, str] = {}
    for name, value in info.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True, default=str)
        else:
            text = str(value)
        entries[PREFIX + name] = text
    return entries


def schema_metadata(info: Mapping[str, Any]) -> dict[str, str]:
    """The Arrow schema metadata entries carrying the object."""
    return {
        SCHEMA_KEY: json.dumps(info, default=str),
        PANDAS_ATTRS_KEY: json.dumps({"capbatch": info}, default=str),
    }


def sidecar_path(output: Path) -> Path:
    """``<output>.meta.json``: a CSV output's metadata beside it."""
    return output.with_name(output.name + SIDECAR_SUFFIX)


def parquet_entries(path: Path) -> dict[str, str]:
    """The ``capbatch.*`` text entries of a Parquet file's key-value metadata."""
    raw = pq.read_metadata(path).metadata or {}
    prefix = PREFIX.encode()
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}


def parquet_object(schema: pa.Schema, path: Path) -> dict[str, Any]:
    """The object of a Parquet file whose Arrow schema is ``schema``: from the schema's
    metadata, else (a file of an older version) from its text entries."""
    raw = (schema.metadata or {}).get(SCHEMA_KEY.encode())
    if raw is not None:
        with contextlib.suppress(ValueError):
            info = json.loads(raw)
            if isinstance(info, dict):
                return info
    return to_object(parquet_entries(path))


def read_sidecar(output: Path) -> dict[str, Any]:
    """The object in a CSV output's sidecar; ``{}`` when there is none (or it is damaged:
    the results themselves stay readable)."""
    try:
        info = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def publish_with_sidecar(
    temporary: Path,
    output: Path,
    entries: Mapping[str, str] | None,
    index: list[list[str | None]] | None = None,
) -> None:
    """Rename the finished CSV ``temporary`` to ``output``, its metadata object (of
    ``entries``) in the sidecar beside it; with ``index`` (a DataFrame input's index
    levels, ``frame_index.index_levels``) under ``index``, for ``read_results`` to set it
    back. A sidecar of an earlier run is removed first: a crash in between leaves results
    without metadata, never with another run's."""
    sidecar = sidecar_path(output)
    # Named as ``outputs.temp_pattern`` expects: a later run removes it if this one dies.
    staged = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    try:
        if entries:
            info = to_object(entries) | ({"index": index} if index else {})
            with open(staged, "w", encoding="utf-8") as fh:
                json.dump(info, fh, indent=2, sort_keys=True, default=str)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
        sidecar.unlink(missing_ok=True)
        os.replace(temporary, output)
        if entries:
            os.replace(staged, sidecar)
    finally:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)


def replace_parquet_footer(path: Path, schema: pa.Schema, entries: Mapping[str, str]) -> None:
    """Give the closed Parquet file ``path`` (written with the Arrow schema ``schema``) a
    footer whose key-value metadata is ``entries`` and whose schema's metadata adds their
    typed object (``schema_metadata``), keeping every row group as written.

    A Parquet file is ``PAR1``, the row groups, the footer (its ``FileMetaData``), the
    footer's length (4 bytes, little-endian) and ``PAR1`` again; the footer points at the
    row groups by their offsets in the file. pyarrow builds the new footer with public
    calls: an empty file's footer written with ``schema``, the file's row groups
    appended to it (``FileMetaData.append_row_groups``, made for dataset ``_metadata``
    files), encoded by ``write_metadata_file``. The old footer is then overwritten in
    place: the cost is the footer's size, not the file's (rewriting a 1M-row output would
    take as long as writing it). The caller reads the file back before publishing it.
    Raises ``OSError`` or ``pa.ArrowException``; ``ValueError`` for a file that does not
    end as a Parquet file.
    """
    written = pq.read_metadata(path)
    schema = schema.with_metadata(
        {**(schema.metadata or {}), **schema_metadata(to_object(entries))}
    )
    empty = pa.BufferOutputStream()
    with pq.ParquetWriter(empty, schema) as writer:
        if entries:
            writer.add_key_value_metadata(dict(entries))
    footer = pq.read_metadata(pa.BufferReader(empty.getvalue()))
    footer.append_row_groups(written)
    encoded = pa.BufferOutputStream()
    footer.write_metadata_file(encoded)
    whole = encoded.getvalue().to_pybytes()  # PAR1, footer, length, PAR1
    if not (whole.startswith(_PARQUET_MAGIC) and whole.endswith(_PARQUET_MAGIC)):
        raise ValueError("pyarrow encoded a footer without the Parquet magic")
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 8)
        tail = fh.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != _PARQUET_MAGIC or not 0 < length <= size - 12:
            raise ValueError(f"{path} does not end as a Parquet file")
        fh.seek(size - 8 - length)
        fh.write(whole[len(_PARQUET_MAGIC) :])
        fh.truncate()
