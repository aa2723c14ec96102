"""Runs whose input or output is an object-store URI (``capbatch run s3://bucket/in.parquet``,
``-o gs://bucket/out.parquet``), on either engine.

A run works on local files, so an object store is staged in a folder of the cache
(``<cache dir>/remote/<digest>/``, the digest naming the input and the output):

* **Input**: downloaded there once, and again only when the object's size or time
  changed. The table is read more than once (the image column's guess, the row count,
  the rows), so one download costs less than streaming it each time. The images its
  rows name are not staged: whoever solves a row reads its image (a Ray worker reads
  its own), by local path or by URI; relative paths resolve against the table's folder
  in the store.
* **Output**: checked writable before anything is sent (a probe object written and
  deleted beside it), written there like any local output (its locks, temporaries and
  publish-only-when-complete rename), then uploaded, whole or not at all, to its URI
  when the run leaves an output: a complete run, or an interrupted one with unfinished
  rows pending, as a local run leaves it. A run that fails uploads nothing, and the
  object already there stays as it was. A CSV output's metadata sidecar goes with it.
  An upload that fails is an ``OutputError`` (exit 1) naming the local copy: running
  the same command again rewrites it from the journal and uploads it, paying nothing.
* **Journal**: beside the staged output unless ``--journal`` names one, so the same
  command on the same machine resumes. On another machine, ``--journal`` with a copy of
  it resumes the same way.

Before anything is sent, an output object that says it was made from another input is
refused (``capbatch.input_uri`` in its metadata), as a local one is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from capbatch._exceptions import ConfigError, OutputError, TableError
from capbatch._io import object_store as store
from capbatch._io.file_metadata import SIDECAR_SUFFIX
from capbatch._run.options import RunOptions
from capbatch._run.workspace import cache_dir

#: The metadata entry naming the object-store input an output was made from.
INPUT_URI_KEY = "capbatch.input_uri"


@dataclass(frozen=True)
class RemoteFiles:
    """Where a run's object-store files are, and their local stand-ins."""

    #: The input's URI as shown (no credentials), or None for a local input.
    input_uri: str | None
    #: The output's URI (as given: it may carry what the store needs), or None.
    output_uri: str | None
    #: The local file the run writes, uploaded to ``output_uri`` at the end.
    staged_output: Path | None

    def publish(self) -> str | None:
        """Upload the staged output (and a CSV's sidecar), if the run left one; its URI
        as shown, else None."""
        if self.output_uri is None or self.staged_output is None:
            return None
        if not self.staged_output.is_file():
            return None
        sidecar = self.staged_output.with_name(self.staged_output.name + SIDECAR_SUFFIX)
        try:
            if sidecar.is_file():
                store.upload(sidecar, store.with_suffix(self.output_uri, SIDECAR_SUFFIX))
            store.upload(self.staged_output, self.output_uri)
        except OutputError as exc:
            # Everything is paid for and journaled: the same command writes it again
            # from the journal and uploads it, sending nothing.
            raise OutputError(
                f"the results are written in {self.staged_output} but not uploaded: "
                f"{exc.message}"
            ) from None
        return store.shown(self.output_uri)


def stage_remote(source: Any, options: RunOptions) -> tuple[Any, RunOptions, RemoteFiles | None]:
    """The run's source and options with object-store files swapped for local ones,
    and where they are (None when neither the input nor the output is in a store)."""
    source = store.local_path(source)
    output = store.local_path(options.output)
    in_uri = source if store.is_uri(source) else None
    out_uri = output if store.is_uri(output) else None
    if in_uri is None and out_uri is None:
        return source, dataclasses.replace(options, output=output), None
    if in_uri is not None and out_uri is None and output is None:
        out_uri = store.with_suffix(in_uri, ".results.parquet")  # the default beside it
    identity = store.shown(in_uri) if in_uri is not None else _local_identity(source)
    if out_uri is not None and store.shown(out_uri) == identity:
        raise ConfigError(f"the output {identity} is the input file: give -o another path")
    target = store.shown(out_uri) if out_uri is not None else str(Path(str(output)).resolve())
    digest = hashlib.sha256(f"{identity or ''}\n{target}".encode()).hexdigest()[:16]
    folder = cache_dir() / "remote" / digest
    folder.mkdir(parents=True, exist_ok=True)
    if in_uri is not None:
        source = _stage_input(in_uri, folder / "input")
    staged_output = None
    if out_uri is not None:
        _check_owner(out_uri, identity)
        store.check_writable(out_uri)
        staged_output = folder / (store.name_of(out_uri) or "results.parquet")
        output = staged_output
    options = dataclasses.replace(options, output=output)
    return source, options, RemoteFiles(identity if in_uri else None, out_uri, staged_output)


def shown_output(output: Path | None, remote: RemoteFiles | None) -> str | None:
    """The output as the summary names it: its URI when it goes to a store."""
    if remote is not None and remote.output_uri is not None:
        return store.shown(remote.output_uri)
    return str(output) if output is not None else None


def _local_identity(source: Any) -> str | None:
    """A local input file's resolved path; None for an in-memory table (its output
    belongs to no input, as a local one does not)."""
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).expanduser().resolve())
    return None


def _stage_input(uri: str, folder: Path) -> Path:
    """The input object as a local file in ``folder``, downloaded when it changed."""
    info = store.look_up(uri)
    if info.kind == "missing":
        raise TableError(f"input file not found: {store.shown(uri)}")
    if info.kind == "folder":
        raise TableError(
            f"{store.shown(uri)} is a folder: an object-store input must be a table file "
            "(.parquet, .csv, .jsonl); list a folder of images into a table first"
        )
    folder.mkdir(exist_ok=True)
    local = folder / (store.name_of(uri) or "input")
    stamp = folder / f".{local.name}.source.json"
    seen = {"size": info.size, "mtime": info.mtime}
    try:
        fresh = local.is_file() and json.loads(stamp.read_text()) == seen
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        store.download(uri, local)
        stamp.write_text(json.dumps(seen))
    return local


def _check_owner(uri: str, identity: str | None) -> None:
    """``ConfigError`` when the object at ``uri`` is the output of another input."""
    if identity is None:
        return
    recorded = _recorded_input(uri)
    if recorded is not None and recorded != identity:
        raise ConfigError(
            f"the output {store.shown(uri)} belongs to the input {recorded}, not {identity}: "
            "give this input its own -o (or delete the output to start over)"
        )


def _recorded_input(uri: str) -> str | None:
    """The input an existing output object names (None: none there, or not capbatch's)."""
    if store.look_up(uri).kind != "file":
        return None
    fs, path = store.filesystem(uri)
    try:
        if uri.lower().endswith((".parquet", ".pq")):
            with fs.open_input_file(path) as file:
                entries = pq.read_metadata(file).metadata or {}
            value = entries.get(INPUT_URI_KEY.encode()) or entries.get(b"capbatch.input")
            return value.decode() if value else None
        sidecar = store.with_suffix(uri, SIDECAR_SUFFIX)
        if store.look_up(sidecar).kind != "file":
            return None
        data = store.read_object(sidecar, limit=None)
        meta = json.loads(data)
        found = meta.get("input_uri") or meta.get("input")
        return str(found) if found else None
    except (*store.ERRORS, json.JSONDecodeError):
        return None  # not a file capbatch can read: the upload replaces it
