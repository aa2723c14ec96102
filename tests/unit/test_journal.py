"""The write-ahead journal: states, resume reads, durability across connections."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from capbatch._exceptions import ConfigError
from capbatch._journal import Journal


def result_kwargs(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "status": "solved",
        "answer": "ab12",
        "solution": {"text": "ab12"},
        "error_code": None,
        "error_message": None,
        "cost": 0.0004,
        "task_id": "t-1",
        "polls": 2,
        "finished_at": 2000.0,
        "latency_ms": 1500.0,
        "queue_ms": 3.0,
    }
    base.update(overrides)
    return base


def test_intent_created_done_lifecycle(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k1", owner="0", provider="capsolver", submitted_at=1000.0)
    entry = journal.get("k1")
    assert entry is not None and entry.state == "intent" and entry.attempts == 1
    journal.record_created("k1", "t-1", created_at=1000.5)
    entry = journal.get("k1")
    assert entry is not None and entry.state == "created" and entry.task_id == "t-1"
    journal.record_result("k1", **result_kwargs())  # type: ignore[arg-type]
    entry = journal.get("k1")
    assert entry is not None and entry.done
    assert entry.answer == "ab12" and entry.solution == {"text": "ab12"}
    assert entry.owner == "0" and entry.submitted_at == 1000.0 and entry.polls == 2
    assert journal.counts() == {"done": 1}
    journal.close()


def test_retry_keeps_first_submit_time_and_counts_attempts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k", owner="3", provider="p", submitted_at=10.0)
    journal.record_created("k", "t-1", created_at=11.0)
    journal.record_intent("k", owner="3", provider="p", submitted_at=20.0)
    entry = journal.get("k")
    assert entry is not None
    assert entry.attempts == 2 and entry.submitted_at == 10.0
    assert entry.task_id is None and entry.state == "intent"


def test_spent_money_adds_up_with_the_final_cost(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k", owner="0", provider="p", submitted_at=1.0)
    journal.record_spent("k", 0.0007)  # a charged unsolvable attempt
    journal.record_result("k", **result_kwargs(cost=0.0007))  # type: ignore[arg-type]
    entry = journal.get("k")
    assert entry is not None and entry.cost == pytest.approx(0.0014)
    assert journal.total_spent() == pytest.approx(0.0014)


def test_result_for_a_key_never_sent(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_result(
        "k",
        **result_kwargs(status="failed", answer=None, solution=None, error_code="X", cost=0.0),  # type: ignore[arg-type]
        owner="7",
        provider="capsolver",
    )
    entry = journal.get("k")
    assert entry is not None and entry.done and entry.owner == "7" and entry.error_code == "X"


def test_unfinished_and_get_many(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    for i in range(1200):  # more than one SQLite parameter chunk
        journal.record_intent(f"k{i}", owner=str(i), provider="p", submitted_at=1.0)
    journal.record_created("k5", "t5", created_at=2.0)
    journal.record_result("k6", **result_kwargs())  # type: ignore[arg-type]
    found = journal.get_many([f"k{i}" for i in range(1200)] + ["missing"])
    assert len(found) == 1200 and "missing" not in found
    unfinished = {e.key for e in journal.unfinished()}
    assert "k6" not in unfinished and "k5" in unfinished and len(unfinished) == 1199
    journal.record_uncertain("k7")
    assert journal.get("k7").uncertain == 1  # type: ignore[union-attr]


def test_forget_never_drops_a_done_key(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_result("done", **result_kwargs())  # type: ignore[arg-type]
    journal.record_intent("open", owner="1", provider="p", submitted_at=1.0)
    journal.forget("done")
    journal.forget("open")
    assert journal.get("done") is not None and journal.get("open") is None


def test_meta_and_schema_version_guard(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.set_meta("a", "1")
    journal.set_meta("a", "2")
    assert journal.get_meta("a") == "2"
    journal.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema 99"):
        Journal(path)


def test_not_a_database_is_a_clean_config_error(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot open the journal"):
        Journal(path)


def _write_then_die(path: str) -> None:
    journal = Journal(path)
    journal.record_intent("k", owner="0", provider="p", submitted_at=1.0)
    journal.record_created("k", "task-42", created_at=2.0)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: like kill -9


def test_committed_steps_survive_kill_9(tmp_path: Path) -> None:
    path = str(tmp_path / "j.sqlite")
    proc = multiprocessing.get_context("fork").Process(target=_write_then_die, args=(path,))
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    entry = Journal(path).get("k")
    assert entry is not None and entry.state == "created" and entry.task_id == "task-42"


def test_a_second_run_cannot_open_a_journal_in_use(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    first = Journal(path)
    with pytest.raises(ConfigError, match="in use by another capbatch run"):
        Journal(path)
    first.close()
    Journal(path).close()  # free again once the first run is done
