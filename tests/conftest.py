"""Every test gets its own capbatch cache folder (journals of in-memory tables, lock
files): a journal left in the user's real cache by an earlier test session would answer
rows from it, and tests counting requests or spend would see none."""

from __future__ import annotations

from pathlib import Path

import pytest

from capbatch._run.workspace import CACHE_ENV


@pytest.fixture(autouse=True)
def private_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    # Not under tmp_path: tests that list or scan tmp_path must not find these files.
    # Set in os.environ, so CLI subprocesses started by the test inherit it too.
    folder = tmp_path_factory.mktemp("capbatch-cache")
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder
