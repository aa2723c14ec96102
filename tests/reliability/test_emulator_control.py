"""The emulator's test controls and callbacks cannot be turned against the machine.

Finding 16: ``/_control`` took any body from anyone, including a web page's
``text/plain`` POST; it could point ``labels`` at a FIFO (every endpoint froze) or at
``/dev/zero`` (memory filled), probe for files, or half-apply ``price=Infinity`` so
every later createTask failed; and callbacks could reach any loopback port.

Every request here goes to 127.0.0.1 with a short timeout, so a regression fails
instead of hanging; every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from click.testing import CliRunner
from PIL import Image

from capbatch._exceptions import ConfigError
from capbatch.emulator import EmulatorConfig
from capbatch.emulator._cli import serve as serve_command
from capbatch.emulator._solvers import MAX_LABELS_BYTES, LabelsFileError, load_labels

KEY = "control-key-4c1e"
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0
GENERIC_LABELS_ERROR = LabelsFileError.PUBLIC_MESSAGE

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev are POSIX")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (60, 20), (250, 250, 250)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        yield client


def control(http: httpx.Client, url: str, key: Any = KEY, **changes: Any) -> httpx.Response:
    """POST ``/_control``; ``key=None`` leaves ``clientKey`` out. Encoded here, not by
    httpx, because httpx refuses to send NaN and Infinity, which an attacker can."""
    body = {"clientKey": key, **changes} if key is not None else changes
    return http.post(
        f"{url}/_control",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


def create(http: httpx.Client, url: str, **extra: Any) -> httpx.Response:
    task = {"type": "ImageToTextTask", "body": base64.b64encode(PNG).decode()}
    return http.post(f"{url}/createTask", json={"clientKey": KEY, "task": task, **extra})


def public_config(http: httpx.Client, url: str) -> dict[str, Any]:
    """The options in force, read through an empty (but authorised) change."""
    reply = control(http, url)
    assert reply.status_code == 200, reply.text
    config: dict[str, Any] = reply.json()
    return config


def assert_still_serving(http: httpx.Client, url: str, before: dict[str, Any]) -> None:
    """Nothing changed, and the API and the counters still answer."""
    assert public_config(http, url) == before
    reply = create(http, url)
    assert reply.status_code == 200 and reply.json()["status"] == "ready"
    assert http.get(f"{url}/_stats").json()["create_accepted"] >= 1


# --- who may use /_control and /_reset_stats --------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong", "", 123])
def test_control_without_the_key_is_refused(emulator, http, key):
    emu = emulator(api_key=KEY)
    before = emu.config()
    reply = control(http, emu.url, key=key, api_key="attacker", http_5xx_rate=1.0)
    assert reply.status_code == 401
    assert "api_key" not in reply.text and KEY not in reply.text
    assert emu.config() == before
    assert create(http, emu.url).json()["status"] == "ready"


def test_reset_stats_needs_the_key(emulator, http):
    emu = emulator(api_key=KEY)
    create(http, emu.url)
    for body in ({}, {"clientKey": "wrong"}):
        assert http.post(f"{emu.url}/_reset_stats", json=body).status_code == 401
    assert emu.stats()["create_calls"] == 1
    assert http.post(f"{emu.url}/_reset_stats", json={"clientKey": KEY, "x": 1}).status_code == 400
    reset = http.post(f"{emu.url}/_reset_stats", json={"clientKey": KEY})
    assert reset.status_code == 200 and reset.json()["create_calls"] == 0


@pytest.mark.parametrize("path", ["/_control", "/_reset_stats"])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_controls_refuse_what_a_web_page_can_send_without_preflight(
    emulator, http, path, content_type
):
    # The right key even: the media type alone must refuse a CORS "simple request".
    emu = emulator(api_key=KEY)
    create(http, emu.url)
    before = emu.config()
    body = f'{{"clientKey": "{KEY}", "price": 5}}'.encode()
    headers = {"Content-Type": content_type} if content_type else {}
    reply = http.post(f"{emu.url}{path}", content=body, headers=headers)
    assert reply.status_code == 415
    assert emu.config() == before
    assert emu.stats()["create_calls"] == 1


@pytest.mark.parametrize("path", ["/_control", "/_reset_stats"])
def test_controls_refuse_browser_requests(emulator, http, path):
    # A page reached through DNS rebinding is "same origin" and may send JSON, but the
    # browser still adds Origin to a POST; the default key is public knowledge.
    emu = emulator()
    before = emu.config()
    body = {"clientKey": "test-key", "price": 5}
    reply = http.post(f"{emu.url}{path}", json=body, headers={"Origin": "http://evil.test"})
    assert reply.status_code == 403
    assert emu.config() == before


def test_changed_key_is_needed_from_then_on(emulator, http):
    emu = emulator(api_key=KEY)
    assert control(http, emu.url, api_key="next-key").status_code == 200
    assert control(http, emu.url, drop_rate=0.5).status_code == 401
    assert control(http, emu.url, key="next-key", drop_rate=0.5).status_code == 200


def test_stats_leak_no_key_path_or_answer(emulator, http, tmp_path):
    labels = tmp_path / "secret-labels.csv"
    labels.write_text("sha256,label\n" + "0" * 64 + ",secret-answer\n", encoding="utf-8")
    emu = emulator(api_key=KEY, solver="oracle", labels=str(labels), answer="hidden-const")
    create(http, emu.url)
    text = http.get(f"{emu.url}/_stats").text
    for secret in (KEY, "secret-labels", "secret-answer", "hidden-const", str(tmp_path)):
        assert secret not in text


# --- values: checked, and applied all or nothing ----------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"no_such_option": 1},
        {"price": float("nan")},
        {"price": float("inf")},
        {"price": -0.01},
        {"price": 1e300},
        {"balance": float("inf")},
        {"balance": 10**400},
        {"http_5xx_rate": float("nan")},
        {"drop_rate": 1.5},
        {"drop_rate": "0.1"},
        {"drop_rate": True},
        {"latency": [0, float("inf")]},
        {"latency": [0, 10_000]},
        {"latency": [0.2, 0.1]},
        {"latency": "0-1"},
        {"solve_time": [0, 1, 2]},
        {"task_ttl": float("inf")},
        {"rate_limit": float("inf")},
        {"rate_limit": 0},
        {"max_polls": 1.5},
        {"max_polls": True},
        {"seed": "7"},
        {"seed": 2**80},
        {"solver": ["oracle"]},
        {"solver": "nope"},
        {"labels": 5},
        {"answer": 5},
        {"answer": "x" * 5000},
        {"api_key": ""},
        {"api_key": None},
        {"deferred_reply_status": "sometimes"},
        {"drop_after_create": "yes"},
        {"callback_allow": ["1"]},
        {"port": 1},
    ],
    ids=lambda changes: "-".join(f"{k}={str(v)[:12]}" for k, v in changes.items()),
)
def test_bad_values_are_refused_and_nothing_changes(emulator, http, changes):
    emu = emulator(api_key=KEY)
    create(http, emu.url)
    before = public_config(http, emu.url)
    # A good change alongside the bad one must not be applied either.
    reply = control(http, emu.url, **{"http_5xx_rate": 1.0, "balance": 0.0, **changes})
    assert reply.status_code == 400
    assert reply.headers["content-type"].startswith("application/json")
    assert isinstance(reply.json()["error"], str) and reply.json()["error"]
    assert_still_serving(http, emu.url, before)


def test_infinite_price_no_longer_breaks_create_task(emulator, http):
    # Before: accepted, and every later createTask died with an OverflowError (HTTP 500).
    emu = emulator(api_key=KEY)
    reply = control(http, emu.url, price=float("inf"))
    assert reply.status_code == 400 and "price" in reply.json()["error"]
    for _ in range(3):
        assert create(http, emu.url).status_code == 200


def test_good_changes_apply_together(emulator, http):
    emu = emulator(api_key=KEY)
    reply = control(http, emu.url, price=0.002, latency=[0, 0.01], max_polls=5, seed=9)
    assert reply.status_code == 200
    config = reply.json()
    assert (config["price"], config["latency"], config["max_polls"], config["seed"]) == (
        0.002,
        [0, 0.01],
        5,
        9,
    )
    assert "api_key" not in config


def test_in_process_control_is_validated_the_same_way(emulator):
    emu = emulator()
    before = emu.config()
    with pytest.raises(ConfigError):
        emu.control(price=float("inf"), drop_rate=0.5)
    assert emu.config() == before


# --- the labels file ------------------------------------------------------------------


@posix_only
def test_labels_fifo_answers_at_once_and_the_server_keeps_serving(emulator, http, tmp_path):
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    emu = emulator(api_key=KEY)
    before = public_config(http, emu.url)
    started = time.monotonic()
    reply = control(http, emu.url, solver="oracle", labels=str(fifo))
    assert reply.status_code == 400
    assert reply.json()["error"] == GENERIC_LABELS_ERROR
    assert time.monotonic() - started < TIMEOUT
    assert_still_serving(http, emu.url, before)


@posix_only
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_labels_device_is_refused(emulator, http):
    emu = emulator(api_key=KEY)
    before = public_config(http, emu.url)
    reply = control(http, emu.url, solver="oracle", labels="/dev/zero")
    assert reply.status_code == 400
    assert reply.json()["error"] == GENERIC_LABELS_ERROR
    assert_still_serving(http, emu.url, before)


def test_labels_too_large_is_refused(emulator, http, tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:  # sparse: no 64 MB written to disk
        fh.write(b"sha256,label\n")
        fh.truncate(MAX_LABELS_BYTES + 1)
    try:
        emu = emulator(api_key=KEY)
        before = public_config(http, emu.url)
        reply = control(http, emu.url, solver="oracle", labels=str(big))
        assert reply.status_code == 400
        assert reply.json()["error"] == GENERIC_LABELS_ERROR
        assert_still_serving(http, emu.url, before)
        with pytest.raises(LabelsFileError, match="larger than 64 MB"):
            load_labels(big)
    finally:
        big.unlink()  # keep the suite's after-test file scan from reading it


def test_labels_errors_do_not_reveal_which_paths_exist(emulator, http, tmp_path):
    not_csv = tmp_path / "exists.txt"
    not_csv.write_text("no header here\n", encoding="utf-8")
    emu = emulator(api_key=KEY)
    replies = [
        control(http, emu.url, solver="oracle", labels=str(path))
        for path in (tmp_path / "missing.csv", tmp_path, not_csv, "/etc/passwd")
    ]
    assert [r.status_code for r in replies] == [400] * 4
    assert {r.text for r in replies} == {replies[0].text}
    assert str(tmp_path) not in replies[0].text


def test_good_labels_file_switches_the_solver(emulator, http, tmp_path):
    import hashlib

    labels = tmp_path / "labels.csv"
    labels.write_text(f"sha256,label\n{hashlib.sha256(PNG).hexdigest()},w4x2\n", encoding="utf-8")
    emu = emulator(api_key=KEY)
    assert control(http, emu.url, solver="oracle", labels=str(labels)).status_code == 200
    assert create(http, emu.url).json()["solution"] == {"text": "w4x2"}


@posix_only
def test_serve_command_refuses_a_fifo_or_device_without_blocking(tmp_path):
    # A subprocess with a timeout: in-process, a regression would block on open() for ever.
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/null"):
        command = [sys.executable, "-m", "capbatch.emulator", "--solver", "oracle"]
        result = subprocess.run(
            [*command, "--labels", path, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode != 0
        assert "not a regular file" in result.stderr
        assert "listening" not in result.stdout


# --- callbacks --------------------------------------------------------------------------


class Hook:
    """A loopback HTTP server counting the callbacks it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Hook:
        async def hook(request: web.Request) -> web.Response:
            await self.received.put(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def _create_with_callback(url: str, callback: str) -> dict[str, Any]:
    task = {"type": "ImageToTextTask", "body": base64.b64encode(PNG).decode()}
    body = {"clientKey": KEY, "task": task, "callbackUrl": callback}
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        reply: dict[str, Any] = (await client.post(f"{url}/createTask", json=body)).json()
        return reply


async def test_callback_to_a_port_not_allowed_is_not_sent(emulator):
    async with Hook() as allowed, Hook() as other:
        emu = emulator(api_key=KEY, callback_allow=(str(allowed.port),))
        reply = await _create_with_callback(emu.url, f"http://127.0.0.1:{other.port}/hook")
        # Refused as a non-loopback host always was: the task is made, no callback sent.
        assert reply["status"] == "ready"
        await asyncio.sleep(0.3)  # room for a (wrongly) sent callback to arrive
        assert other.received.empty()
        stats = emu.stats()
        assert stats["callbacks_refused"] == 1 and stats["callbacks_sent"] == 0


async def test_no_callback_without_an_allow_list(emulator):
    async with Hook() as hook:
        emu = emulator(api_key=KEY)
        await _create_with_callback(emu.url, f"http://127.0.0.1:{hook.port}/hook")
        await asyncio.sleep(0.3)
        assert hook.received.empty()
        assert emu.stats()["callbacks_refused"] == 1


@pytest.mark.parametrize("entry", ["{port}", "127.0.0.1:{port}"])
async def test_callback_to_an_allowed_port_is_delivered(emulator, entry):
    async with Hook() as hook:
        emu = emulator(api_key=KEY, callback_allow=(entry.format(port=hook.port),))
        reply = await _create_with_callback(emu.url, f"http://127.0.0.1:{hook.port}/hook")
        assert await asyncio.wait_for(hook.received.get(), timeout=TIMEOUT) == reply
        # The emulator counts the callback once the hook's reply is back: a moment later.
        for _ in range(100):
            if emu.stats()["callbacks_sent"] == 1:
                break
            await asyncio.sleep(0.02)
        assert emu.stats()["callbacks_sent"] == 1


async def test_host_entry_allows_that_host_only(emulator):
    async with Hook() as hook:
        emu = emulator(api_key=KEY, callback_allow=(f"localhost:{hook.port}",))
        await _create_with_callback(emu.url, f"http://127.0.0.2:{hook.port}/hook")
        assert emu.stats()["callbacks_refused"] == 1


def test_callback_allow_cannot_be_widened_at_run_time(emulator, http):
    emu = emulator(api_key=KEY)
    reply = control(http, emu.url, callback_allow=["22"])
    assert reply.status_code == 400 and "callback_allow" in reply.json()["error"]
    assert public_config(http, emu.url)["callback_allow"] == []


@pytest.mark.parametrize(
    "entry", ["10.0.0.1:80", "example.com:80", "0", "70000", "x", "127.0.0.1:"]
)
def test_callback_allow_entries_are_checked(entry):
    with pytest.raises(ConfigError, match="callback_allow"):
        EmulatorConfig(callback_allow=(entry,))


def test_serve_command_rejects_a_remote_callback_target():
    result = CliRunner().invoke(serve_command, ["--callback-allow", "192.168.1.5:80"])
    assert result.exit_code != 0
    assert "loopback" in result.output
