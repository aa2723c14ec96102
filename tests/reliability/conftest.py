"""The reliability suite uses the end-to-end fixtures (the emulator on loopback)."""

from tests.e2e.conftest import emulator  # noqa: F401 - re-exported fixture
