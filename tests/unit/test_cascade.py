"""The cascade's local stage (``--local-first``): the gate, both stages journaled, the
local reading beside every result, and nothing read or paid twice on a resume."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from capbatch._exceptions import ConfigError, InvalidTask
from capbatch._providers.protocol import TaskReply
from capbatch._run.cascade import (
    LOCAL_PREFIX,
    CascadeCounts,
    LocalStage,
    cascade_job,
    check_threshold,
)
from capbatch._run.journal import Journal
from capbatch._run.results import confidence_of
from capbatch._run.task import solve_job
from tests.unit.test_scheduler import JOB, PRICE, FakeProvider, error, make_solver, ok_ready


class FakeLocal:
    """A local solver answering from a script: text and confidence per task body."""

    def __init__(self, readings: Mapping[str, tuple[str, float] | Exception]) -> None:
        self.readings = readings
        self.calls = 0

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> TaskReply:
        self.calls += 1
        reading = self.readings[task["body"]]
        if isinstance(reading, Exception):
            raise reading
        text, confidence = reading
        solution = {"text": text, "confidence": confidence}
        return TaskReply(task_id=None, status="ready", raw_status="ready", solution=solution)


def job(body: str, key: str) -> Any:
    return dataclasses.replace(JOB, key=key, row_key=key, task={**JOB.task, "body": body})


def stage_for(local: FakeLocal, journal: Journal, threshold: float = 0.9) -> LocalStage:
    return LocalStage(local, journal, threshold, CascadeCounts(threshold))  # type: ignore[arg-type]


async def test_a_confident_local_answer_is_kept_and_nothing_is_paid() -> None:
    provider = FakeProvider(createTask=[ok_ready("paid")])
    solver, journal, _ = make_solver(provider)
    stage = stage_for(FakeLocal({"aGVsbG8=": ("ab12", 0.97)}), journal)
    result = await cascade_job(stage, solver, JOB)
    assert result.status == "solved" and result.answer == "ab12" and result.provider == "local"
    assert result.confidence == 0.97 and result.cost_usd == 0
    assert (result.local_answer, result.local_confidence) == ("ab12", 0.97)
    assert provider.calls == [] and solver.spend.committed() == 0
    assert (stage.counts.kept, stage.counts.sent_on, stage.counts.read) == (1, 0, 1)
    local_entry = journal.get_many([LOCAL_PREFIX + JOB.key])[LOCAL_PREFIX + JOB.key]
    assert local_entry.done and local_entry.result.confidence == 0.97
    assert JOB.key not in journal.get_many([JOB.key])  # the paid stage never started


@pytest.mark.parametrize(
    "reading",
    [
        ("ab1", 0.89),
        ("", 0.99),
        InvalidTask("cannot read the image", error_code="ERROR_INVALID_IMAGE"),
    ],
    ids=["below the threshold", "no text", "the local solver failed"],
)
async def test_other_rows_go_on_to_the_provider_with_the_local_reading_beside(
    reading: tuple[str, float] | Exception,
) -> None:
    provider = FakeProvider(createTask=[ok_ready("paid")])
    solver, journal, _ = make_solver(provider)
    stage = stage_for(FakeLocal({"aGVsbG8=": reading}), journal)
    result = await cascade_job(stage, solver, JOB)
    assert result.answer == "paid" and result.provider == "capsolver"
    assert result.cost_usd == pytest.approx(PRICE) and provider.count("createTask") == 1
    if isinstance(reading, tuple):
        assert result.local_answer == (reading[0] or None)
        assert result.local_confidence == reading[1]
    else:
        assert result.local_answer is None and result.local_confidence is None
    assert stage.counts.sent_on == 1 and stage.counts.kept == 0


async def test_a_row_the_provider_fails_still_carries_the_local_reading() -> None:
    provider = FakeProvider(createTask=[error("ERROR_INVALID_TASK_DATA")])
    solver, journal, _ = make_solver(provider)
    stage = stage_for(FakeLocal({"aGVsbG8=": ("ab1", 0.5)}), journal)
    result = await cascade_job(stage, solver, JOB)
    assert result.status == "failed" and result.error_code == "ERROR_INVALID_TASK_DATA"
    assert (result.local_answer, result.local_confidence) == ("ab1", 0.5)


async def test_a_resume_reads_nothing_again_and_a_new_threshold_decides_from_the_journal(
    tmp_path: Any,
) -> None:
    provider = FakeProvider(createTask=[ok_ready("paid")])
    solver, _, _ = make_solver(provider)
    journal = Journal(tmp_path / "j.sqlite")
    solver.journal = journal
    local = FakeLocal({"aGVsbG8=": ("ab12", 0.95), "d29ybGQ=": ("zz", 0.5)})
    first = stage_for(local, journal, threshold=0.9)
    confident, unsure = job("aGVsbG8=", "k1"), job("d29ybGQ=", "k2")
    assert (await cascade_job(first, solver, confident)).provider == "local"
    assert (await cascade_job(first, solver, unsure)).answer == "paid"
    assert local.calls == 2 and provider.count("createTask") == 1
    journal.close()
    # The same journal reopened, the gate raised: the confident row's reading is reused
    # (no second reading) and now sends it on; the paid row is the journal's (the batch
    # runner reuses it before the cascade) and gets its local reading beside it.
    journal = Journal(tmp_path / "j.sqlite")
    solver.journal = journal
    again = stage_for(local, journal, threshold=0.99)
    result = await cascade_job(again, solver, confident)
    assert result.answer == "paid" and result.local_confidence == 0.95
    assert local.calls == 2 and again.counts.reused == 1 and again.counts.read == 0
    paid = journal.get_many(["k2"])["k2"].result
    annotated = again.annotate_reused("k2", paid)
    assert (annotated.answer, annotated.local_answer, annotated.local_confidence) == (
        "paid",
        "zz",
        0.5,
    )
    assert again.annotate_reused("unknown", paid) == paid


@pytest.mark.parametrize(
    ("value", "task_type", "local", "message"),
    [
        (1.5, "ImageToTextTask", False, "from 0 to 1"),
        (-0.1, "ImageToTextTask", False, "from 0 to 1"),
        (0.9, "ImageToTextTask", True, "paid provider"),
        (0.9, "ReCaptchaV2Classification", False, "no confidence"),
    ],
)
def test_bad_local_first_settings_stop_before_anything(
    value: float, task_type: str, local: bool, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_threshold(value, task_type, provider_is_local=local)
    check_threshold(None, task_type, provider_is_local=local)
    check_threshold(0.98, "ImageToTextTask", provider_is_local=False)


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ({"text": "a", "confidence": 0.5}, 0.5),
        ({"text": "a", "confidence": 1}, 1.0),
        ({"text": "a", "confidence": True}, None),
        ({"text": "a", "confidence": float("nan")}, None),
        ({"text": "a", "confidence": 1.01}, None),
        ({"text": "a", "confidence": "0.9"}, None),
        ({"text": "a"}, None),
        (None, None),
    ],
)
def test_only_a_number_from_0_to_1_is_a_confidence(solution: Any, expected: float | None) -> None:
    assert confidence_of(solution) == expected


async def test_a_provider_that_sends_a_confidence_fills_the_column() -> None:
    body = {"errorId": 0, "status": "ready", "solution": {"text": "q", "confidence": 0.8}}
    provider = FakeProvider(createTask=[(200, body, {})])
    solver, _, _ = make_solver(provider)
    result = await solve_job(solver, JOB)
    assert result.answer == "q" and result.confidence == 0.8
