"""The local solver: ddddocr behind the same interface as a remote provider.

``LocalSolver.solve(image_bytes)`` reads text and ``LocalSolver.slide(piece, background)``
finds a slider's gap (both thread-safe: one ddddocr model per worker thread);
``LocalService`` speaks the client's async interface (``create_task``,
``get_task_result``, ``get_balance``, ``report_incorrect``) so the runner cannot tell it
from a provider that always answers synchronously, at cost 0.

What it answers (``check_task`` says so before a run; ``create_task`` refuses the rest
with a ``ConfigError``, which stops the run once rather than failing every row):

* ``ImageToTextTask``: ``{"text": ..., "confidence": ...}``, the characters restricted to the task's
  ``charset`` (``CHARSETS``; default ``letters+digits``, ``all`` for ddddocr's whole set);
* ``VisionEngine`` with ``module`` ``slider_1``: ``{"distance": x}``, the gap's left x in
  ``imageBackground`` found by ddddocr's slide matching for the piece in ``image``.

Grid classification (``ReCaptchaV2Classification``, ``AwsWafClassification``) and the other
VisionEngine modules are beyond ddddocr: its detector finds text boxes, not cars or buses.

ddddocr ships its ONNX model inside its wheel, so nothing is downloaded. Inference
runs in onnxruntime, which releases the GIL, so a thread per core keeps every core busy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import string
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from capbatch._exceptions import ConfigError, InvalidTask, TaskExpired
from capbatch._providers.protocol import TaskReply

SUPPORTED_TASK_TYPES = frozenset({"ImageToTextTask", "VisionEngine"})
#: The VisionEngine modules ddddocr can answer.
VISION_MODULES = frozenset({"slider_1"})

#: The character sets the ``charset`` task parameter names. ddddocr's README gives the
#: same sets as integers 0-6 (in this order); ddddocr 1.6 reads an integer as "the first
#: n+1 characters of the model", so capbatch resolves the integers itself.
CHARSETS: dict[str, str] = {
    "digits": string.digits,
    "lowercase": string.ascii_lowercase,
    "uppercase": string.ascii_uppercase,
    "letters": string.ascii_letters,
    "lowercase+digits": string.ascii_lowercase + string.digits,
    "uppercase+digits": string.ascii_uppercase + string.digits,
    "letters+digits": string.ascii_letters + string.digits,
}
#: Without a ``charset``: ASCII letters and digits, what text captchas are made of; the
#: model's full set (8,210 characters, mostly CJK) reads noise as ``了`` or ``{``.
DEFAULT_CHARSET = "letters+digits"
#: ``charset=all``: no restriction, ddddocr's own output.
ALL_CHARACTERS = "all"

_T = TypeVar("_T")


def resolve_charset(value: object) -> str | None:
    """The characters a ``charset`` value allows (None: all). Raises ``ConfigError``.

    A name from ``CHARSETS``, ``all``, ddddocr's integers 0-6 (or their digits as text),
    or the allowed characters themselves (``"0123456789+-="``); absent: the default.
    """
    if value is None:
        return CHARSETS[DEFAULT_CHARSET]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CHARSETS):
        return list(CHARSETS.values())[value]
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"charset must be a name ({', '.join(CHARSETS)}, {ALL_CHARACTERS}), "
            f"ddddocr's number 0-{len(CHARSETS) - 1}, or the characters to allow; "
            f"got {value!r}"
        )
    if value == ALL_CHARACTERS:
        return None
    if value in CHARSETS:
        return CHARSETS[value]
    if len(value) == 1 and value.isdigit() and int(value) < len(CHARSETS):
        return list(CHARSETS.values())[int(value)]
    return "".join(dict.fromkeys(value))  # the characters themselves, each once


def check_task(task_type: str, params: Mapping[str, Any] | None = None) -> None:
    """Raise ``ConfigError`` when the local solver can never answer this task.

    For a run's set-up: one clear line before any row, rather than the same refusal
    on every row.
    """
    params = params or {}
    if task_type not in SUPPORTED_TASK_TYPES:
        raise ConfigError(f"the local solver cannot answer {task_type}")
    module = params.get("module")  # absent here when a column gives it per row
    if task_type == "VisionEngine" and "module" in params and module not in VISION_MODULES:
        raise ConfigError(
            f"the local solver cannot answer VisionEngine module {module!r}: "
            f"it answers {', '.join(sorted(VISION_MODULES))}"
        )
    if task_type == "ImageToTextTask":
        resolve_charset(params.get("charset"))


def _load_ddddocr() -> Any:
    try:
        import ddddocr
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("the local solver needs ddddocr: pip install 'capbatch[local]'") from exc
    return ddddocr


def _single_threaded(model: Any) -> None:
    """Give ``model`` a one-thread onnxruntime session.

    By default each session spreads one inference over every core; with one model per
    worker thread that oversubscribes the machine, so each session gets one thread and
    the worker threads (one per core) share the cores. No bench in ``bench/`` measures
    the gain. If ddddocr's internals ever change, keep its own session: still correct.
    """
    try:
        import onnxruntime

        engine = model.ocr_engine
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        engine.session = onnxruntime.InferenceSession(
            engine.session._model_path,
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
    except Exception:  # noqa: S110 - an optimisation only
        pass


def _restricted_scores(model: Any, image: bytes) -> Any:
    """The OCR model's per-step class scores for ``image``: (steps, classes).

    ddddocr's own restriction (``set_ranges``) drops a character outside the set after
    choosing it; choosing the best character inside the set needs the scores. Its public
    ``probability=True`` gives them as nested lists (twice the time of a reading), so
    this runs its preprocessing and session directly, and falls back to the public path
    if ddddocr's internals ever change.
    """
    import numpy as np

    engine = model.ocr_engine
    try:
        from ddddocr.utils.image_io import load_image_from_input

        prepare, session = engine._preprocess_image, engine.session
    except (ImportError, AttributeError):  # pragma: no cover - another ddddocr layout
        scores = np.asarray(model.classification(image, probability=True)["probabilities"])
    else:
        tensor = prepare(load_image_from_input(image), False)
        scores = session.run(None, {session.get_inputs()[0].name: tensor})[0]
    return scores.reshape(-1, scores.shape[-1])


def ctc_text(scores: Any, allowed: Any, charset: list[str]) -> str:
    """Greedy CTC decoding among ``allowed`` class indexes (0, the blank, among them):
    the best allowed class per step, repeats merged, blanks dropped."""
    import numpy as np

    best = allowed[np.argmax(scores[:, allowed], axis=1)]
    text, previous = [], -1
    for index in best.tolist():
        if index not in (previous, 0):
            text.append(charset[index])
        previous = index
    return "".join(text)


def restricted_confidence(scores: Any, allowed: Any) -> float:
    """How sure the model is of its reading among ``allowed`` classes: per CTC step the
    best class's probability (a softmax over the allowed classes only), averaged over the
    steps. ddddocr's own ``confidence`` is the same mean over its whole character set."""
    import numpy as np

    logits = scores[:, allowed]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    best = shifted.max(axis=1) / shifted.sum(axis=1)
    return float(best.mean()) if best.size else 0.0


