"""CapMonster Cloud's official Python SDK as the judge of the emulator's CapMonster dialect.

``capmonstercloudclient`` 4.3.1 takes ``service_url`` in ``ClientOptions`` (read from its
``clientOptions.py``), so it can be pointed at the emulator. Its package pins exact old
versions of aiohttp, pydantic and typing-extensions (which would break capbatch's own
aiohttp and httpx's anyio), so the README's test command installs it with ``--no-deps``
next to the newer ones; it runs on them unchanged. The SDK sends its own ``softId`` (55),
which the emulator records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from capmonstercloudclient import CapMonsterClient, ClientOptions
from capmonstercloudclient.exceptions import GetResultError, GetTaskError
from capmonstercloudclient.requests import ImageToTextRequest

from capbatch.emulator import EmulatorHandle

pytestmark = pytest.mark.e2e

KEY = "test-key"


def capmonster(emulator: Callable[..., EmulatorHandle], **options: object) -> EmulatorHandle:
    return emulator(dialect="capmonster", solve_time=(0.05, 0.1), **options)


def client(handle: EmulatorHandle, key: str = KEY) -> CapMonsterClient:
    return CapMonsterClient(options=ClientOptions(api_key=key, service_url=handle.url))


async def solve(handle: EmulatorHandle, image: bytes, key: str = KEY) -> dict[str, str]:
    request = ImageToTextRequest(image_bytes=image)
    result = await asyncio.wait_for(client(handle, key).solve_captcha(request), timeout=20)
    return dict(result)


async def test_the_sdk_solves_through_the_dialect(emulator, labelled_images, labels_csv):
    emu = capmonster(emulator, solver="oracle", labels=str(labels_csv))
    for image, label in labelled_images[:3]:
        assert await solve(emu, image) == {"text": label}
    stats = emu.stats()
    assert stats["solved"] == 3 and stats["polls"] >= 3  # never answered in createTask
    assert stats["developer_ids"] == {"55": 3}  # the SDK's softId


async def test_the_sdk_reads_the_balance(emulator):
    emu = capmonster(emulator, balance=3.5)
    reply = await asyncio.wait_for(client(emu).get_balance(), timeout=10)
    assert reply["balance"] == 3.5 and reply["errorId"] == 0


async def test_the_sdk_sees_the_dialects_errors(emulator, png):
    emu = capmonster(emulator)
    with pytest.raises(GetTaskError, match="ERROR_KEY_DOES_NOT_EXIST"):
        await solve(emu, png, key="wrong")
    emu.control(unsolvable_rate=1.0)
    with pytest.raises(GetResultError, match="ERROR_CAPTCHA_UNSOLVABLE"):
        await solve(emu, png)
    stats = emu.stats()
    assert stats["charged_total"] == 0  # CapMonster does not charge unsolvable tasks
    assert stats["errors_by_code"] == {"ERROR_KEY_DOES_NOT_EXIST": 1, "ERROR_CAPTCHA_UNSOLVABLE": 1}
