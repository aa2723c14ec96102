"""Fixtures for end-to-end tests against the real emulator on a loopback port.

``emulator(**options)`` starts an emulator (torn down after the test); ``api(handle)``
gives a small synchronous client for its endpoints. Images come from ``sample_data/``
when it is there, otherwise they are drawn here, deterministically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image, ImageDraw

from capbatch.emulator import EmulatorConfig, EmulatorHandle, running_emulator

KEY = "test-key"
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"


def _make_png(text: str, size: tuple[int, int] = (120, 40)) -> bytes:
    """A small deterministic PNG with ``text`` drawn on it."""
    image = Image.new("RGB", size, (245, 245, 240))
    draw = ImageDraw.Draw(image)
    draw.text((10, 12), text, fill=(20, 20, 60))
    draw.line((0, size[1] - 8, size[0], 6), fill=(120, 120, 120))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sample_images(count: int) -> list[tuple[bytes, str]]:
    table = SAMPLE / "captchas.csv"
    if not table.is_file():
        return []
    out: list[tuple[bytes, str]] = []
    with open(table, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            path = SAMPLE / row["image_path"]
            if not path.is_file():
                return []
            out.append((path.read_bytes(), row["label"]))
            if len(out) == count:
                return out
    return []


@pytest.fixture(scope="session")
def labelled_images() -> list[tuple[bytes, str]]:
    """Six (PNG bytes, label) pairs: the first sample images, or generated ones."""
    images = _sample_images(6)
    if images:
        return images
    labels = ["ab3xy", "k7m2p", "qq49z", "h8wer", "tt5nu", "c3d4e"]
    return [(_make_png(label), label) for label in labels]


@pytest.fixture(scope="session")
def make_png() -> Callable[..., bytes]:
    """``make_png(text, size=(120, 40))``: a small deterministic PNG showing ``text``."""
    return _make_png


@pytest.fixture
def png(labelled_images: list[tuple[bytes, str]]) -> bytes:
    return labelled_images[0][0]


@pytest.fixture
def labels_csv(tmp_path: Path, labelled_images: list[tuple[bytes, str]]) -> Path:
    """A ``sha256,label`` file for the oracle solver, covering ``labelled_images``."""
    import hashlib

    path = tmp_path / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sha256", "label"])
        for data, label in labelled_images:
            writer.writerow([hashlib.sha256(data).hexdigest(), label])
    return path


@pytest.fixture
def emulator() -> Iterator[Callable[..., EmulatorHandle]]:
    """Start emulators with option overrides; all are stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> EmulatorHandle:
            options.setdefault("host", "127.0.0.1")
            return stack.enter_context(running_emulator(EmulatorConfig(**options)))

        yield start


class Api:
    """The emulator's endpoints over one httpx client (timeouts keep tests bounded)."""

    def __init__(self, url: str, key: str = KEY) -> None:
        self.url = url
        self.key = key
        self.http = httpx.Client(base_url=url, timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def create(self, image: bytes, **extra: Any) -> httpx.Response:
        task = {"type": "ImageToTextTask", "body": _b64(image)}
        return self.http.post("/createTask", json={"clientKey": self.key, "task": task, **extra})

    def result(self, task_id: str) -> httpx.Response:
        return self.http.post("/getTaskResult", json={"clientKey": self.key, "taskId": task_id})

    def balance(self) -> httpx.Response:
        return self.http.post("/getBalance", json={"clientKey": self.key})

    def feedback(self, task_id: str, invalid: bool = True) -> httpx.Response:
        body = {"clientKey": self.key, "taskId": task_id, "result": {"invalid": invalid}}
        return self.http.post("/feedbackTask", json=body)

    def control(self, **changes: Any) -> httpx.Response:
        """POST ``/_control`` as the emulator requires: JSON, with this client's key."""
        return self.http.post("/_control", json={"clientKey": self.key, **changes})

    def stats(self) -> dict[str, Any]:
        reply = self.http.get("/_stats")
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data


@pytest.fixture
def api() -> Iterator[Callable[..., Api]]:
    """``api(handle)``: an ``Api`` for a running emulator, closed after the test."""
    clients: list[Api] = []

    def connect(handle: EmulatorHandle, key: str = KEY) -> Api:
        client = Api(handle.url, key)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@dataclass
class CallbackHook:
    """A loopback receiver for the emulator's callback POSTs: each JSON body lands in
    ``received``; ``url`` is where to send them, ``allow`` the emulator's allow-list."""

    port: int
    received: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def allow(self) -> tuple[str]:
        return (f"127.0.0.1:{self.port}",)

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), timeout=timeout)


@pytest.fixture
async def callback_hook() -> AsyncIterator[CallbackHook]:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield CallbackHook(runner.addresses[0][1], received)
    finally:
        await runner.cleanup()
