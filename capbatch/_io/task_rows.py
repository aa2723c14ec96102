"""Each row of a batch read into its task's fields (``RowTask``), or that row's error.

The image column alone, in ``body`` (``FieldPlan.body_only``), is read exactly as it
always was (``image_column.resolve_column``). Otherwise every image field is read with
the same per-image rules, its errors naming the field (``imageBackground: ...``,
``images[3]: ...``); a list column (Parquet list, or JSON list text in CSV) fills a
list field, and a single image in a list field becomes a one-image list.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from capbatch._exceptions import RowInputError
from capbatch._io.image_column import is_base64_column, resolve_column
from capbatch._io.images import INPUT_NULL, INPUT_UNSUPPORTED_VALUE, resolve_image
from capbatch._io.task_fields import IMAGE_FIELDS, LIST_FIELDS, FieldPlan


@dataclass(frozen=True)
class RowTask:
    """One row's task fields: images (bytes, or a tuple of them for a list field) in
    ``IMAGE_FIELDS`` order, and the other fields' JSON values."""

    images: Mapping[str, bytes | tuple[bytes, ...]]
    values: Mapping[str, Any]

    @property
    def all_images(self) -> list[bytes]:
        """Every image, in field order, list items in their order."""
        out: list[bytes] = []
        for image in self.images.values():
            out.extend(image if isinstance(image, tuple) else (image,))
        return out


@dataclass(frozen=True)
class ImageLimits:
    """The provider's limits on one image (``images.resolve_image``)."""

    base_dir: Path | str  # a folder URI for a table read from an object store
    min_bytes: int = 1
    max_bytes: int | None = None
    max_side: int | None = None


def read_row_fields(
    batch: pa.RecordBatch | pa.Table,
    plan: FieldPlan,
    limits: ImageLimits,
    first_row: int = 0,
    base64_seen: dict[str, bool] | None = None,
) -> list[RowTask | RowInputError]:
    """Every row's ``RowTask``, or its error with ``row`` set to the global row index.

    ``base64_seen`` remembers, from batch to batch, the columns found to hold base64
    images (``image_column.is_base64_column``): a last batch of a few bad values is
    still read as a base64 column (``INPUT_INVALID_BASE64``, not a missing file)."""
    seen = base64_seen if base64_seen is not None else {}
    if plan.body_only:
        images = resolve_column(
            batch,
            plan.image_column,
            base_dir=limits.base_dir,
            min_bytes=limits.min_bytes,
            max_bytes=limits.max_bytes,
            max_side=limits.max_side,
            first_row=first_row,
            base64_column=_base64(seen, plan.image_column, batch),
        )
        return [
            image if isinstance(image, RowInputError) else RowTask({"body": image}, {})
            for image in images
        ]
    columns = {name: batch.column(column).to_pylist() for name, column in plan.columns.items()}
    base64_columns = {
        name: _base64(seen, plan.columns[name], batch, _flat(values))
        for name, values in columns.items()
        if _is_image_field(name)
    }
    out: list[RowTask | RowInputError] = []
    for i in range(batch.num_rows):
        try:
            out.append(_row(plan, {n: v[i] for n, v in columns.items()}, base64_columns, limits))
        except RowInputError as exc:
            exc.row = first_row + i
            out.append(exc)
    return out


def _base64(
    seen: dict[str, bool],
    column: str,
    batch: pa.RecordBatch | pa.Table,
    values: list[object] | None = None,
) -> bool:
    """Whether ``column`` is a base64 column: once seen so in a batch, for the run."""
    if seen.get(column):
        return True
    if values is None:  # the head is enough (``is_base64_column`` reads 20 values)
        values = batch.column(column).drop_null().slice(0, 64).to_pylist()
    found = seen[column] = is_base64_column(column, values)
    return found


def _is_image_field(name: str) -> bool:
    return name in IMAGE_FIELDS


def _flat(values: Sequence[Any]) -> list[object]:
    flat: list[object] = []
    for value in values:
        flat.extend(value if isinstance(value, list) else (value,))
    return flat


def _row(
    plan: FieldPlan,
    cells: Mapping[str, Any],
    base64_columns: Mapping[str, bool],
    limits: ImageLimits,
) -> RowTask:
    images: dict[str, bytes | tuple[bytes, ...]] = {}
    values: dict[str, Any] = {}
    for name, cell in cells.items():
        column = plan.columns[name]
        if _is_null(cell):
            if name in plan.required:
                raise RowInputError(
                    f"column {column!r} (task field {name}) is null", error_code=INPUT_NULL
                )
            continue
        if name in base64_columns:
            images[name] = _images(name, cell, base64_columns[name], limits)
        else:
            values[name] = _json_value(name, column, cell)
    return RowTask(images, values)


def _images(
    name: str, cell: Any, base64_column: bool, limits: ImageLimits
) -> bytes | tuple[bytes, ...]:
    items = _as_list(cell)
    if name not in LIST_FIELDS:
        if items is None:
            return _image(name, cell, base64_column, limits)
        if len(items) != 1:
            raise RowInputError(
                f"{name}: takes one image, the cell holds a list of {len(items)}",
                error_code=INPUT_UNSUPPORTED_VALUE,
            )
        return _image(name, items[0], base64_column, limits)
    if items is None:
        items = [cell]
    if not items:
        raise RowInputError(f"{name}: the list of images is empty", error_code=INPUT_NULL)
    return tuple(
        _image(f"{name}[{k}]", item, base64_column, limits) for k, item in enumerate(items)
    )


def _as_list(cell: Any) -> list[Any] | None:
    """A list cell (Parquet list, or a JSON list in text), else None."""
    if isinstance(cell, (list, tuple)):
        return list(cell)
    if isinstance(cell, str) and cell.lstrip()[:1] == "[":
        try:
            parsed = json.loads(cell)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def _image(where: str, value: Any, base64_column: bool, limits: ImageLimits) -> bytes:
    try:
        return resolve_image(
            value,
            base_dir=limits.base_dir,
            min_bytes=limits.min_bytes,
            max_bytes=limits.max_bytes,
            base64_column=base64_column,
            max_side=limits.max_side,
        )
    except RowInputError as exc:
        raise RowInputError(f"{where}: {exc.message}", error_code=exc.error_code) from None


def _json_value(name: str, column: str, cell: Any) -> Any:
    """A non-image field's value as JSON; bytes and other non-JSON values are the row's
    error (the provider could not read them either)."""
    try:
        json.dumps(cell, allow_nan=False)
    except (TypeError, ValueError):
        raise RowInputError(
            f"column {column!r} (task field {name}) holds a {type(cell).__name__}, "
            "not a JSON value",
            error_code=INPUT_UNSUPPORTED_VALUE,
        ) from None
    return cell


def _is_null(value: object) -> bool:
    nan = isinstance(value, float) and math.isnan(value)
    return value is None or nan or type(value).__name__ in {"NAType", "NaTType"}


def task_body(task_type: str, params: Mapping[str, Any], row: RowTask) -> dict[str, Any]:
    """The createTask ``task`` object for one row: its type, the constants, the row's
    fields, and its images as base64."""
    task: dict[str, Any] = {"type": task_type, **params, **row.values}
    for name, image in row.images.items():
        if isinstance(image, tuple):
            task[name] = [base64.b64encode(item).decode("ascii") for item in image]
        else:
            task[name] = base64.b64encode(image).decode("ascii")
    return task
