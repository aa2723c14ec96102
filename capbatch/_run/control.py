"""Pause, resume and stop a run from outside it (the notebook panel's buttons).

The run lives on its own event loop, often in another thread, so the switches are
plain thread-safe flags that the scheduler checks before every request: pausing
holds back new requests (those already sent finish), stopping ends the run as a
run-fatal error would, with the journal intact and resumable.
"""

from __future__ import annotations

import asyncio
import threading

from capbatch._exceptions import CapbatchError


class RunStoppedByUser(CapbatchError):
    """The run was stopped on request; re-running resumes it."""

    error_code = "STOPPED"


class RunControl:
    #: How often a paused run looks at its switches again.
    POLL_SECONDS = 0.05

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stopped = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopped.set()
        self._running.set()  # wake anyone paused so they can see the stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    async def checkpoint(self) -> None:
        """Wait while paused; raise ``RunStoppedByUser`` once stopped."""
        while not self._running.is_set():
            await asyncio.sleep(self.POLL_SECONDS)
        if self._stopped.is_set():
            raise RunStoppedByUser("the run was stopped; run it again to resume")