class LocalSolver:
    """Recognise captcha text and find slider gaps with ddddocr on every core."""

    def __init__(self, workers: int | None = None) -> None:
        self._ddddocr = _load_ddddocr()
        self.workers = workers or os.cpu_count() or 1
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._allowed: dict[str, Any] = {}  # characters -> class indexes (shared, read-only)
        self._classes: list[str] = []  # the OCR model's characters, by class index

    def _model(self) -> Any:
        model = getattr(self._local, "model", None)
        if model is None:
            model = self._ddddocr.DdddOcr(show_ad=False)
            _single_threaded(model)
            self._local.model = model
        return model

    def _slider(self) -> Any:
        model = getattr(self._local, "slider", None)
        if model is None:
            model = self._ddddocr.DdddOcr(det=False, ocr=False, show_ad=False)
            self._local.slider = model
        return model

    def _allowed_indexes(self, model: Any, characters: str) -> tuple[Any, list[str]]:
        """The model's class indexes for ``characters`` (with the blank), and its classes."""
        with self._lock:
            if not self._classes:
                self._classes = list(model.get_charset())  # the same for every model
            found = self._allowed.get(characters)
            if found is None:
                import numpy as np

                where = {c: i for i, c in enumerate(self._classes)}
                indexes = {0} | {where[c] for c in characters if c in where}
                if indexes == {0}:
                    raise ConfigError(f"charset {characters!r} has no character ddddocr reads")
                found = self._allowed[characters] = np.array(sorted(indexes))
            return found, self._classes

    def solve(self, image: bytes, charset: object = None) -> str:
        """The text in ``image`` (PNG, JPEG, GIF, ... bytes), its characters from
        ``charset`` (``resolve_charset``). Raises ``InvalidTask`` or ``ConfigError``."""
        return self.read(image, charset)[0]

    def read(self, image: bytes, charset: object = None) -> tuple[str, float]:
        """``solve``'s text and the model's confidence in it, 0 to 1, taken over the
        characters ``charset`` allows (``restricted_confidence``)."""
        characters = resolve_charset(charset)
        if not image:
            raise InvalidTask("image is empty", error_code="ERROR_INVALID_IMAGE")
        model = self._model()
        if characters is None:
            reading = self._read(lambda: model.classification(image, probability=True))
            return str(reading["text"]), float(reading["confidence"])
        allowed, classes = self._allowed_indexes(model, characters)

        def scored() -> tuple[str, float]:
            scores = _restricted_scores(model, image)
            return ctc_text(scores, allowed, classes), restricted_confidence(scores, allowed)

        return self._read(scored)

    def slide(self, piece: bytes, background: bytes) -> int:
        """The x of the gap's left edge in ``background`` where ``piece`` fits (ddddocr's
        edge-based slide matching). Raises ``InvalidTask``."""
        if not piece or not background:
            raise InvalidTask("slider image is empty", error_code="ERROR_INVALID_IMAGE")

        def match() -> int:
            from PIL import Image

            with Image.open(io.BytesIO(piece)) as opened:
                # RGBA first: ddddocr's own RGB conversion of a palette piece with a
                # transparent colour warns on every call.
                target = opened.convert("RGBA")
            width: int = target.size[0]
            found = self._slider().slide_match(target, background)
            # ddddocr gives the centre of the best match; the distance is its left edge.
            centre: int = int(found["target"][0])
            return max(0, centre - width // 2)

        return self._read(match)

    @staticmethod
    def _read(work: Callable[[], _T]) -> _T:
        try:
            return work()
        except ConfigError:
            raise
        except Exception as exc:  # ddddocr raises bare errors for unreadable images
            raise InvalidTask(
                f"image could not be read: {type(exc).__name__}",
                error_code="ERROR_INVALID_IMAGE",
            ) from exc

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="capbatch-ocr"
                )
            return self._executor

    async def solve_async(self, image: bytes, charset: object = None) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.solve, image, charset)

    async def read_async(self, image: bytes, charset: object = None) -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.read, image, charset)

    async def slide_async(self, piece: bytes, background: bytes) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.slide, piece, background)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


