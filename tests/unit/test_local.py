"""``capbatch.local``: the ddddocr solver and its provider-shaped async service."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ddddocr")

from PIL import Image, ImageDraw, ImageFont

from capbatch._exceptions import InvalidTask, TaskExpired
from capbatch._providers.errors import Action, classify
from capbatch.local import LocalService, LocalSolver, decode_body

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "images" / "cap-0001.png"


def _drawn_captcha(text: str = "k7p2x") -> bytes:
    image = Image.new("RGB", (160, 60), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 12), text, fill="black", font=ImageFont.load_default(size=32))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def png() -> bytes:
    return SAMPLE.read_bytes() if SAMPLE.exists() else _drawn_captcha()


@pytest.fixture(scope="module")
def solver() -> Iterator[LocalSolver]:
    shared = LocalSolver()
    yield shared
    shared.close()


def test_solve_returns_text(solver: LocalSolver, png: bytes) -> None:
    answer = solver.solve(png)
    assert isinstance(answer, str)
    assert answer
    assert solver.solve(png) == answer  # deterministic


def test_solve_a_drawn_captcha(solver: LocalSolver) -> None:
    assert isinstance(solver.solve(_drawn_captcha()), str)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_solve_rejects_non_images(solver: LocalSolver, data: bytes) -> None:
    with pytest.raises(InvalidTask) as info:
        solver.solve(data)
    assert info.value.error_code == "ERROR_INVALID_IMAGE"


async def test_create_task_is_ready_and_free(solver: LocalSolver, png: bytes) -> None:
    service = LocalService(solver)
    task = {"type": "ImageToTextTask", "body": base64.b64encode(png).decode()}
    reply = await service.create_task(task)
    assert reply.ready
    assert reply.cost == 0
    assert reply.answer == LocalSolver().solve(png)
    assert reply.task_id
    assert (await service.create_task(task)).task_id != reply.task_id


async def test_create_task_not_an_image(solver: LocalSolver) -> None:
    task = {"type": "ImageToTextTask", "body": base64.b64encode(b"plain text").decode()}
    with pytest.raises(InvalidTask) as info:
        await LocalService(solver).create_task(task)
    assert info.value.error_code == "ERROR_INVALID_IMAGE"
    assert classify(info.value) is Action.RECORD


@pytest.mark.parametrize("task_type", ["ReCaptchaV2Task", None, "imagetotexttask"])
async def test_create_task_unsupported_type(solver: LocalSolver, task_type: str | None) -> None:
    with pytest.raises(InvalidTask) as info:
        await LocalService(solver).create_task({"type": task_type, "body": "aGk="})
    assert info.value.error_code == "ERROR_TASK_NOT_SUPPORTED"


@pytest.mark.parametrize(
    "body",
    ["!!!not base64!!!", "aGk", "data:image/png;base64,aGk=", "aG\nk="],
    ids=["garbage", "bad-padding", "data-uri", "newline"],
)
async def test_create_task_bad_base64(solver: LocalSolver, body: str) -> None:
    with pytest.raises(InvalidTask) as info:
        await LocalService(solver).create_task({"type": "ImageToTextTask", "body": body})
    assert info.value.error_code == "ERROR_INVALID_IMAGE"


@pytest.mark.parametrize("body", [None, "", 42])
def test_decode_body_without_a_body(body: object) -> None:
    with pytest.raises(InvalidTask) as info:
        decode_body({"type": "ImageToTextTask", "body": body})
    assert info.value.error_code == "ERROR_INVALID_TASK_DATA"


async def test_the_rest_of_the_service_interface(solver: LocalSolver) -> None:
    service = LocalService(solver)
    with pytest.raises(TaskExpired) as info:
        await service.get_task_result("abc")
    assert info.value.task_id == "abc"
    assert await service.get_balance() is None
    assert await service.report_incorrect("abc") is False
    await service.aclose()
    # A solver passed in belongs to the caller and stays usable.
    assert isinstance(await solver.solve_async(_drawn_captcha()), str)


async def test_owned_solver_is_closed() -> None:
    service = LocalService()
    assert service.solver is service.solver
    _ = service.solver.executor
    await service.aclose()
    assert service.solver._executor is None


def test_default_workers_is_cpu_count(solver: LocalSolver) -> None:
    assert solver.workers == (os.cpu_count() or 1)
    assert solver.executor._max_workers == solver.workers
    assert LocalSolver(workers=3).workers == 3


class _BarrierSolver(LocalSolver):
    """Proves concurrency: ``parties`` calls must be inside ``solve`` at the same time."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)
        self.opened = False
        self.threads: set[str] = set()

    def solve(self, image: bytes) -> str:
        self.threads.add(threading.current_thread().name)
        if not self.opened:
            # Every pool thread blocks here until `parties` of them arrived; later calls
            # only start once a thread got through and set `opened`.
            self.barrier.wait()
            self.opened = True
        return super().solve(image)


async def test_solve_async_runs_on_several_threads_at_once(png: bytes) -> None:
    cores = os.cpu_count() or 1
    parallel = min(8, cores)
    solver = _BarrierSolver(parallel)
    try:
        assert solver.executor._max_workers == cores
        answers = await asyncio.wait_for(
            asyncio.gather(*(solver.solve_async(png) for _ in range(8))), timeout=30
        )
        assert len(answers) == 8
        assert len(set(answers)) == 1
        # The barrier only opens when `parallel` threads are inside solve together.
        assert solver.opened and not solver.barrier.broken
        assert len(solver.threads) == parallel
        assert all(name.startswith("capbatch-ocr") for name in solver.threads)
    finally:
        solver.barrier.abort()
        solver.close()
