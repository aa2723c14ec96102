"""A folder of image files as an input table: ``capbatch run images/``.

One row per image file directly in the folder (``IMAGE_SUFFIXES``, any case; hidden files
and sub-folders left out), sorted by file name, with these text columns:

* ``id``: the file name without its extension (``cap-0001`` for ``cap-0001.png``);
* ``image_path``: ``<folder name>/<file name>``, relative to the folder's parent, which is
  where relative image paths of the run (and of its report's gallery) are resolved, as for
  a table file beside its images;
* with a ``labels.csv`` in the folder: ``label`` and the file's other columns.

``labels.csv`` (comma-separated, UTF-8, a header line) has a ``label`` column and one key
column: a file name column (``file``, ``filename``, ``file_name``, ``image``,
``image_path`` or ``path``; only the name is compared, any folder in front is ignored) or
``id`` (compared with the file name without its extension). A file without a row gets an
empty label; a row naming no file of the folder is not used. A missing key or ``label``
column, or a file with two rows, is a ``TableError`` naming the line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pyarrow as pa

from capbatch._exceptions import TableError

IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
LABELS_FILE: Final = "labels.csv"
#: Key columns of ``labels.csv`` holding a file name, in order of preference; or ``id``.
FILE_KEYS: Final = ("file", "filename", "file_name", "image", "image_path", "path")
ID_KEY: Final = "id"


def image_files(folder: Path) -> list[str]:
    """The names of the image files directly in ``folder``, sorted."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise TableError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    names = [
        e.name
        for e in entries
        if not e.name.startswith(".")
        and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
        and e.is_file()
    ]
    if not names:
        kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise TableError(f"no image files ({kinds}) in the folder {folder}")
    return sorted(names)


def folder_table(folder: Path) -> pa.Table:
    """The folder as a table, by the rules in the module docstring."""
    names = image_files(folder)
    ids = [os.path.splitext(n)[0] for n in names]
    columns: dict[str, list[str | None]] = {
        ID_KEY: list(ids),
        "image_path": [f"{folder.name}/{n}" for n in names],
    }
    labels = folder / LABELS_FILE
    if labels.is_file():
        columns.update(_label_columns(labels, names, ids))
    return pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()})


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                yield line, {k.strip(): (v or "") for k, v in row.items() if k is not None}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TableError(f"cannot read {path}: {exc}") from None


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TableError(f"cannot read {path}: {exc}") from None


def _label_columns(path: Path, names: list[str], ids: list[str]) -> dict[str, list[str | None]]:
    """``label`` and the other columns of ``labels.csv``, one value per image file."""
    header = _header(path)
    lowered = {h.lower(): h for h in header}
    key = next((lowered[k] for k in (*FILE_KEYS, ID_KEY) if k in lowered), None)
    if key is None or "label" not in header:
        raise TableError(
            f"{path} needs a 'label' column and a key column ({', '.join(FILE_KEYS)} "
            f"holding a file name, or {ID_KEY!r}); its columns: {', '.join(map(repr, header))}"
        )
    by_id = key.lower() == ID_KEY
    position = {k: i for i, k in enumerate(ids if by_id else names)}
    # The folder's own columns (id, image_path) are not taken from the file.
    others = [h for h in header if h not in (key, "label", ID_KEY, "image_path")]
    out: dict[str, list[str | None]] = {c: [None] * len(names) for c in ["label", *others]}
    seen: dict[int, int] = {}
    for line, row in _rows(path):
        value = row.get(key, "").strip()
        row_index = position.get(value if by_id else value.replace("\\", "/").rsplit("/")[-1])
        if row_index is None:
            continue  # a label for a file that is not there
        if row_index in seen:
            raise TableError(
                f"{path} line {line}: {value!r} has a row already (line {seen[row_index]})"
            )
        seen[row_index] = line
        for column, values in out.items():
            values[row_index] = row.get(column) or None
    return out
