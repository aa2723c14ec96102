"""A recognition-service emulator (an HTTP server) for tests, demos and benchmarks.

It speaks CapSolver's task protocol (``/createTask``, ``/getTaskResult``,
``/getBalance``, ``/feedbackTask``), or with ``dialect`` Anti-Captcha's, CapMonster
Cloud's or 2Captcha's (``_dialects.py``: endpoints, ids, replies, codes, limits,
retention, reports, refunds, bans), on a loopback port, answers from a configurable
solver (``constant``, ``oracle`` labels, or the ``local`` ddddocr solver), keeps an
account balance, and injects faults (latency, 5xx, dropped connections, malformed
replies, ``ERROR_SERVICE_UNAVALIABLE``, unsolvable captchas, a rate limit) from one
seeded RNG so a run can be repeated. ``GET /_stats`` tells a test what a client did;
``POST /_control`` changes options while it runs: a JSON body with the api key as
``clientKey`` and the options to change (``{"clientKey": "test-key", "drop_rate": 0}``),
sent as ``Content-Type: application/json``; every value is checked and the change is
all or nothing (``clock_offset`` moves the emulator's clock ahead, never back). Callbacks
go only to loopback ports listed in ``callback_allow``.

```python
from capbatch.emulator import EmulatorConfig, running_emulator

with running_emulator(EmulatorConfig(deferred=0.5, solve_time=(0.2, 0.4))) as emu:
    ...  # point a client at emu.url with clientKey "test-key"
    assert emu.stats()["create_calls"] == 10
```

From a shell: ``capbatch serve --port 0`` (or ``python -m capbatch.emulator``).
"""

from capbatch.emulator._app import build_app
from capbatch.emulator._config import EmulatorConfig
from capbatch.emulator._server import EmulatorHandle, running_emulator, serve

__all__ = ["EmulatorConfig", "EmulatorHandle", "build_app", "running_emulator", "serve"]
