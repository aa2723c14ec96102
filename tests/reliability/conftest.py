"""The reliability suite uses the end-to-end fixtures (the emulator on loopback), and
after every test scans every file it wrote for the account key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import api, emulator  # noqa: F401 - re-exported fixtures
from tests.e2e.runner_helpers import KEY, assert_key_absent


@pytest.fixture(autouse=True)
def no_key_in_any_file_written(tmp_path: Path) -> Iterator[None]:
    yield
    assert_key_absent(KEY, roots=(tmp_path,))
