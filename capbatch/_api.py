"""The public run API: ``capbatch.run`` and ``capbatch.arun`` (the engine is
``capbatch._run.engine.execute``).

``run`` also works inside Jupyter's running event loop, by running a private loop in a
worker thread (no global ``nest_asyncio`` patching).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pandas as pd

from capbatch._run.engine import execute
from capbatch._run.options import RunOptions

__all__ = ["RunOptions", "arun", "run"]


async def arun(source: Any, **options: Any) -> pd.DataFrame:
    """Run ``source`` (path, DataFrame or pyarrow Table) and return the results table.

    The run's summary is in ``frame.attrs["capbatch"]``. See ``RunOptions`` for options.
    """
    outcome = await execute(source, RunOptions.from_kwargs(options), want_frame=True)
    if outcome.frame is None:  # a dry run
        empty: pd.DataFrame = pd.DataFrame({})
        empty.attrs["capbatch"] = outcome.summary.to_dict()
        return empty
    return outcome.frame


def run(source: Any, **options: Any) -> pd.DataFrame:
    """``arun`` for synchronous callers; also works inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(source, **options))
    # Inside Jupyter (or any running loop): run a private loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="capbatch-run") as pool:
        return pool.submit(asyncio.run, arun(source, **options)).result()
