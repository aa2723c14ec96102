"""``--dry-run``: read and check every row, count what a run would send, send nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._inputs import TableSource
from ._journal import Journal
from ._runner import plan_batch
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
    occurrences: dict[str, int] = {}
    for batch in table.batches():
        plan = plan_batch(
            batch,
            rows,
            table,
            profile,
            task_type=options.task_type,
            task_params=cache_params,
            cache=options.cache,
            occurrences=occurrences,
        )
        rows += batch.num_rows
        for error in plan.errors.values():
            input_errors[error.error_code] += 1
        keys = [key for key in plan.keys if key is not None]
        known = journal.get_many(keys)
        for key in keys:
            if key in known and known[key].done:
                cached += 1
                continue
            digest = bytes.fromhex(key[:32]) if options.cache else key.encode()
            unique.add(digest)
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
