"""``capbatch run --engine ray --callback-url URL --callback-listen HOST:PORT``: one
receiver for the whole cluster.

A provider calls back one URL, so the run has one receiver, where the user said: a
``CallbackHub`` actor on the driver's node, holding the core's ``CallbackBox`` and
``CallbackReceiver``. Each worker's solver is the core's ``CallbackSolver`` over a
``HubBox``, the box's interface as calls to the hub: a worker opens a slot for each
createTask (the slot is made by the worker, the hub told at once), binds it to the task
id its reply names, and waits at the hub for the callback, polling as the fallback
exactly as in one process. A callback that never reaches its worker (a slot the hub
learned of late, a worker that died) costs only that fallback poll: the answer is never
lost, only heard later.
"""

from __future__ import annotations

import secrets
from typing import Any

from capbatch._providers.profiles import ProviderProfile
from capbatch._run.callbacks import CallbackBox, CallbackReceiver, Heard
from capbatch._run.limits import Clock
from capbatch._run.tally import Tally

#: The hub's counts the driver adds to the run's (the workers count what they used).
HUB_COUNTS = ("callbacks_received", "callbacks_refused", "callbacks_ignored")


class CallbackHub:
    """The cluster's callback receiver (an async actor on the driver's node)."""

    def __init__(
        self, base_url: str, listen: str, profile: ProviderProfile, key: Any = None
    ) -> None:
        self.tally = Tally()
        mask = key.secret().mask if key is not None else None
        self.box = CallbackBox(base_url, profile, tally=self.tally, clock=Clock(), mask=mask)
        self.receiver = CallbackReceiver(self.box, listen)

    async def start(self) -> tuple[str, str]:
        """Listen (a ``ConfigError`` if it cannot); the token and the slots' URL prefix."""
        await self.receiver.start()
        return self.box.token, self.box.url

    async def stop(self) -> dict[str, int]:
        """Stop listening; the hub's counts (early callbacks no task claimed: refused)."""
        await self.receiver.stop()
        self.tally.callbacks_refused += self.box.unclaimed()
        return {name: int(getattr(self.tally, name)) for name in HUB_COUNTS}

    def open(self, slot: str) -> None:
        self.box.open(slot)

    def bind(self, slot: str, task_id: str) -> None:
        self.box.bind(slot, task_id)

    def close(self, slot: str) -> None:
        self.box.close(slot)

    def finish(self, task_id: str) -> None:
        self.box.finish(task_id)

    async def wait(self, task_id: str, seconds: float) -> Heard | None:
        return await self.box.wait(task_id, seconds)


class HubBox(CallbackBox):
    """A worker's ``CallbackBox``: every call goes to the cluster's ``CallbackHub``.
    Calls that change the hub are sent in order and not awaited (Ray runs one caller's
    calls to an actor in the order they were made); ``wait`` is awaited."""

    def __init__(self, hub: Any, token: str, url: str) -> None:  # no super: the hub's box
        self.hub = hub
        self.token = token
        self.url = url

    def open(self, slot: str | None = None) -> tuple[str, str]:
        slot = slot or secrets.token_urlsafe(12)
        self.hub.open.remote(slot)
        return slot, f"{self.url}/{slot}"

    def bind(self, slot: str, task_id: str) -> None:
        self.hub.bind.remote(slot, task_id)

    def close(self, slot: str) -> None:
        self.hub.close.remote(slot)

    def finish(self, task_id: str) -> None:
        self.hub.finish.remote(task_id)

    async def wait(self, task_id: str, seconds: float) -> Heard | None:
        heard: Heard | None = await self.hub.wait.remote(task_id, seconds)
        return heard

    def unclaimed(self) -> int:
        return 0  # counted by the hub
