"""One local Ray cluster for the whole test session (``pytest tests/ray``), started only
when a test here asks for it, so no other test pays Ray's start-up. Tests that cannot
get a cluster are skipped, saying why; nothing else skips them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import emulator  # noqa: F401  (the e2e emulator fixture)
from tests.e2e.s3 import S3Store, s3_store

#: Tries at starting the local cluster before the cluster tests are skipped.
STARTS = 3


@pytest.fixture(scope="session")
def cluster_store() -> Iterator[S3Store]:
    """An S3 server on loopback that the cluster's processes reach: its environment
    (``S3Store.env``) is set before the cluster starts, and so inherited by every
    worker, as a real cluster's nodes have their own credentials."""
    with s3_store() as store, pytest.MonkeyPatch.context() as patch:
        for name, value in store.env.items():
            patch.setenv(name, value)
        yield store


@pytest.fixture(scope="session")
def ray_cluster(cluster_store: S3Store) -> Iterator[Any]:
    """``ray``, initialised once: 2 CPUs, no dashboard. Its GCS address is
    ``ray.get_runtime_context().gcs_address``; its workers reach ``cluster_store``."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        pytest.skip(f"Ray is not installed (pip install 'capbatch[ray]'): {exc}")
    # Ray gives its raylet 30 s to register (a constant in ray._private.node); with the
    # other test workers busy on 2 cores that can run out, so the start is tried again.
    for attempt in range(1, STARTS + 1):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:  # pragma: no cover - depends on the machine's load
            ray.shutdown()
            if attempt == STARTS:
                pytest.skip(f"Ray cannot start a local cluster here ({STARTS} tries): {exc}")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
