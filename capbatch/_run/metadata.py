"""What a results file says about the run that wrote it: the version, the settings, the
summary, whether it is complete, and where relative image paths point.

``output_metadata`` gives it as ``capbatch.*`` text entries; the writer stores them and
their typed object (``capbatch._io.file_metadata``): in a Parquet file's key-value and
schema metadata (``pd.read_parquet(p).attrs["capbatch"]``), beside a CSV output in
``<output>.meta.json``. A missing value (no balance, an in-memory input) is left out of
the entries, so it is null in the object."""

from __future__ import annotations

import json
from pathlib import Path

from capbatch._io.inputs import TableSource
from capbatch._io.locations import is_uri
from capbatch._run.options import ResolvedRun, RunOptions
from capbatch._run.ownership import relative_input
from capbatch._run.summary import RunSummary
from capbatch._version import __version__


def output_metadata(
    summary: RunSummary, options: RunOptions, resolved: ResolvedRun, table: TableSource
) -> dict[str, str]:
    """The output file's metadata: the run's settings and summary, for the report."""
    settings = {
        "provider": resolved.profile.name,
        "base_url": options.base_url or resolved.profile.base_url or None,
        "task_type": options.task_type,
        "task_params": dict(options.task_params),
        "rate": resolved.limits.rate,
        "max_in_flight": resolved.limits.max_in_flight,
        "max_attempts": resolved.limits.max_attempts,
        "max_spend": resolved.limits.max_spend,
        "price": resolved.price,
        "cache": options.cache,
        "app_id": options.app_id,
        "local_first": options.local_first,
    }

    def text(value: float | None) -> str | None:
        return None if value is None else str(value)

    path, origin = table.path, table.origin
    entries = {
        "capbatch.version": __version__,
        "capbatch.provider": resolved.profile.name,
        "capbatch.task_type": options.task_type,
        "capbatch.started_at": summary.started_at,
        "capbatch.finished_at": summary.finished_at,
        "capbatch.spend_usd": f"{summary.spend_usd:.6f}",
        "capbatch.balance_before": text(summary.balance_before),
        "capbatch.balance_after": text(summary.balance_after),
        "capbatch.settings": json.dumps(settings, sort_keys=True, default=str),
        "capbatch.run": summary.to_json(),
        # "false": an interrupted run; rows with status "pending" are not finished yet.
        "capbatch.complete": "true" if summary.complete else "false",
        # Where relative image paths point: the report's gallery finds images with it.
        "capbatch.input": None if path is None else str(Path(path).resolve()),
        # From the results file's folder: a folder moved with its input still resumes.
        "capbatch.input_relative": (
            None
            if path is None or summary.output is None or origin or is_uri(summary.output)
            else relative_input(Path(path), Path(summary.output))
        ),
        # An object-store input (``remote_files``): ``capbatch.input`` is its local copy.
        "capbatch.input_uri": origin,
    }
    return {key: value for key, value in entries.items() if value is not None}
