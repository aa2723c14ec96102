"""The emulator's dialect descriptions as data: every situation has a code in every
dialect, ids have their types, bans follow their rule, replies their dialect's shape.

The same behaviour over real HTTP is in ``tests/e2e/test_dialects.py``.
"""

from __future__ import annotations

import io
import uuid
from typing import get_args

import pytest
from PIL import Image

from capbatch._exceptions import ConfigError
from capbatch.emulator import EmulatorConfig
from capbatch.emulator._bans import Bans
from capbatch.emulator._dialects import DIALECT_NAMES, DIALECTS, BanRule, Role
from capbatch.emulator._replies import ImageChecker, task_reply
from capbatch.emulator._state import EmulatorState, Task


def test_every_dialect_names_a_code_for_every_situation() -> None:
    roles = set(get_args(Role))
    assert set(DIALECT_NAMES) == set(DIALECTS)
    for dialect in DIALECTS.values():
        assert set(dialect.codes) == roles, dialect.name
        assert all(code.isupper() and " " not in code for code in dialect.codes.values())


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_ids_have_the_dialects_type_and_read_back(name: str) -> None:
    dialect = DIALECTS[name]
    keys = [dialect.new_id(serial) for serial in range(3)]
    assert len(set(keys)) == 3
    for key in keys:
        wire = dialect.wire_id(key)
        assert dialect.read_id(wire) == key
        if name == "capsolver":
            assert uuid.UUID(str(wire)).version == 4
        else:
            assert isinstance(wire, int)
            assert dialect.read_id(str(wire)) is None  # a string is not an integer id
            assert dialect.read_id(True) is None
    if name == "twocaptcha":
        assert all(len(key) >= 11 for key in keys)


def test_error_ids_and_statuses() -> None:
    cs, ac, cm, tc = (DIALECTS[n] for n in DIALECT_NAMES)
    assert (cs.status("ERROR_KEY_DENIED_ACCESS"), cs.status("ERROR_ZERO_BALANCE")) == (401, 400)
    assert cs.status("ERROR_RATE_LIMIT") == 429
    for dialect in (ac, cm, tc):
        assert dialect.status(dialect.code("bad_key")) == 200
    assert (ac.error_id("ERROR_NO_SUCH_CAPCHA_ID"), tc.error_id("ERROR_CAPTCHA_UNSOLVABLE")) == (
        16,
        12,
    )
    assert ac.error_id("ERROR_TASK_ABSENT") == tc.error_id("ERROR_TASK_ABSENT") == 22
    assert cm.error_id("ERROR_NO_SUCH_CAPCHA_ID") == cs.error_id("ERROR_TASKID_INVALID") == 1


def test_bans_follow_their_rule() -> None:
    bans = Bans(BanRule(strikes=3, window=10.0, duration=600.0))
    bans.offend("WrongTaskId", 0.0)
    bans.offend("WrongTaskId", 5.0)
    bans.offend("KeyDoesntExist", 6.0)  # another reason counts apart
    assert bans.active(6.0) is None
    bans.offend("WrongTaskId", 11.0)  # the one at 0.0 left the window
    assert bans.active(11.0) is None
    bans.offend("WrongTaskId", 12.0)
    assert bans.active(12.0) == "WrongTaskId"
    assert bans.active(611.9) == "WrongTaskId" and bans.active(612.0) is None
    assert bans.snapshot(12.0) == {
        "bans": {"WrongTaskId": 1},
        "banned": "WrongTaskId",
        "banned_for": 600.0,
    }
    bans.reset_counts()
    assert bans.snapshot(12.0)["bans"] == {} and bans.active(12.0) == "WrongTaskId"
    never = Bans(None)
    for at in range(100):
        never.offend("KeyDoesntExist", float(at))
    assert never.active(100.0) is None


def _task(state: EmulatorState, answer: str | None, *, resolved: bool = True) -> Task:
    task = state.new_task(
        "d" * 64, 10.0, state.task_rolls(), deferred=True, reserved=400_000, callback_url=None
    )
    task.resolved, task.answer, task.done_at, task.ip = resolved, answer, 12.0, "127.0.0.1"
    if resolved:
        state.settle(task, solved=answer is not None)
    return task


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_reply_shapes(name: str) -> None:
    state = EmulatorState(EmulatorConfig(dialect=name))  # type: ignore[arg-type]
    dialect = state.dialect
    pending, status = task_reply(dialect, _task(state, None, resolved=False), 11.0, lambda t: 0)
    assert status == 200 and pending["status"] in ("idle", "processing")
    ready, status = task_reply(dialect, _task(state, "ab3xy"), 13.0, lambda t: int(t) + 1000)
    assert status == 200 and ready["solution"]["text"] == "ab3xy"
    assert isinstance(ready["solution"].get("url", ""), str)
    assert ("url" in ready["solution"]) == (name == "anticaptcha")
    if name in ("anticaptcha", "twocaptcha"):
        assert ready["cost"] == {"anticaptcha": "0.000400", "twocaptcha": "0.00040"}[name]
        assert (ready["createTime"], ready["endTime"]) == (1010, 1012)
    else:
        assert "cost" not in ready
    failed, status = task_reply(dialect, _task(state, None), 13.0, lambda t: 0)
    assert failed["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert status == (400 if name == "capsolver" else 200)
    assert ("status" in failed) == (name == "capsolver")


def test_unsolvable_money_per_dialect() -> None:
    spent = {}
    for name in DIALECT_NAMES:
        state = EmulatorState(EmulatorConfig(dialect=name, balance=1.0))  # type: ignore[arg-type]
        state.reserved += 400_000
        _task(state, None)
        spent[name] = (1.0 - state.balance / 1e9, state.refunded / 1e9, state.reserved)
    assert spent == {
        "capsolver": (0.0, 0.0, 0),
        "anticaptcha": (pytest.approx(0.0004), 0.0, 0),
        "capmonster": (0.0, 0.0, 0),
        "twocaptcha": (0.0, pytest.approx(0.0004), 0),
    }


def test_image_checker_gives_the_size_or_none() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (33, 7)).save(buf, "PNG")
    check = ImageChecker()
    assert check(buf.getvalue(), "a") == (33, 7)
    assert check(buf.getvalue(), "a") == (33, 7)  # cached
    assert check(b"not an image", "b") is None


def test_config_checks_the_dialect_and_the_clock() -> None:
    assert EmulatorConfig().dialect == "capsolver"
    with pytest.raises(ConfigError, match="dialect"):
        EmulatorConfig(dialect="deathbycaptcha")  # type: ignore[arg-type]
    for bad in (-1.0, float("nan"), 1e12, True):
        with pytest.raises(ConfigError, match="clock_offset"):
            EmulatorConfig(clock_offset=bad)
    with pytest.raises(ConfigError, match="fixed"):
        EmulatorConfig().merged({"dialect": "twocaptcha"})
