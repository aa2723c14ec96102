"""``--dry-run``: read and check every row, count what a run would send, send nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._exceptions import RowInputError
from ._inputs import TableSource, resolve_column, task_key
from ._journal import Journal
from ._summary import RunSummary

if TYPE_CHECKING:
    from ._api import ResolvedRun, RunOptions


def dry_run(
    table: TableSource,
    journal: Journal,
    resolved: ResolvedRun,
    options: RunOptions,
    cache_params: Mapping[str, Any],
) -> RunSummary:
    """Rows, unique images, cached answers, estimated cost and time; no request sent."""
    profile = resolved.profile
    summary = RunSummary(provider=profile.name, task_type=options.task_type)
    # 16-byte digests keep a million keys in well under 100 MB.
    unique: set[bytes] = set()
    input_errors: Counter[str] = Counter()
    cached = 0
    rows = 0
    for batch in table.batches():
        images = resolve_column(
            batch,
            table.image_column,
            base_dir=table.base_dir,
            min_bytes=profile.min_image_bytes,
            max_bytes=profile.max_image_bytes,
            first_row=rows,
        )
        keys: list[str] = []
        for i, image in enumerate(images):
            if isinstance(image, RowInputError):
                input_errors[image.error_code] += 1
                continue
            key = task_key(image, options.task_type, cache_params)
            if not options.cache:
                key = f"{key}:{rows + i}"
            keys.append(key)
        rows += batch.num_rows
        known = journal.get_many(keys)
        for key in keys:
            digest = bytes.fromhex(key[:32])
            if key in known and known[key].done:
                cached += 1
                continue
            if options.cache and digest in unique:
                continue
            unique.add(digest if options.cache else key.encode())
    to_send = len(unique)
    summary.rows = rows
    summary.failed_by_code = dict(input_errors)
    summary.failed = sum(input_errors.values())
    summary.from_cache = cached
    summary.creates = to_send
    summary.spend_usd = to_send * resolved.price
    summary.duration_s = to_send / resolved.limits.rate if to_send else 0.0
    summary.notices.append(
        f"dry run: {rows} rows, {to_send} unique images to send, {cached} answered already, "
        f"{summary.failed} unreadable; estimated cost ${summary.spend_usd:.4f} "
        f"at ${resolved.price:.6f} per task; estimated time {summary.duration_s:.1f} s "
        f"at {resolved.limits.rate:g} requests/s (more if tasks are deferred and polled)"
    )
    return summary
