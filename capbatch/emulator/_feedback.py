"""Reports of a task's answer: CapSolver's ``/feedbackTask``, Anti-Captcha's and
CapMonster's ``/reportIncorrectImageCaptcha``, 2Captcha's ``/reportIncorrect`` and
``/reportCorrect``.

One handler serves them all; the dialect says which paths exist, what a report there
means, whether a task takes one report or many, within what window of its completion,
and whether a confirmed wrong answer is refunded. The emulator plays the provider's
moderators: a report that an answer is wrong is "confirmed" when the emulator itself
made that answer wrong (``error_rate``), and only then refunded. Every report, accepted
or refused, is listed per task in ``/_stats`` (``reports_by_task``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from capbatch.emulator._dialects import Dialect, ReportKind, Role
from capbatch.emulator._replies import json_reply
from capbatch.emulator._state import Task

if TYPE_CHECKING:
    from capbatch.emulator._app import Emulator


async def handle_report(
    emulator: Emulator, request: web.Request, *, kind: ReportKind
) -> web.StreamResponse:
    """One report of ``kind`` (the endpoint's), in the emulator's dialect."""
    body = await emulator.authorised(request, "bad_request")
    if isinstance(body, web.Response):
        return body
    state, dialect = emulator.state, emulator.dialect
    now = state.now()
    task_id = dialect.read_id(body.get("taskId"))
    task = state.lookup(task_id, now)
    if task is None:
        return _refuse(emulator, task_id, kind, "unknown_task", "Task not found or expired")
    outcome: dict[str, Any] = {}
    if kind == "feedback":
        result = body.get("result")
        if not isinstance(result, dict):
            return _refuse(emulator, task_id, kind, "no_result", "result is missing")
        outcome["invalid"] = bool(result.get("invalid"))
        state.counters.feedbacks += 1
        state.counters.feedbacks_invalid += outcome["invalid"]
    refusal = _refusal(dialect, task, now)
    if refusal is not None:
        return _refuse(emulator, task_id, kind, *refusal)
    task.reports += 1
    wrong = kind == "incorrect" or outcome.get("invalid", False)
    refunded = bool(dialect.report_refunds and wrong and task.corrupted)
    refunded = refunded and state.refund(task, "report")
    state.record_report(task.task_id, kind, {"accepted": True, "refunded": refunded, **outcome})
    return json_reply({**dialect.ok, **dialect.report_reply})


def _refusal(dialect: Dialect, task: Task, now: float) -> tuple[Role, str] | None:
    """Why the dialect does not take a report of ``task`` now, or None."""
    if dialect.report_needs_done and (not task.resolved or task.answer is None):
        return "not_reportable", "Only a solved task can be reported"
    window = dialect.report_window
    if window is not None and now - task.done_at > window:
        return "unknown_task", f"Reports are taken within {window:g} s of completion"
    if dialect.report_once and task.reports:
        return "reported_twice", "Only one report can be sent per task"
    return None


def _refuse(
    emulator: Emulator, task_id: str | None, kind: ReportKind, role: Role, description: str
) -> web.Response:
    reply = emulator.error(role, description)
    outcome = {"accepted": False, "error": emulator.dialect.code(role)}
    emulator.state.record_report(task_id, kind, outcome)
    return reply
