"""The streaming reader: an input table as record batches of one fixed schema.

``TableSource`` streams Parquet, CSV and JSON Lines files (CSV and JSONL may be ``.gz``),
a folder of image files (a row per image, ``image_folder``), pandas DataFrames and
pyarrow Tables as ``pyarrow.RecordBatch`` objects of at most
``batch_rows`` rows, all with exactly ``TableSource.schema``. Files are never loaded
whole: memory is a batch plus a few MB of reader buffers, whatever the file size.

A CSV's field separator is read off its header line: ``,`` unless the header has no
comma and one of ``;``, tab, ``|``. When the header holds several of them, the one that
splits the first lines into the same number of fields (more than one) wins, the most
fields first, ``,`` on a tie. The table must be a regular file: a pipe or device is
refused before it is opened (it could block, and the table is read more than once).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa

from capbatch._exceptions import ConfigError, TableError
from capbatch._io import object_store
from capbatch._io.image_column import guess_image_column, is_image_type
from capbatch._io.image_folder import folder_table
from capbatch._io.readers import (
    READ_ERRORS,
    Reader,
    file_reader,
    frame_reader,
    is_data_frame,
    rechunk,
    short_error,
)

if TYPE_CHECKING:
    import pandas as pd

# Tried in this order, case-insensitively, before looking at the values.
IMAGE_COLUMN_NAMES: Final = tuple(
    "image image_path image_b64 image_base64 image_bytes img path file filename file_path"  # noqa: SIM905
    " captcha body".split()
)
ID_COLUMN_NAMES: Final = ("id", "row_id", "uuid", "key")
_FORMATS: Final = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
_FORMATS.update({".ndjson": "jsonl", ".json": "jsonl"})  # .json must hold JSON Lines


class TableSource:
    """A re-iterable stream of record batches from a file or an in-memory table.

    ``path`` is None in memory; relative image paths resolve against ``base_dir`` (the
    table's folder, a folder input's parent, else the working directory); ``format`` is
    parquet, csv, jsonl, folder, dataframe or arrow; ``num_rows`` is None for CSV until
    ``count_rows()``; ``delimiter`` is the CSV field separator found (None for other
    formats).

    Construction reads metadata, the first batch if the image column must be found by
    content, and (JSON Lines only) the whole file once to fix column types. It raises
    ``TableError`` for an unusable table; one with no rows is fine (no batches).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | pd.DataFrame | pa.Table,
        *,
        image_column: str | None = None,
        id_column: str | None = None,
        batch_rows: int = 1024,
        origin: str | None = None,
    ) -> None:
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ConfigError(f"batch_rows must be a positive integer, not {batch_rows!r}")
        self.batch_rows = batch_rows
        self.path: Path | None = None
        self.base_dir = Path.cwd()
        #: The object-store URI ``path`` was downloaded from (``_run.remote_files``), if
        #: any: relative image paths then resolve against its folder in the store.
        self.origin = origin
        if is_data_frame(source):
            self.format, self._reader = "dataframe", frame_reader(source)
        elif isinstance(source, pa.Table):
            self.format = "arrow"  # zero-copy slices
            self._reader = Reader(source.schema, source.to_batches, source.num_rows)
        elif isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir():
            self.path = Path(source).expanduser().resolve()  # its name makes image paths
            self.base_dir = self.path.parent
            self.format, folder = "folder", folder_table(self.path)
            self._reader = Reader(folder.schema, folder.to_batches, folder.num_rows)
        elif isinstance(source, (str, os.PathLike)):
            self.path = Path(source).expanduser().absolute()
            self.base_dir = self.path.parent
            self.format, gz = _check_file(self.path)
            self._reader = file_reader(self.path, self.format, gz)
        else:  # for untyped callers
            what = type(source).__name__
            raise TableError(f"cannot read a {what}: pass a path, a DataFrame or a pyarrow Table")
        self.schema: pa.Schema = self._reader.schema
        self.num_rows: int | None = self._reader.num_rows
        self.delimiter: str | None = self._reader.delimiter
        names = self.schema.names
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise TableError(f"{self._name} has duplicate column names: {', '.join(duplicates)}")
        self.image_column: str = self._find_image_column(image_column)
        self.id_column: str | None = self._find_id_column(id_column)

    @property
    def image_base(self) -> Path | str:
        """Where relative image paths point: ``base_dir``, or for a table downloaded from
        an object store (``origin``) its folder's URI."""
        return object_store.folder_of(self.origin) if self.origin else self.base_dir

    @property
    def _name(self) -> str:
        if self.origin is not None:
            return self.origin
        return str(self.path) if self.path is not None else f"the input {self.format}"

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else self.format
        return f"TableSource({where!r}, format={self.format!r}, image_column={self.image_column!r})"

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Stream from the first row, in order: non-empty batches of up to ``batch_rows``
        rows with exactly ``schema``. A read error part-way through is a ``TableError``."""
        try:
            raw = self._reader.stream(self.batch_rows)
            yield from rechunk(raw, self.schema, self.batch_rows)
        except READ_ERRORS as exc:
            raise TableError(f"cannot read {self._name}: {short_error(exc)}") from exc

    def count_rows(self) -> int:
        """The number of rows; streams a CSV once (one column only) the first time."""
        if self.num_rows is None and self._reader.count is not None:
            try:
                self.num_rows = self._reader.count()
            except READ_ERRORS as exc:
                raise TableError(f"cannot read {self._name}: {short_error(exc)}") from exc
        return self.num_rows or 0

    def _find_image_column(self, wanted: str | None) -> str:
        names = self.schema.names
        if wanted is not None:
            self._check_named("image", wanted)
            dtype = self.schema.field(wanted).type
            if not is_image_type(dtype):
                what = "paths, base64 strings, data URIs or bytes"
                raise TableError(f"image column {wanted!r} holds {dtype} values, not {what}")
            return wanted
        for candidate in IMAGE_COLUMN_NAMES:
            for name in names:
                if name.lower() == candidate and is_image_type(self.schema.field(name).type):
                    return name
        first = next(self.batches(), None)
        if (found := guess_image_column(first) if first is not None else None) is None:
            raise TableError(
                f"no image column found in {self._name}; columns: {', '.join(map(repr, names))}."
                " Name it 'image' (or image_path, image_b64, ...) or pass the image column"
            )
        return found

    def _find_id_column(self, wanted: str | None) -> str | None:
        if wanted is not None:
            self._check_named("id", wanted)
        for candidate in ID_COLUMN_NAMES if wanted is None else ():
            for name in self.schema.names:
                if name.lower() == candidate and name != self.image_column:
                    return name
        return wanted

    def _check_named(self, role: str, wanted: str) -> None:
        names = self.schema.names
        if wanted not in names:
            hint = [f" (did you mean {n!r}?)" for n in names if n.lower() == wanted.lower()]
            raise TableError(
                f"{role} column {wanted!r} is not in {self._name}{''.join(hint[:1])}; "
                f"columns: {', '.join(map(repr, names))}"
            )


def _check_file(path: Path) -> tuple[str, bool]:
    """The format of ``path`` and whether it is gzip-compressed; TableError if unusable."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    gz = suffixes[-1:] == [".gz"]
    fmt = _FORMATS.get(suffixes[-2 if gz else -1] if len(suffixes) > gz else "")
    try:
        if path.is_dir():
            raise TableError(f"input path is a directory, not a table file: {path}")
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            # Checked before opening: opening a FIFO waits for a writer, maybe for ever.
            raise TableError(
                f"input is not a regular file (a pipe, FIFO or device): {path}; capbatch "
                "reads the table more than once, save it to a file first"
            )
        size = st.st_size
        with path.open("rb"):  # permission problems surface here, with a clear message
            pass
    except FileNotFoundError:
        raise TableError(f"input file not found: {path}") from None
    except OSError as exc:
        raise TableError(f"cannot read input file {path}: {exc.strerror or exc}") from exc
    if fmt is None or (gz and fmt == "parquet"):
        raise TableError(
            f"unknown table file type {''.join(path.suffixes) or '(no extension)'!r}: {path};"
            " use .parquet/.pq, .csv, or .jsonl/.ndjson/.json (JSON Lines), .csv/JSONL may be .gz"
        )
    if size == 0:
        raise TableError(f"input file is empty (0 bytes): {path}")
    return fmt, gz
