"""The task solver of a run with callbacks: createTask carries the run's ``callbackUrl``,
and a deferred task waits for its callback, with polling as the fallback.

``CallbackSolver`` is a ``TaskSolver`` whose deferred tasks are first polled only after
``callbacks.fallback_delay`` (the receiver usually answers long before), then on the
provider's usual interval; a callback that arrives meanwhile ends the wait and is used
exactly as a polled reply would be (``TaskSolver`` journals and charges it the same way).
Every task id it stops waiting on is ``finish``-ed in the ``CallbackBox``, so a callback
that comes after a poll already answered it is ignored, never paid or journaled twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from capbatch._exceptions import CapbatchError
from capbatch._providers.client import TaskService
from capbatch._providers.errors import Action, classify
from capbatch._providers.protocol import TaskReply
from capbatch._providers.secrets import Secret
from capbatch._run.callbacks import (
    CallbackBox,
    CallbackReceiver,
    Heard,
    fallback_delay,
)
from capbatch._run.job import Job, JobState
from capbatch._run.task import TaskSolver

if TYPE_CHECKING:
    from capbatch._run.options import RunOptions

#: Errors a callback may end a task with: the task's own outcome (unsolvable, refused).
#: Anything else a callback says is left for the fallback poll to find out.
_CALLBACK_ERRORS = (Action.RETRY_BOUNDED, Action.RECORD)


def solver_type(options: RunOptions, key: Secret | None) -> Callable[..., TaskSolver]:
    """``TaskSolver``, or ``CallbackSolver`` bound to the callback flags when given."""
    if options.callback_url is None or options.callback_listen is None:
        return TaskSolver
    return functools.partial(
        CallbackSolver, callback_url=options.callback_url, listen=options.callback_listen, key=key
    )


async def start_callbacks(solver: TaskSolver) -> None:
    """Start the solver's receiver, if it has one (a ConfigError if it cannot listen)."""
    if isinstance(solver, CallbackSolver) and solver.receiver is not None:
        await solver.receiver.start()


async def stop_callbacks(solver: TaskSolver) -> None:
    """Stop the receiver; early callbacks no task claimed are counted refused."""
    if isinstance(solver, CallbackSolver) and solver.receiver is not None:
        await solver.receiver.stop()
        solver.tally.callbacks_refused += solver.box.unclaimed()


class CallbackService:
    """A ``TaskService`` whose createTask carries a slot's ``callbackUrl`` and tells the
    ``CallbackBox`` which task the slot names. The token is cut out of any error text."""

    def __init__(self, inner: TaskService, box: CallbackBox) -> None:
        self.inner = inner
        self.box = box

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> TaskReply:
        box = self.box
        slot, url = box.open()
        try:
            reply = await self.inner.create_task(task, callback_url=url)
        except CapbatchError as exc:
            box.close(slot)
            if box.token in exc.message:
                exc.message = exc.message.replace(box.token, "<token>")
                exc.args = (exc.message,)
            raise
        except BaseException:
            box.close(slot)
            raise
        if reply.task_id is None:
            box.close(slot)
            return reply
        box.bind(slot, reply.task_id)
        if reply.ready:
            box.finish(reply.task_id)  # answered at once: its callback is a repeat
        return reply

    async def get_task_result(self, task_id: str) -> TaskReply:
        return await self.inner.get_task_result(task_id)

    async def get_balance(self) -> float | None:
        return await self.inner.get_balance()

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        return await self.inner.report_incorrect(task_id, message=message)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CallbackSolver(TaskSolver):
    """A ``TaskSolver`` that waits for callbacks and polls only as the fallback."""

    def __init__(
        self,
        *args: Any,
        callback_url: str,
        listen: str,
        key: Secret | None,
        box: CallbackBox | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        #: ``box``: a receiver's box shared with others (a Ray worker's ``HubBox``);
        #: else this solver's own, and its receiver.
        self.receiver: CallbackReceiver | None = None
        if box is None:
            mask = key.mask if key else None
            box = CallbackBox(
                callback_url, self.profile, tally=self.tally, clock=self.clock, mask=mask
            )
            self.receiver = CallbackReceiver(box, listen)
        self.box = box
        self.service = CallbackService(self.service, self.box)
        #: Seconds from createTask's reply to a task's first (fallback) poll.
        self.fallback = fallback_delay(self.profile.poll)

    async def _create(self, job: Job, state: JobState) -> TaskReply | None:
        reply = await super()._create(job, state)
        if state.task_id is not None and state.paced and state.created_mono is not None:
            # Just created: the first poll is the fallback's, and teaches the pacer
            # nothing (the callback, not the poll, is how answers come).
            state.paced = False
            state.next_poll = state.created_mono + self.fallback
        return reply

    async def _poll(self, job: Job, state: JobState) -> TaskReply | None:
        task_id = state.task_id
        assert task_id is not None
        heard = await self.box.wait(task_id, self._poll_due(state) - self.clock.now())
        if heard is not None:
            return await self._use(job, state, task_id, heard)
        polls = state.polls
        try:
            reply = await super()._poll(job, state)
        except BaseException:
            self.box.finish(task_id)
            raise
        if state.polls > polls:
            self.tally.fallback_polls += 1
        if state.task_id != task_id or (reply is not None and reply.ready):
            self.box.finish(task_id)
        return reply

    async def _use(self, job: Job, state: JobState, task_id: str, heard: Heard) -> TaskReply | None:
        """A callback's outcome for the task: used as a poll's would be, or ignored."""
        if isinstance(heard, CapbatchError):
            if classify(heard) not in _CALLBACK_ERRORS:
                self.tally.callbacks_ignored += 1
                return None
            self.tally.callbacks_used += 1
            self.box.finish(task_id)
            await self._handle(job, state, heard, creating=False)
            return None
        if not heard.ready:
            self.tally.callbacks_ignored += 1
            return None
        self.tally.callbacks_used += 1
        self.box.finish(task_id)
        state.failures = 0
        return heard
