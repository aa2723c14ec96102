"""capbatch on a Ray cluster: ``solve(dataset, **run_options)``.

Needs ``pip install "capbatch[ray]"``. Ray is imported when this module is, never by
``import capbatch``. See README, "Scale", for what runs where.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from capbatch._api import options_from

if TYPE_CHECKING:
    import ray.data

__all__ = ["solve"]


def solve(
    dataset: ray.data.Dataset,
    *,
    workers: int | None = None,
    batch_rows: int | None = None,
    **run_options: Any,
) -> ray.data.Dataset:
    """The rows of ``dataset`` with capbatch's result columns (answer, status, error,
    cost, latency, ...), solved by Ray workers as the returned dataset is consumed
    (streaming: nothing is held whole, nothing is sent before).

    ``dataset`` is any Ray dataset with an image column (paths the workers can read,
    base64, or bytes), e.g. ``ray.data.read_parquet("s3://bucket/captchas/")``.
    ``run_options`` are ``capbatch.run``'s: ``provider``, ``base_url``, ``api_key``,
    ``rate``, ``max_in_flight``, ``max_spend``, ``price``, ``task_type``, ``task_params``,
    ``fields``, ``cache``, ``journal``, ... The rate, in-flight cap and spend cap hold
    for the whole cluster (one budget actor); every paid step goes to one journal (an
    actor on this node writing SQLite at ``journal``, by default a file in the user
    cache named by the dataset's first rows), so consuming the dataset again, or after
    a crash, pays for nothing twice.

    ``workers``: how many solving actors [default: for the local solver, one per CPU of
    the cluster but one, left for the tasks that read the dataset (a local worker holds a
    whole CPU: with every CPU held, reading would never start); else 2].
    ``batch_rows``: rows per batch a worker is handed [64].
    Not supported here: ``output`` (write the dataset yourself), ``dry_run``,
    callbacks, ``report_wrong``, ``control``, ``service``, ``http_client``.
    """
    from capbatch._ray.api import solve_dataset

    options = options_from(run_options)
    result: ray.data.Dataset = solve_dataset(
        dataset, options, workers=workers, batch_rows=batch_rows
    )
    return result
