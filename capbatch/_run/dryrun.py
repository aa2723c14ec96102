"""``--dry-run``: read and check every row, count what a run would send, send nothing."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope
from capbatch._run.journal import Journal
from capbatch._run.plan import TaskKeys, plan_batch, table_fields
from capbatch._run.summary import RunSummary

if TYPE_CHECKING:
    from capbatch._run.options import ResolvedRun, RunOptions


def dry_run(
    table: TableSource,
    journal: Journal,
    resolved: ResolvedRun,
    options: RunOptions,
    scope: KeyScope,
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
    fields = table_fields(options.task_type, options.fields, options.task_params, table)
    keys = TaskKeys(options.task_type, fields.params, scope, options.cache, fields)
    for batch in table.batches():
        plan = plan_batch(
            batch,
            rows,
            table,
            profile,
            keys,
            occurrences=occurrences,
        )
        rows += batch.num_rows
        for error in plan.errors.values():
            input_errors[error.error_code] += 1
        planned = [key for key in plan.keys if key is not None]
        known = journal.get_many(planned)
        for key in planned:
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
