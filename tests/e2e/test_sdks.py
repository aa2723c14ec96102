"""Other people's clients against the emulator: the official ``capsolver`` SDK (sync,
``requests``) and ``python3-capsolver`` (sync and asyncio). If they solve through it and
get exactly the emulator solver's answers, the emulator speaks CapSolver's protocol.

How each SDK is pointed at the emulator (read from their source):

* ``capsolver`` 1.0.7 reads ``CAPSOLVER_API_BASE`` once at import time into
  ``capsolver.api_base``, and looks that attribute up on every request; so the test
  sets the attribute (and ``capsolver.api_key``). Its ``solve`` waits 1 s before each
  poll, so its deferred test takes about a second.
* ``python3_capsolver`` 1.2.2 takes ``request_url=`` (and ``sleep_time=`` between polls)
  as keyword arguments of ``ImageToText``; ``captcha_handler`` is sync,
  ``aio_captcha_handler`` async. It sends ``"callbackUrl": null`` and an ``appId``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import capsolver
import pytest
from python3_capsolver.image_to_text import ImageToText

from capbatch.emulator import EmulatorHandle

pytestmark = pytest.mark.e2e

KEY = "test-key"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def point_capsolver(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the official SDK at an emulator (module attributes, restored afterwards)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def point(handle: EmulatorHandle, key: str = KEY) -> None:
        monkeypatch.setattr(capsolver, "api_base", handle.url)
        monkeypatch.setattr(capsolver, "api_key", key)

    return point


def image_task(image: bytes) -> dict[str, Any]:
    return {"type": "ImageToTextTask", "body": b64(image)}


# --- the official capsolver SDK -------------------------------------------------------


def test_capsolver_constant(emulator, point_capsolver, labelled_images):
    emu = emulator(solver="constant", answer="xk42p")
    point_capsolver(emu)
    for image, _ in labelled_images[:3]:
        assert capsolver.solve(image_task(image)) == {"text": "xk42p"}
    assert emu.stats()["solved"] == 3


def test_capsolver_oracle(emulator, point_capsolver, labelled_images, labels_csv):
    emu = emulator(solver="oracle", labels=str(labels_csv))
    point_capsolver(emu)
    for image, label in labelled_images:
        assert capsolver.solve(image_task(image))["text"] == label


def test_capsolver_deferred(emulator, point_capsolver, labelled_images, labels_csv):
    # With "status":"idle" in the createTask reply; see the next test for without.
    emu = emulator(
        solver="oracle",
        labels=str(labels_csv),
        deferred=1.0,
        solve_time=(0.2, 0.3),
        deferred_reply_status="idle",
    )
    point_capsolver(emu)
    image, label = labelled_images[1]
    assert capsolver.solve(image_task(image)) == {"text": label}
    stats = emu.stats()
    assert stats["deferred_created"] == 1
    assert stats["polls"] >= 1


def test_capsolver_breaks_on_deferred_reply_without_status(emulator, point_capsolver, png):
    # The official SDK reads r["status"] from createTask; CapSolver's documented deferred
    # reply has no status, and the SDK crashes on it. The emulator reproduces that shape
    # (deferred_reply_status="none"/"mixed"), which is why capbatch must not rely on it.
    emu = emulator(deferred=1.0, solve_time=(5.0, 5.0), deferred_reply_status="none")
    point_capsolver(emu)
    with pytest.raises(KeyError, match="status"):
        capsolver.solve(image_task(png))


def test_capsolver_balance_and_errors(emulator, point_capsolver, png):
    emu = emulator(balance=12.5)
    point_capsolver(emu)
    reply = capsolver.balance()
    assert reply["balance"] == 12.5
    assert reply["errorId"] == 0

    point_capsolver(emu, key="wrong")
    with pytest.raises(capsolver.AuthenticationError):
        capsolver.solve(image_task(png))

    point_capsolver(emu)
    emu.control(unsolvable_rate=1.0)
    with pytest.raises(capsolver.InvalidRequestError):
        capsolver.solve(image_task(png))
    emu.control(unsolvable_rate=0.0, balance=0.0)
    with pytest.raises(capsolver.InvalidRequestError):
        capsolver.solve(image_task(png))
    assert emu.stats()["errors_by_code"] == {
        "ERROR_KEY_DENIED_ACCESS": 1,
        "ERROR_CAPTCHA_UNSOLVABLE": 1,
        "ERROR_ZERO_BALANCE": 1,
    }


# --- python3-capsolver ----------------------------------------------------------------


def test_python3_capsolver_sync(emulator, labelled_images, labels_csv):
    emu = emulator(solver="oracle", labels=str(labels_csv))
    for image, label in labelled_images[:3]:
        result = ImageToText(api_key=KEY, request_url=emu.url).captcha_handler(
            task_payload={"body": b64(image)}
        )
        assert result["errorId"] == 0
        assert result["status"] == "ready"
        assert result["solution"] == {"text": label}


async def test_python3_capsolver_async(emulator, labelled_images, labels_csv):
    emu = emulator(solver="oracle", labels=str(labels_csv))
    for image, label in labelled_images[:3]:
        result = await ImageToText(api_key=KEY, request_url=emu.url).aio_captcha_handler(
            task_payload={"body": b64(image)}
        )
        assert result["solution"] == {"text": label}


def test_python3_capsolver_deferred_sync(emulator, labelled_images, labels_csv):
    emu = emulator(solver="oracle", labels=str(labels_csv), deferred=1.0, solve_time=(0.2, 0.3))
    image, label = labelled_images[2]
    solver = ImageToText(api_key=KEY, request_url=emu.url, sleep_time=0.1)
    result = solver.captcha_handler(task_payload={"body": b64(image)})
    assert result["status"] == "ready"
    assert result["solution"] == {"text": label}
    assert emu.stats()["deferred_created"] == 1


async def test_python3_capsolver_deferred_async(emulator, labelled_images, labels_csv):
    emu = emulator(
        solver="oracle",
        labels=str(labels_csv),
        deferred=1.0,
        solve_time=(0.2, 0.3),
        deferred_reply_status="none",
    )
    image, label = labelled_images[3]
    solver = ImageToText(api_key=KEY, request_url=emu.url, sleep_time=0.1)
    result = await solver.aio_captcha_handler(task_payload={"body": b64(image)})
    assert result["solution"] == {"text": label}


async def test_python3_capsolver_unsolvable_deferred_stops(emulator, png):
    # "status":"failed" on an unsolvable task is what lets this SDK stop polling.
    emu = emulator(deferred=1.0, solve_time=(0.1, 0.1), unsolvable_rate=1.0)
    solver = ImageToText(api_key=KEY, request_url=emu.url, sleep_time=0.1)
    result = await solver.aio_captcha_handler(task_payload={"body": b64(png)})
    assert result["errorId"] == 1
    assert result["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert emu.stats()["polls"] <= 5  # without "failed" it would poll 15 times
    assert emu.stats()["charged_total"] == 0


# --- the local solver through both SDKs -----------------------------------------------


def test_local_solver_matches_local_solver(emulator, point_capsolver, labelled_images):
    pytest.importorskip("ddddocr")
    from capbatch.local import LocalSolver

    local = LocalSolver(workers=1)
    try:
        expected = [local.solve(image) for image, _ in labelled_images[:3]]
    finally:
        local.close()
    emu = emulator(solver="local")
    point_capsolver(emu)
    got = [capsolver.solve(image_task(image))["text"] for image, _ in labelled_images[:3]]
    assert got == expected
    again = ImageToText(api_key=KEY, request_url=emu.url).captcha_handler(
        task_payload={"body": b64(labelled_images[0][0])}
    )
    assert again["solution"] == {"text": expected[0]}
