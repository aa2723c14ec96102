"""The local solver: ddddocr behind the same interface as a remote provider.

``LocalSolver.solve(image_bytes)`` is the synchronous core (thread-safe: one ddddocr
model per worker thread); ``LocalService`` speaks the client's async interface
(``create_task``, ``get_task_result``, ``get_balance``, ``report_incorrect``) so the
runner cannot tell it from a provider that always answers synchronously, at cost 0.

ddddocr ships its ONNX model inside its wheel, so nothing is downloaded. Inference
runs in onnxruntime, which releases the GIL, so a thread per core keeps every core busy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from capbatch._exceptions import ConfigError, InvalidTask, TaskExpired
from capbatch._providers.protocol import TaskReply

SUPPORTED_TASK_TYPES = frozenset({"ImageToTextTask"})


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


class LocalSolver:
    """Recognise captcha text with ddddocr on every core of this machine."""

    def __init__(self, workers: int | None = None) -> None:
        self._ddddocr = _load_ddddocr()
        self.workers = workers or os.cpu_count() or 1
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        model = getattr(self._local, "model", None)
        if model is None:
            model = self._ddddocr.DdddOcr(show_ad=False)
            _single_threaded(model)
            self._local.model = model
        return model

    def solve(self, image: bytes) -> str:
        """The text in ``image`` (PNG, JPEG, GIF, ... bytes). Raises ``InvalidTask``."""
        if not image:
            raise InvalidTask("image is empty", error_code="ERROR_INVALID_IMAGE")
        try:
            return str(self._model().classification(image))
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

    async def solve_async(self, image: bytes) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.solve, image)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


def decode_body(task: Mapping[str, Any]) -> bytes:
    """The image bytes of an ImageToTextTask (``body`` is base64, no data-URI prefix)."""
    body = task.get("body")
    if not isinstance(body, str) or not body:
        raise InvalidTask("task has no image body", error_code="ERROR_INVALID_TASK_DATA")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidTask("body is not base64", error_code="ERROR_INVALID_IMAGE") from None


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
        task_type = task.get("type")
        if task_type not in SUPPORTED_TASK_TYPES:
            raise InvalidTask(
                f"the local solver does not support task type {task_type!r}",
                error_code="ERROR_TASK_NOT_SUPPORTED",
            )
        text = await self.solver.solve_async(decode_body(task))
        return TaskReply(
            task_id=str(uuid.uuid4()),
            status="ready",
            raw_status="ready",
            solution={"text": text},
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
