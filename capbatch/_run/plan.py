"""Planning a batch: each row's task fields (or input error) and the content key that
says which paid task answers it. The run and the dry run (``dryrun``) share it; nothing
here sends a request or reads the journal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from capbatch._exceptions import RowInputError
from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope, task_key, whole_task_key
from capbatch._io.task_fields import FieldPlan, plan_fields
from capbatch._io.task_rows import ImageLimits, RowTask, read_row_fields
from capbatch._providers.profiles import ProviderProfile


@dataclass(frozen=True)
class BatchPlan:
    """What a batch needs: per row, a result already known or a job to run."""

    row_keys: list[str]
    keys: list[str | None]
    errors: dict[int, RowInputError]
    #: Each readable row's task fields (``task_rows.task_body`` makes its request).
    tasks: dict[int, RowTask]


@dataclass(frozen=True)
class TaskKeys:
    """What makes two rows the same paid task: the task type and parameters, who
    answers (``KeyScope``), and whether identical tasks share one (the cache); the
    task's fields from columns (``FieldPlan``: None = the type's defaults)."""

    task_type: str
    task_params: Mapping[str, Any]
    scope: KeyScope
    cache: bool = True
    fields: FieldPlan | None = None
    #: Columns found to hold base64 images so far (``task_rows.read_row_fields``).
    base64_seen: dict[str, bool] = field(default_factory=dict, compare=False)

    def field_plan(self, source: TableSource) -> FieldPlan:
        if self.fields is not None:
            return self.fields
        return table_fields(self.task_type, {}, self.task_params, source)


def table_fields(
    task_type: str, fields: Mapping[str, str], params: Mapping[str, Any], table: TableSource
) -> FieldPlan:
    """The run's ``FieldPlan`` for ``table`` (``task_fields.plan_fields``)."""
    return plan_fields(task_type, fields, params, table.schema.names, table.image_column)


def plan_batch(
    batch: pa.RecordBatch,
    first_row: int,
    source: TableSource,
    profile: ProviderProfile,
    keys: TaskKeys,
    *,
    occurrences: dict[str, int] | None = None,
) -> BatchPlan:
    """Each row's task (or input error) and content key; the run and the dry run share it.

    With the cache off, identical images on different rows are different tasks, so a
    row's key also names the row: by its id when the table has an id column, and by
    which occurrence of that image (with that id) it is: the 1st, the 2nd, ... Both
    survive rows being reordered or inserted, so a re-run never pays again for a row
    it answered.
    ``occurrences`` carries the counts from batch to batch."""
    fields = keys.field_plan(source)
    limits = ImageLimits(
        source.image_base, profile.min_image_bytes, profile.max_image_bytes, profile.max_image_side
    )
    rows = read_row_fields(batch, fields, limits, first_row, keys.base64_seen)
    # Row keys are positions: stable when rows are appended, and unique even when an id
    # column has duplicates. With the cache off they name the row as said above.
    row_keys = [str(first_row + i) for i in range(batch.num_rows)]
    ids = (
        batch.column(source.id_column).to_pylist()
        if not keys.cache and source.id_column is not None
        else None
    )
    seen = occurrences if occurrences is not None else {}
    content_keys: list[str | None] = []
    errors: dict[int, RowInputError] = {}
    resolved: dict[int, RowTask] = {}
    for i, row in enumerate(rows):
        if isinstance(row, RowInputError):
            errors[i] = row
            content_keys.append(None)
            continue
        key = _content_key(row, fields, keys)
        if not keys.cache:
            row_id = None if ids is None else ids[i]
            # The n-th row with this image (and this id): duplicated rows stay apart.
            seen_key = key if row_id is None else f"{key}|{row_id}"
            seen[seen_key] = n = seen.get(seen_key, 0) + 1
            row_keys[i] = f"n:{n}" if row_id is None else f"id:{row_id}:{n}"
            key = f"{key}:{row_keys[i]}"
        content_keys.append(key)
        resolved[i] = row
    return BatchPlan(row_keys, content_keys, errors, resolved)


def _content_key(row: RowTask, fields: FieldPlan, keys: TaskKeys) -> str:
    """One image in ``body`` keeps the key it always had (journals written before task
    fields stay valid); any other task is keyed on all of it."""
    image = row.images.get("body")
    if fields.body_only and isinstance(image, bytes):
        return task_key(image, keys.task_type, fields.params, keys.scope)
    return whole_task_key(row.images, row.values, keys.task_type, fields.params, keys.scope)
