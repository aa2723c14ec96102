"""The emulator over real HTTP on 127.0.0.1: protocol replies, money, limits, faults,
callbacks, repeatability and the ``serve`` command.

Every request loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from click.testing import CliRunner

from capbatch._exceptions import ConfigError
from capbatch.emulator import EmulatorConfig, build_app, running_emulator
from capbatch.emulator._cli import serve as serve_command

pytestmark = pytest.mark.e2e

KEY = "test-key"
PRICE = 0.0004
REPO = Path(__file__).resolve().parents[2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def poll(api: Any, task_id: str, *, limit: int = 60, interval: float = 0.03) -> list[dict]:
    """Poll until the task is no longer pending; every reply, in order (bounded)."""
    replies = []
    deadline = time.monotonic() + 5.0
    for _ in range(limit):
        reply = api.result(task_id).json()
        replies.append(reply)
        if reply.get("status") not in ("idle", "processing") or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return replies


# --- the protocol ---------------------------------------------------------------------


def test_sync_answer(emulator, api, png):
    emu = emulator()
    client = api(emu)
    reply = client.create(png)
    assert reply.status_code == 200
    body = reply.json()
    assert body["errorId"] == 0 and body["errorCode"] == "" and body["errorDescription"] == ""
    assert body["status"] == "ready"
    assert body["solution"] == {"text": "capbatch"}
    assert uuid.UUID(body["taskId"]).version == 4
    # A ready task can be fetched again with the same answer.
    again = client.result(body["taskId"])
    assert again.status_code == 200
    assert again.json()["solution"] == {"text": "capbatch"}
    assert again.json()["status"] == "ready"

    stats = client.stats()
    assert stats["create_calls"] == 1
    assert stats["create_accepted"] == 1
    assert stats["creates_by_hash"] == {hashlib.sha256(png).hexdigest(): 1}
    assert stats["solved"] == 1
    assert stats["charged_total"] == pytest.approx(PRICE)
    assert stats["balance"] == pytest.approx(100.0 - PRICE)
    assert stats["polls"] == 1


def test_deferred_goes_idle_processing_ready(emulator, api, png):
    # idle for the first 0.12 s, then processing until 0.6 s: wide enough for a busy CI.
    emu = emulator(deferred=1.0, solve_time=(0.6, 0.6), deferred_reply_status="idle")
    client = api(emu)
    body = client.create(png).json()
    assert body["errorId"] == 0
    assert body["status"] == "idle"
    assert "solution" not in body
    task_id = body["taskId"]
    assert client.stats()["reserved"] == pytest.approx(PRICE)
    assert client.stats()["charged_total"] == 0

    replies = poll(client, task_id, interval=0.02)
    statuses = [r["status"] for r in replies]
    # Monotone: some idle, then processing, then ready exactly once at the end.
    assert statuses[0] == "idle"
    assert "processing" in statuses
    assert statuses[-1] == "ready"
    order = {"idle": 0, "processing": 1, "ready": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    assert replies[-1]["solution"] == {"text": "capbatch"}
    assert replies[-1]["taskId"] == task_id

    stats = client.stats()
    assert stats["charged_total"] == pytest.approx(PRICE)
    assert stats["reserved"] == 0
    assert stats["deferred_created"] == 1
    assert stats["max_polls_per_task"] == len(replies)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("idle", {"idle"}), ("none", {None}), ("mixed", {"idle", None})],
)
def test_deferred_reply_status_modes(emulator, api, png, mode, expected):
    emu = emulator(deferred=1.0, deferred_reply_status=mode, solve_time=(5.0, 5.0))
    client = api(emu)
    seen = {client.create(png).json().get("status") for _ in range(16)}
    assert seen == expected


def test_bad_key_is_401(emulator, api, png):
    emu = emulator(api_key="right-key")
    for key in ("wrong", ""):
        client = api(emu, key=key)
        for reply in (client.create(png), client.result("x"), client.balance()):
            assert reply.status_code == 401
            assert reply.json()["errorCode"] == "ERROR_KEY_DENIED_ACCESS"
            assert reply.json()["errorId"] == 1
    missing = httpx.post(f"{emu.url}/getBalance", json={})
    assert missing.status_code == 401
    assert "right-key" not in json.dumps(api(emu).stats())


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        json.dumps({"clientKey": KEY}).encode(),
        json.dumps({"clientKey": KEY, "task": {"type": "ImageToTextTask"}}).encode(),
        json.dumps({"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": ""}}).encode(),
        json.dumps({"clientKey": KEY, "task": {"body": "aGk="}}).encode(),
    ],
    ids=["empty", "not-json", "not-object", "no-task", "no-body", "empty-body", "no-type"],
)
def test_missing_or_bad_body(emulator, content):
    emu = emulator()
    reply = httpx.post(f"{emu.url}/createTask", content=content)
    assert reply.status_code == 400
    assert reply.json()["errorCode"] == "ERROR_INVALID_TASK_DATA"


@pytest.mark.parametrize(
    "body",
    [b64(b"hello, I am not an image"), "!!!not-base64!!!", b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)],
    ids=["text", "not-base64", "png-magic-only"],
)
def test_not_an_image(emulator, body):
    emu = emulator()
    task = {"type": "ImageToTextTask", "body": body}
    reply = httpx.post(f"{emu.url}/createTask", json={"clientKey": KEY, "task": task})
    assert reply.status_code == 400
    assert reply.json()["errorCode"] == "ERROR_INVALID_IMAGE"
    stats = httpx.get(f"{emu.url}/_stats").json()
    assert stats["create_accepted"] == 0 and stats["charged_total"] == 0


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_png(emulator, api, png, keep):
    emu = emulator()
    reply = api(emu).create(png[: int(len(png) * keep)])
    assert reply.status_code == 400
    assert reply.json()["errorCode"] == "ERROR_INVALID_IMAGE"


def test_unsupported_task_type(emulator):
    emu = emulator()
    task = {"type": "ReCaptchaV2TaskProxyLess", "websiteURL": "https://example.com"}
    reply = httpx.post(f"{emu.url}/createTask", json={"clientKey": KEY, "task": task})
    assert reply.status_code == 400
    assert reply.json()["errorCode"] == "ERROR_TASK_NOT_SUPPORTED"


def test_unknown_task_id(emulator, api):
    client = api(emulator())
    for task_id in (str(uuid.uuid4()), "not-a-task"):
        reply = client.result(task_id)
        assert reply.status_code == 400
        assert reply.json()["errorCode"] == "ERROR_TASKID_INVALID"
    no_id = client.http.post("/getTaskResult", json={"clientKey": KEY})
    assert no_id.json()["errorCode"] == "ERROR_TASKID_INVALID"
    assert client.feedback(str(uuid.uuid4())).json()["errorCode"] == "ERROR_TASKID_INVALID"


def test_poll_limit(emulator, api, png):
    client = api(emulator(max_polls=3))
    task_id = client.create(png).json()["taskId"]
    for _ in range(3):
        assert client.result(task_id).json()["status"] == "ready"
    over = client.result(task_id)
    assert over.status_code == 400
    assert over.json()["errorCode"] == "ERROR_TASKID_INVALID"
    # The result is lost for good.
    assert client.result(task_id).json()["errorCode"] == "ERROR_TASKID_INVALID"
    assert client.stats()["max_polls_per_task"] == 4


def test_expiry(emulator, api, png):
    client = api(emulator(task_ttl=0.5))
    task_id = client.create(png).json()["taskId"]
    assert client.result(task_id).json()["status"] == "ready"
    time.sleep(0.6)
    assert client.result(task_id).json()["errorCode"] == "ERROR_TASKID_INVALID"
    assert client.feedback(task_id).json()["errorCode"] == "ERROR_TASKID_INVALID"


def test_balance_and_feedback(emulator, api, png):
    client = api(emulator(balance=2.5))
    reply = client.balance().json()
    assert reply == {
        "errorId": 0,
        "errorCode": "",
        "errorDescription": "",
        "balance": 2.5,
        "packages": [],
    }
    task_id = client.create(png).json()["taskId"]
    assert client.balance().json()["balance"] == pytest.approx(2.5 - PRICE)
    fb = client.feedback(task_id)
    assert fb.status_code == 200
    assert fb.json() == {"errorId": 0, "errorCode": "", "errorDescription": "", "message": "ok"}
    client.feedback(task_id, invalid=False)
    stats = client.stats()
    assert stats["feedbacks"] == 2
    assert stats["feedbacks_invalid"] == 1
    assert stats["balance_calls"] == 2


# --- money ------------------------------------------------------------------------------


def test_zero_balance_then_top_up(emulator, api, png):
    client = api(emulator(balance=0.001, price=PRICE))
    assert client.create(png).status_code == 200
    assert client.create(png).status_code == 200
    refused = client.create(png)
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "ERROR_ZERO_BALANCE"
    stats = client.stats()
    assert stats["create_accepted"] == 2
    assert stats["charged_total"] == pytest.approx(2 * PRICE)
    assert stats["balance"] == pytest.approx(0.001 - 2 * PRICE)

    config = client.control(balance=1.0).json()
    assert config["balance"] == 1.0
    assert "api_key" not in config
    assert client.create(png).json()["status"] == "ready"
    assert client.balance().json()["balance"] == pytest.approx(1.0 - PRICE)


def test_deferred_tasks_cannot_overdraw(emulator, api, png):
    client = api(emulator(balance=PRICE, deferred=1.0, solve_time=(0.1, 0.1)))
    task_id = client.create(png).json()["taskId"]
    # The first task's price is held: a second one must be refused, not overdraw.
    assert client.create(png).json()["errorCode"] == "ERROR_ZERO_BALANCE"
    assert poll(client, task_id)[-1]["status"] == "ready"
    stats = client.stats()
    assert stats["balance"] == 0
    assert stats["charged_total"] == pytest.approx(PRICE)


def test_unsolvable_is_not_charged(emulator, api, png):
    emu = emulator(unsolvable_rate=1.0)
    client = api(emu)
    sync = client.create(png)
    assert sync.status_code == 400
    assert sync.json()["errorId"] == 1
    assert sync.json()["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"

    emu.control(deferred=1.0, solve_time=(0.05, 0.05))
    task_id = client.create(png).json()["taskId"]
    last = poll(client, task_id)[-1]
    assert last["errorId"] == 1
    assert last["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert last["status"] == "failed"

    stats = emu.stats()
    assert stats["unsolvable"] == 2
    assert stats["solved"] == 0
    assert stats["charged_total"] == 0
    assert stats["reserved"] == 0
    assert stats["balance"] == 100.0


# --- rate limit and faults ------------------------------------------------------------


def test_rate_limit(emulator, api):
    client = api(emulator(rate_limit=5))
    codes = [client.balance() for _ in range(8)]
    assert [r.status_code for r in codes[:5]] == [200] * 5
    limited = codes[5:]
    assert all(r.status_code == 429 for r in limited)
    assert all(r.headers["Retry-After"] == "1" for r in limited)
    assert all(r.json()["errorCode"] == "ERROR_RATE_LIMIT" for r in limited)
    # The test endpoints are never limited.
    stats = client.stats()
    assert stats["errors_by_code"]["ERROR_RATE_LIMIT"] == 3
    time.sleep(1.05)
    assert client.balance().status_code == 200


def test_http_5xx(emulator, api, png):
    client = api(emulator(http_5xx_rate=1.0))
    for _ in range(6):
        reply = client.create(png)
        assert reply.status_code in (500, 502, 503)
        assert reply.headers["content-type"].startswith("text/html")
    stats = client.stats()
    assert stats["create_accepted"] == 0 and stats["charged_total"] == 0
    # "Stop failing" at run time.
    client.control(http_5xx_rate=0)
    assert client.create(png).json()["status"] == "ready"


def test_unavailable(emulator, api, png):
    client = api(emulator(unavailable_rate=1.0))
    reply = client.create(png)
    assert reply.status_code == 400
    assert reply.json()["errorCode"] == "ERROR_SERVICE_UNAVALIABLE"
    assert client.stats()["create_accepted"] == 0


def test_malformed(emulator, api, png):
    client = api(emulator(malformed_rate=1.0))
    reply = client.create(png)
    assert reply.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.content)
    assert client.stats()["create_accepted"] == 0


@pytest.mark.parametrize("after_create", [True, False])
def test_dropped_connection(emulator, api, png, after_create):
    emu = emulator(drop_rate=1.0, drop_after_create=after_create)
    client = api(emu)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.create(png)
    stats = emu.stats()
    assert stats["faults"]["drop"] == 1
    if after_create:
        # The task was made and paid for; only the reply was lost.
        assert stats["dropped_after_create"] == 1
        assert stats["create_accepted"] == 1
        assert stats["charged_total"] == pytest.approx(PRICE)
    else:
        assert stats["dropped_after_create"] == 0
        assert stats["create_accepted"] == 0
        assert stats["charged_total"] == 0


def test_faults_hit_get_task_result(emulator, api, png):
    emu = emulator()
    client = api(emu)
    task_id = client.create(png).json()["taskId"]
    emu.control(malformed_rate=1.0)
    assert client.result(task_id).status_code == 200
    with pytest.raises(json.JSONDecodeError):
        client.result(task_id).json()
    emu.control(malformed_rate=0.0, drop_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.result(task_id)
    emu.control(drop_rate=0.0)
    assert client.result(task_id).json()["status"] == "ready"


def test_latency(emulator, api):
    client = api(emulator(latency=(0.15, 0.15)))
    start = time.monotonic()
    client.result("nope")
    assert time.monotonic() - start >= 0.15


# --- solvers ----------------------------------------------------------------------------


def test_oracle_exact(emulator, api, labelled_images, labels_csv, make_png):
    client = api(emulator(solver="oracle", labels=str(labels_csv), error_rate=0.0))
    for image, label in labelled_images:
        assert client.create(image).json()["solution"]["text"] == label
    unknown = client.create(make_png("not in labels"))
    assert unknown.status_code == 400
    assert unknown.json()["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    stats = client.stats()
    assert stats["solved"] == len(labelled_images)
    assert stats["unsolvable"] == 1
    assert stats["charged_total"] == pytest.approx(len(labelled_images) * PRICE)


def test_oracle_always_wrong(emulator, api, labelled_images, labels_csv):
    client = api(emulator(solver="oracle", labels=str(labels_csv), error_rate=1.0))
    for image, label in labelled_images:
        answer = client.create(image).json()["solution"]["text"]
        assert answer != label
        assert len(answer) == len(label)
        assert sum(a != b for a, b in zip(answer, label, strict=True)) == 1


def test_oracle_needs_labels():
    with pytest.raises(ConfigError):
        EmulatorConfig(solver="oracle")
    with pytest.raises(ConfigError), running_emulator(solver="oracle", labels="/nonexistent.csv"):
        pass


# --- callbacks --------------------------------------------------------------------------


async def test_callback_reaches_loopback(emulator, png, callback_hook):
    emu = emulator(deferred=0.0, solve_time=(0.05, 0.05), callback_allow=callback_hook.allow)
    async with httpx.AsyncClient(base_url=emu.url, timeout=10) as http:
        body = {
            "clientKey": KEY,
            "task": {"type": "ImageToTextTask", "body": b64(png)},
            "callbackUrl": callback_hook.url,
        }
        sync = (await http.post("/createTask", json=body)).json()
        assert await callback_hook.next() == sync

        emu.control(deferred=1.0)
        task_id = (await http.post("/createTask", json=body)).json()["taskId"]
        got = await callback_hook.next()
        polled = (
            await http.post("/getTaskResult", json={"clientKey": KEY, "taskId": task_id})
        ).json()
        assert got == polled
        assert got["taskId"] == task_id and got["status"] == "ready"
    stats = emu.stats()
    assert stats["callbacks_sent"] == 2
    assert stats["callbacks_refused"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.255.255.1/",
        "ftp://127.0.0.1/x",
        "http://localhost.example.com/",
        "http://[::ffff:10.255.255.1]/",
    ],
)
def test_callback_to_other_hosts_refused(emulator, api, png, url):
    # Port 80 allowed: what refuses these is the scheme or the host.
    emu = emulator(callback_allow=("80",))
    client = api(emu)
    reply = client.create(png, callbackUrl=url)
    assert reply.json()["status"] == "ready"
    stats = emu.stats()
    assert stats["callbacks_refused"] == 1
    assert stats["callbacks_sent"] == 0
    assert stats["callbacks_failed"] == 0


# --- repeatability and counters -------------------------------------------------------


def _run_script(emulator, api, png, seed):
    emu = emulator(
        seed=seed,
        deferred=0.5,
        http_5xx_rate=0.2,
        unavailable_rate=0.1,
        malformed_rate=0.1,
        solve_time=(5.0, 5.0),
    )
    client = api(emu)
    outcome = []
    for _ in range(30):
        reply = client.create(png)
        try:
            body = reply.json()
        except json.JSONDecodeError:
            body = {"malformed": True}
        outcome.append((reply.status_code, body.get("errorCode"), body.get("status")))
    return outcome


def test_seeded_runs_repeat(emulator, api, png):
    first = _run_script(emulator, api, png, seed=7)
    assert _run_script(emulator, api, png, seed=7) == first
    assert _run_script(emulator, api, png, seed=8) != first
    kinds = {status for status, _, _ in first}
    assert 200 in kinds and kinds & {500, 502, 503}


async def test_stats_counts_concurrency(emulator, png):
    emu = emulator(sync_latency=(0.3, 0.3))
    body = {"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": b64(png)}}
    async with httpx.AsyncClient(base_url=emu.url, timeout=10) as http:
        replies = await asyncio.gather(*(http.post("/createTask", json=body) for _ in range(5)))
        assert all(r.json()["status"] == "ready" for r in replies)
        stats = (await http.get("/_stats")).json()
    assert stats["in_flight_max"] == 5
    assert stats["in_flight"] == 0
    assert stats["requests_total"] == 5
    assert stats["max_requests_per_second"] == 5
    assert stats["creates_by_hash"] == {hashlib.sha256(png).hexdigest(): 5}


def test_control_and_reset(emulator, api, png):
    emu = emulator()
    client = api(emu)
    client.create(png)
    bad = client.control(no_such_option=1)
    assert bad.status_code == 400 and "no_such_option" in bad.json()["error"]
    assert client.control(drop_rate=2).status_code == 400
    assert client.control(port=1).status_code == 400
    config = client.control(api_key="new-key", solve_time=[0.1, 0.2]).json()
    assert "api_key" not in config and config["solve_time"] == [0.1, 0.2]
    assert client.create(png).status_code == 401
    with pytest.raises(ConfigError):
        emu.control(deferred=-1)
    reset = client.http.post("/_reset_stats", json={"clientKey": "new-key"}).json()
    assert reset["create_calls"] == 0 and reset["charged_total"] == 0
    assert reset["balance"] == pytest.approx(100.0 - PRICE)


def test_build_app_is_an_aiohttp_application():
    assert isinstance(build_app(EmulatorConfig()), web.Application)


def test_config_repr_hides_key():
    assert "s3cret" not in repr(EmulatorConfig(api_key="s3cret"))


# --- the serve command ----------------------------------------------------------------


def test_serve_command_prints_url_first_and_stops_on_sigterm(tmp_path, png):
    env = {**os.environ, "CAPBATCH_EMULATOR_KEY": "env-secret-key"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capbatch.emulator",
            "--solver",
            "constant",
            "--port",
            "0",
            "--deferred",
            "0",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("capbatch emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        body = {
            "clientKey": "env-secret-key",
            "task": {"type": "ImageToTextTask", "body": b64(png)},
        }
        assert httpx.post(f"{url}/createTask", json=body, timeout=10).json()["status"] == "ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert "env-secret-key" not in line + out + err


def test_serve_command_refuses_remote_host():
    result = CliRunner().invoke(serve_command, ["--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "--allow-remote" in result.output


def test_serve_command_bad_range():
    result = CliRunner().invoke(serve_command, ["--solve-time", "3-1"])
    assert result.exit_code != 0
    assert "MIN-MAX" in result.output or "maximum" in result.output


def test_base64_image_is_hashed_on_decoded_bytes(emulator, api, png):
    client = api(emulator())
    client.create(png)
    encoded = base64.b64encode(png).decode()
    assert client.stats()["creates_by_hash"] == {
        hashlib.sha256(base64.b64decode(encoded)).hexdigest(): 1
    }
