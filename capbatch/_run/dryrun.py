"""``--dry-run``: read and check every row, count what a run would send, send nothing."""

from __future__ import annotations

import functools
from collections import Counter
from typing import TYPE_CHECKING

from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope
from capbatch._io.task_rows import task_body
from capbatch._run.cascade import GateSample
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
    sample = GateSample(options.local_first) if options.local_first is not None else None
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
        known = journal.get_many(key for key in plan.keys if key is not None)
        for i, key in enumerate(plan.keys):
            if key is None:
                continue
            if key in known and known[key].done:
                cached += 1
                continue
            digest = bytes.fromhex(key[:32]) if options.cache else key.encode()
            if sample is not None and digest not in unique:
                make = functools.partial(task_body, options.task_type, fields.params, plan.tasks[i])
                sample.offer(key, make)
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
    if sample is not None:
        _estimate_gate(summary, sample, journal, resolved.price)
    return summary


def _estimate_gate(summary: RunSummary, sample: GateSample, journal: Journal, price: float) -> None:
    """The cascade's share of the rows to send that the gate is expected to keep, from
    the local solver's reading of a sample of them."""
    passed, sampled = sample.passing(journal)
    share = passed / sampled if sampled else 0.0
    to_provider = round(summary.creates * (1.0 - share))
    summary.cascade = {"threshold": sample.threshold, "sampled": sampled, "passed": passed}
    summary.notices.append(
        f"cascade at confidence {sample.threshold:g}: {passed} of a sample of {sampled} "
        f"rows pass the gate, so about {to_provider} of the {summary.creates} go on to "
        f"the provider; estimated cost ${to_provider * price:.4f}"
    )
