"""``capbatch.local``: the ddddocr solver and its provider-shaped async service."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import string
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ddddocr")

from PIL import Image, ImageDraw, ImageFont

from capbatch._exceptions import ConfigError, InvalidTask, TaskExpired
from capbatch._providers.errors import Action, classify
from capbatch.local import (
    CHARSETS,
    DEFAULT_CHARSET,
    LocalService,
    LocalSolver,
    check_task,
    ctc_text,
    decode_body,
    resolve_charset,
    restricted_confidence,
)

DATA = Path(__file__).resolve().parents[2] / "sample_data"
SAMPLE = DATA / "images" / "cap-0001.png"


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


@pytest.mark.parametrize(
    "task_type", ["ReCaptchaV2Classification", "AwsWafClassification", None, "imagetotexttask"]
)
async def test_a_type_it_can_never_answer_stops_the_run(
    solver: LocalSolver, task_type: str | None
) -> None:
    """A ConfigError (fatal: the run stops once) rather than a failed row per row."""
    with pytest.raises(ConfigError, match="the local solver cannot answer") as info:
        await LocalService(solver).create_task({"type": task_type, "image": "aGk="})
    assert classify(info.value) is Action.FATAL
    with pytest.raises(ConfigError, match="cannot answer ReCaptchaV2Classification"):
        check_task("ReCaptchaV2Classification", {"question": "/m/0k4j"})


@pytest.mark.parametrize("module", ["rotate_1", None])
async def test_vision_modules_other_than_the_slider_stop_the_run(
    solver: LocalSolver, module: str | None
) -> None:
    task = {"type": "VisionEngine", "module": module, "image": "aGk=", "imageBackground": "aGk="}
    with pytest.raises(ConfigError, match=f"VisionEngine module {module!r}: it answers slider_1"):
        await LocalService(solver).create_task(task)
    if module is None:
        del task["module"]
        with pytest.raises(ConfigError, match="VisionEngine module None"):
            await LocalService(solver).create_task(task)
    check_task("VisionEngine", {"module": "slider_1"})
    check_task("VisionEngine", {})  # the module may come from a column: checked per task
    check_task("ImageToTextTask", {"charset": "digits"})
    with pytest.raises(ConfigError, match="charset must be"):
        check_task("ImageToTextTask", {"charset": ""})


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

    def solve(self, image: bytes, charset: object = None) -> str:
        self.threads.add(threading.current_thread().name)
        if not self.opened:
            # Every pool thread blocks here until `parties` of them arrived; later calls
            # only start once a thread got through and set `opened`.
            self.barrier.wait()
            self.opened = True
        return super().solve(image, charset)


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


# --------------------------------------------------------------------------- charset


def test_resolve_charset_names_numbers_and_characters() -> None:
    assert resolve_charset(None) == CHARSETS[DEFAULT_CHARSET] == string.ascii_letters + "0123456789"
    assert resolve_charset("all") is None
    assert resolve_charset("digits") == resolve_charset(0) == resolve_charset("0") == "0123456789"
    # ddddocr's README numbers: 4 = lowercase + digits, 6 = letters + digits.
    assert resolve_charset(4) == string.ascii_lowercase + "0123456789"
    assert resolve_charset(6) == CHARSETS["letters+digits"]
    assert resolve_charset("abca+") == "abc+"  # the characters themselves, each once
    for bad in ("", 7, -1, True, 2.5, ["a"]):
        with pytest.raises(ConfigError, match="charset must be"):
            resolve_charset(bad)


def test_ctc_text_picks_the_best_allowed_class_per_step() -> None:
    np = pytest.importorskip("numpy")
    classes = ["", "a", "b", "了"]
    # Steps: 了 (b second), 了 again, blank, b, b (merged), blank, a.
    scores = np.array(
        [
            [0, 1, 5, 9],
            [0, 1, 5, 9],
            [9, 0, 0, 0],
            [0, 0, 9, 1],
            [0, 0, 9, 1],
            [9, 0, 0, 0],
            [0, 9, 0, 0],
        ],
        dtype=float,
    )
    everything = np.arange(4)
    assert ctc_text(scores, everything, classes) == "了ba"
    assert ctc_text(scores, np.array([0, 1, 2]), classes) == "bba"
    assert ctc_text(scores, np.array([0, 1]), classes) == "aa"


def test_unrestricted_reading_is_ddddocrs_own(solver: LocalSolver, png: bytes) -> None:
    import ddddocr

    own = ddddocr.DdddOcr(show_ad=False).classification(png)
    assert solver.solve(png, "all") == own
    assert solver.solve(png, "digits").isdigit() or solver.solve(png, "digits") == ""


def test_the_charset_restricts_every_answer(solver: LocalSolver) -> None:
    images = sorted((DATA / "images").glob("cap-*.png"))[:30]
    allowed = set(CHARSETS[DEFAULT_CHARSET])
    digits = set("0123456789")
    unrestricted = [solver.solve(p.read_bytes(), "all") for p in images]
    default = [solver.solve(p.read_bytes()) for p in images]
    assert all(set(a) <= allowed for a in default), default
    assert all(set(solver.solve(p.read_bytes(), "digits")) <= digits for p in images[:6])
    # The sample's first 30 rows: ddddocr's full set reads something outside [a-zA-Z0-9]
    # somewhere, and the restriction then picks an allowed character in its place.
    assert any(not set(a) <= allowed for a in unrestricted), unrestricted


async def test_create_task_passes_the_charset(solver: LocalSolver, png: bytes) -> None:
    task = {"type": "ImageToTextTask", "body": base64.b64encode(png).decode()}
    digits = await LocalService(solver).create_task({**task, "charset": "digits"})
    text, confidence = solver.read(png, "digits")
    assert digits.solution == {"text": text, "confidence": round(confidence, 6)}
    assert text == solver.solve(png, "digits") and 0.0 < confidence <= 1.0
    with pytest.raises(ConfigError, match="no character ddddocr reads"):
        await LocalService(solver).create_task({**task, "charset": "\x00\x01"})


# --------------------------------------------------------------------------- slider


def _slider_rows(count: int) -> list[tuple[bytes, bytes, int]]:
    import pandas as pd

    table = pd.read_parquet(DATA / "slider.parquet").head(count)
    return [
        ((DATA / r.image_path).read_bytes(), (DATA / r.background_path).read_bytes(), int(r.label))
        for r in table.itertuples()
    ]


def test_slide_finds_the_gap(solver: LocalSolver) -> None:
    rows = _slider_rows(10)
    errors = [abs(solver.slide(piece, background) - label) for piece, background, label in rows]
    assert sum(e <= 5 for e in errors) >= 6, errors  # measured: 77 % of all 120 within 5 px


async def test_create_task_slider_answers_a_distance(solver: LocalSolver) -> None:
    piece, background, _ = _slider_rows(1)[0]
    task = {
        "type": "VisionEngine",
        "module": "slider_1",
        "image": base64.b64encode(piece).decode(),
        "imageBackground": base64.b64encode(background).decode(),
    }
    reply = await LocalService(solver).create_task(task)
    assert reply.ready and reply.cost == 0
    assert reply.solution == {"distance": solver.slide(piece, background)}
    assert isinstance(reply.solution["distance"], int)
    with pytest.raises(InvalidTask) as info:
        await LocalService(solver).create_task({**task, "imageBackground": None})
    assert info.value.error_code == "ERROR_INVALID_TASK_DATA"
    with pytest.raises(InvalidTask) as info:
        await LocalService(solver).create_task({**task, "image": base64.b64encode(b"no").decode()})
    assert info.value.error_code == "ERROR_INVALID_IMAGE"


# --------------------------------------------------------------------------- confidence


def test_restricted_confidence_is_the_mean_best_probability_among_the_allowed() -> None:
    import numpy as np

    # Step 1: allowed classes 0 and 2 with logits 0 and ln 3 -> best p = 3/4; class 1
    # (not allowed) is ignored however large. Step 2: equal logits -> 1/2.
    scores = np.array([[0.0, 50.0, np.log(3.0)], [1.0, 9.0, 1.0]])
    allowed = np.array([0, 2])
    assert restricted_confidence(scores, allowed) == pytest.approx((0.75 + 0.5) / 2)


def test_confidence_tells_right_from_wrong_readings_on_the_sample_data(solver: LocalSolver) -> None:
    import pandas as pd

    table = pd.read_parquet(DATA / "captchas.parquet").head(45)
    right, wrong = [], []
    for row in table.itertuples():
        text, confidence = solver.read((DATA / row.image_path).read_bytes(), "lowercase+digits")
        assert 0.0 <= confidence <= 1.0
        (right if text == row.label else wrong).append(confidence)
    assert right and wrong  # the three styles give both
    assert sum(right) / len(right) > sum(wrong) / len(wrong)
    assert solver.read((DATA / table.image_path[0]).read_bytes(), "all")[1] <= 1.0
