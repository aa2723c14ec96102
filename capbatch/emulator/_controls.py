"""The test controls over HTTP: ``GET /_stats``, ``POST /_control``, ``POST /_reset_stats``.

They are the same in every dialect, are not rate limited, banned or counted, and change
the server only through ``Emulator.reconfigure`` and ``EmulatorState.reset_counters``
(why they need the key and JSON, and refuse browsers: ``_app``'s module docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from capbatch._exceptions import ConfigError
from capbatch.emulator._replies import json_reply
from capbatch.emulator._requests import control_options
from capbatch.emulator._solvers import LabelsFileError

if TYPE_CHECKING:
    from capbatch.emulator._app import Emulator


def add_controls(app: web.Application, emulator: Emulator) -> None:
    """Route the three test controls of ``emulator`` on ``app``."""

    async def stats(request: web.Request) -> web.StreamResponse:
        return json_reply(emulator.state.snapshot())

    async def reset_stats(request: web.Request) -> web.StreamResponse:
        body = await control_options(request, emulator.state.config.api_key)
        if isinstance(body, web.Response):
            return body
        if body:
            return json_reply({"error": "/_reset_stats takes no options"}, 400)
        emulator.state.reset_counters()
        return json_reply(emulator.state.snapshot())

    async def control(request: web.Request) -> web.StreamResponse:
        changes = await control_options(request, emulator.state.config.api_key)
        if isinstance(changes, web.Response):
            return changes
        try:
            emulator.reconfigure(changes)
        except LabelsFileError:
            # The same words for a missing, unreadable, special or bad file: the reply
            # must not tell a client which paths exist on this machine.
            return json_reply({"error": LabelsFileError.PUBLIC_MESSAGE}, 400)
        except ConfigError as exc:
            return json_reply({"error": str(exc)}, 400)
        return json_reply(emulator.public_config())

    app.router.add_get("/_stats", stats)
    app.router.add_post("/_control", control)
    app.router.add_post("/_reset_stats", reset_stats)
