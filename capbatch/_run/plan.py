"""Planning a batch: each row's image (or input error) and the content key that says
which paid task answers it. The run and the dry run (``dryrun``) share it; nothing
here sends a request or reads the journal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from capbatch._exceptions import RowInputError
from capbatch._io.image_column import resolve_column
from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope, task_key
from capbatch._providers.profiles import ProviderProfile


@dataclass(frozen=True)
class BatchPlan:
    """What a batch needs: per row, a result already known or a job to run."""

    row_keys: list[str]
    keys: list[str | None]
    errors: dict[int, RowInputError]
    images: dict[int, bytes]


@dataclass(frozen=True)
class TaskKeys:
    """What makes two rows the same paid task: the task type and parameters, who
    answers (``KeyScope``), and whether identical images share one task (the cache)."""

    task_type: str
    task_params: Mapping[str, Any]
    scope: KeyScope
    cache: bool = True


def plan_batch(
    batch: pa.RecordBatch,
    first_row: int,
    source: TableSource,
    profile: ProviderProfile,
    keys: TaskKeys,
    *,
    occurrences: dict[str, int] | None = None,
) -> BatchPlan:
    """Each row's image (or input error) and content key; the run and the dry run share it.

    With the cache off, identical images on different rows are different tasks, so a
    row's key also names the row: by its id when the table has an id column, and by
    which occurrence of that image (with that id) it is: the 1st, the 2nd, ... Both
    survive rows being reordered or inserted, so a re-run never pays again for a row
    it answered.
    ``occurrences`` carries the counts from batch to batch."""
    images = resolve_column(
        batch,
        source.image_column,
        base_dir=source.base_dir,
        min_bytes=profile.min_image_bytes,
        max_bytes=profile.max_image_bytes,
        max_side=profile.max_image_side,
        first_row=first_row,
    )
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
    resolved: dict[int, bytes] = {}
    for i, image in enumerate(images):
        if isinstance(image, RowInputError):
            errors[i] = image
            content_keys.append(None)
            continue
        key = task_key(image, keys.task_type, keys.task_params, keys.scope)
        if not keys.cache:
            row_id = None if ids is None else ids[i]
            # The n-th row with this image (and this id): duplicated rows stay apart.
            seen_key = key if row_id is None else f"{key}|{row_id}"
            seen[seen_key] = n = seen.get(seen_key, 0) + 1
            row_keys[i] = f"n:{n}" if row_id is None else f"id:{row_id}:{n}"
            key = f"{key}:{row_keys[i]}"
        content_keys.append(key)
        resolved[i] = image
    return BatchPlan(row_keys, content_keys, errors, resolved)
