"""What every worker of a Ray run needs to know, settled once on the driver.

The driver resolves the options exactly as ``capbatch run`` does (``engine._prepare``:
provider, key, limits, price, task fields, content-key scope) and sends the result to
the workers as one plain value. The key must reach the workers, which send it; a
``Secret`` refuses to be pickled, so it travels as a ``ShippedKey``: pickled for Ray
alone (in the workers' constructor arguments, held by Ray in memory, never on disk
unless Ray spills it), printed as ``****`` everywhere, a ``Secret`` again in the worker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from capbatch._io.keys import KeyScope
from capbatch._io.task_fields import FieldPlan
from capbatch._providers.profiles import ProviderProfile
from capbatch._providers.secrets import Secret
from capbatch._run.limits import Limits
from capbatch._run.retry import RetryPolicy

#: The column a driver adds to carry each row's 0-based input position to the workers
#: (the core's row keys, so ``capbatch run`` and the Ray engine resume each other
#: exactly); dropped from what the workers return.
ROW_COLUMN = "__capbatch_row"
#: The column a CLI run's workers return: each row's result for the driver's writer.
WIRE_COLUMN = "__capbatch_result"


class ShippedKey:
    """The account key on its way to the workers: picklable, never printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "ShippedKey('****')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[ShippedKey], tuple[str]]:
        return (ShippedKey, (self._value,))

    def secret(self) -> Secret:
        return Secret(self._value)

    @classmethod
    def of(cls, key: Secret | None) -> ShippedKey | None:
        return None if key is None else cls(key.reveal())


@dataclass(frozen=True)
class WorkerSettings:
    profile: ProviderProfile
    key: ShippedKey | None = field(repr=False)
    base_url: str | None
    app_id: str | int | None
    limits: Limits
    price: float
    price_confirmed: bool
    task_type: str
    fields: FieldPlan
    scope: KeyScope
    cache: bool
    image_column: str
    id_column: str | None
    #: Where relative image paths resolve (the input file's folder on the driver).
    base_dir: str
    retry: RetryPolicy | None = None
    outage_timeout: float = 300.0
    drain_timeout: float = 30.0
    retry_failed: bool = False
    #: Return ``WIRE_COLUMN`` (the CLI's writer) instead of the result columns.
    wire: bool = False
    #: The run's start (wall clock): entries finished before it are an earlier run's.
    started_wall: float = field(default_factory=time.time)
    #: Threads of the local solver in one worker (one model each).
    local_threads: int = 1
    #: The object-store URI the input was read from: relative image paths resolve
    #: against its folder there (``TableSource.image_base``).
    origin: str | None = None
    #: ``--local-first``: the cascade's confidence threshold, else None.
    local_first: float | None = None
    #: ``--callback-url``/``--callback-listen``: the cluster's one receiver (the driver's
    #: ``CallbackHub``), else None.
    callback_url: str | None = None
    callback_listen: str | None = None

    @property
    def params(self) -> Mapping[str, Any]:
        return self.fields.params