def decode_image_field(task: Mapping[str, Any], field: str) -> bytes:
    """The image bytes of a task field (base64, no data-URI prefix)."""
    value = task.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidTask(f"task has no image {field}", error_code="ERROR_INVALID_TASK_DATA")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidTask(f"{field} is not base64", error_code="ERROR_INVALID_IMAGE") from None


def decode_body(task: Mapping[str, Any]) -> bytes:
    """The image bytes of an ImageToTextTask (``body`` is base64, no data-URI prefix)."""
    return decode_image_field(task, "body")


class LocalService:
    """The local solver behind the provider client's async interface."""

    def __init__(self, solver: LocalSolver | None = None) -> None:
        self._solver = solver
        self._owns_solver = solver is None

    @property
    def solver(self) -> LocalSolver:
        if self._solver is None:
            self._solver = LocalSolver()
        return self._solver

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> TaskReply:
        """Answer ``task`` at once. A type or module it can never answer raises
        ``ConfigError`` (the runner stops there: no row failed the same way again)."""
        task_type = task.get("type")
        # The module is checked even when absent (check_task skips a missing one, which
        # a column may give per row; here the task is whole).
        check_task(
            task_type if isinstance(task_type, str) else repr(task_type),
            {**task, "module": task.get("module")},
        )
        solution: dict[str, Any]
        if task_type == "VisionEngine":
            piece = decode_image_field(task, "image")
            background = decode_image_field(task, "imageBackground")
            solution = {"distance": await self.solver.slide_async(piece, background)}
        else:
            text, confidence = await self.solver.read_async(decode_body(task), task.get("charset"))
            solution = {"text": text, "confidence": round(confidence, 6)}
        return TaskReply(
            task_id=str(uuid.uuid4()),
            status="ready",
            raw_status="ready",
            solution=solution,
            cost=0.0,
        )

    async def get_task_result(self, task_id: str) -> TaskReply:
        # Every local task is answered synchronously; no id is ever pending.
        raise TaskExpired(
            "the local solver keeps no tasks to poll",
            error_code="ERROR_TASKID_INVALID",
            task_id=task_id,
        )

    async def get_balance(self) -> float | None:
        return None

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        return False

    async def aclose(self) -> None:
        if self._owns_solver and self._solver is not None:
            self._solver.close()
