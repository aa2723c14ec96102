"""The write-ahead journal: states, resume reads, durability across connections."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from capbatch._exceptions import ConfigError, InUseError, JournalDamaged, JournalError
from capbatch._io.record import JOURNAL_COLUMNS, RowResult
from capbatch._run.journal import Journal, JournalEntry


def final(**overrides: Any) -> RowResult:
    """A task's final result as the solver journals it."""
    base: dict[str, Any] = {
        "status": "solved",
        "answer": "ab12",
        "solution": {"text": "ab12"},
        "cost_usd": 0.0004,
        "task_id": "t-1",
        "polls": 2,
        "finished_at": 2000.0,
        "latency_ms": 1500.0,
        "queue_ms": 3.0,
    }
    base.update(overrides)
    return RowResult(**base)


def entry_of(journal: Journal, key: str) -> JournalEntry | None:
    """``key``'s entry, read as the runner reads it (``get_many``)."""
    return journal.get_many([key]).get(key)


def test_intent_created_done_lifecycle(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k1", owner="0", provider="capsolver", submitted_at=1000.0)
    entry = entry_of(journal, "k1")
    assert entry is not None and entry.state == "intent" and entry.result.attempts == 1
    journal.record_created("k1", "t-1", created_at=1000.5)
    entry = entry_of(journal, "k1")
    assert entry is not None and entry.state == "created" and entry.result.task_id == "t-1"
    journal.record_result("k1", final())
    entry = entry_of(journal, "k1")
    assert entry is not None and entry.done
    assert entry.result.answer == "ab12" and entry.result.solution == {"text": "ab12"}
    assert entry.owner == "0" and entry.result.submitted_at == 1000.0 and entry.result.polls == 2
    assert journal.counts() == {"done": 1}
    journal.close()


def test_retry_keeps_first_submit_time_and_counts_attempts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k", owner="3", provider="p", submitted_at=10.0)
    journal.record_created("k", "t-1", created_at=11.0)
    journal.record_intent("k", owner="3", provider="p", submitted_at=20.0)
    entry = entry_of(journal, "k")
    assert entry is not None
    assert entry.result.attempts == 2 and entry.result.submitted_at == 10.0
    assert entry.result.task_id is None and entry.state == "intent"


def test_spent_money_adds_up_with_the_final_cost(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k", owner="0", provider="p", submitted_at=1.0)
    journal.record_spent("k", 0.0007)  # a charged unsolvable attempt
    journal.record_result("k", final(cost_usd=0.0007))
    entry = entry_of(journal, "k")
    assert entry is not None and entry.result.cost_usd == pytest.approx(0.0014)
    assert journal.total_spent() == pytest.approx(0.0014)


def test_result_for_a_key_never_sent(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_result(
        "k",
        final(
            status="failed",
            answer=None,
            solution=None,
            error_code="X",
            cost_usd=0.0,
            provider="capsolver",
        ),
        owner="7",
    )
    entry = entry_of(journal, "k")
    assert entry is not None and entry.done and entry.owner == "7"
    assert entry.result.error_code == "X"


def test_get_many_and_counts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    for i in range(1200):  # more than one SQLite parameter chunk
        journal.record_intent(f"k{i}", owner=str(i), provider="p", submitted_at=1.0)
    journal.record_created("k5", "t5", created_at=2.0)
    journal.record_result("k6", final())
    found = journal.get_many([f"k{i}" for i in range(1200)] + ["missing"])
    assert len(found) == 1200 and "missing" not in found
    assert found["k5"].state == "created" and found["k6"].done
    assert journal.counts() == {"intent": 1198, "created": 1, "done": 1}
    journal.record_uncertain("k7")
    entry = entry_of(journal, "k7")
    assert entry is not None and entry.uncertain == 1 and entry.state == "lost"
    assert journal.total_uncertain() == 1


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
    with pytest.raises(JournalDamaged, match="damaged or not a capbatch journal") as caught:
        Journal(path)
    assert isinstance(caught.value, ConfigError)  # exit status 2: nothing was sent


# --- integrity: a damaged journal is refused before it can cost money -------------------


def _answered_journal(path: Path, rows: int = 240) -> list[str]:
    """A closed journal with ``rows`` answered keys (content-hash-like, as the runner's)."""
    journal = Journal(path)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)]
    for i, key in enumerate(keys):
        journal.record_intent(key, owner=str(i), provider="capsolver", submitted_at=1.0)
        journal.record_result(key, final(task_id=f"t-{i}"))
    journal.close()
    return keys


def _pages(path: Path, name: str) -> list[int]:
    """The leaf pages of table or index ``name`` (SQLite's dbstat view)."""
    db = sqlite3.connect(path)
    try:
        sql = "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno"
        return [int(row[0]) for row in db.execute(sql, (name,))]
    finally:
        db.close()


def test_a_damaged_key_index_is_refused_though_quick_check_passes(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    keys = _answered_journal(path)
    # Change the last character of every key stored in one leaf page of the key index:
    # the page stays well-formed, but those answered keys are no longer found.
    page = _pages(path, "sqlite_autoindex_tasks_1")[0]
    data = bytearray(path.read_bytes())
    start, size = (page - 1) * 4096, 4096
    flipped = 0
    for key in keys:
        at = data.find(key.encode(), start, start + size)
        if at >= 0:
            data[at + 63] = ord("0") if data[at + 63] != ord("0") else ord("1")
            flipped += 1
    assert flipped > 10
    path.write_bytes(bytes(data))
    db = sqlite3.connect(path)
    # Why the full check: the quick one passes this file, and lookups miss the keys,
    # so a run would send (and pay for) those answered rows again.
    assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    marks = ",".join("?" * len(keys))
    found = db.execute(f"SELECT COUNT(*) FROM tasks WHERE key IN ({marks})", keys).fetchone()
    assert found[0] == len(keys) - flipped
    db.close()
    with pytest.raises(JournalDamaged) as caught:
        Journal(path)
    message = str(caught.value)
    assert str(path) in message and "missing from index" in message
    assert "move it aside" in message and "pays again for every row" in message
    assert "restore it from a backup" in message and "\n" not in message
    # Refused without keeping SQLite's exclusive lock: the user can open it to inspect it.
    other = sqlite3.connect(path, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.close()


def test_a_zeroed_table_page_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _answered_journal(path)
    page = _pages(path, "tasks")[1]
    data = bytearray(path.read_bytes())
    data[(page - 1) * 4096 : page * 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalDamaged, match=r"is damaged .*move it aside"):
        Journal(path)


def test_a_healthy_journal_reopens_with_its_answers(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    keys = _answered_journal(path)
    journal = Journal(path)
    assert len(journal.get_many(keys)) == len(keys)
    journal.close()


# --- every later SQLite failure is a JournalError naming the journal ---------------------


def test_disk_full_is_a_journal_error_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.record_result("first", final())
    # SQLite's own size cap gives the very error a full disk gives: SQLITE_FULL.
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(JournalError) as caught:
        for i in range(10_000):  # bounded: the cap is hit within a few pages
            journal.record_result(f"k{i}", final(error_message="x" * 500))
    message = str(caught.value)
    assert str(path) in message and "database or disk is full" in message
    assert caught.value.path == str(path) and not isinstance(caught.value, ConfigError)
    assert entry_of(journal, "first") is not None  # the journal still reads
    journal.close()
    again = Journal(path)
    first = entry_of(again, "first")
    assert first is not None and first.done
    again.close()


def test_every_method_raises_journal_error_not_sqlite_error(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal._db.close()  # any sqlite3 error will do: "Cannot operate on a closed database"
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = [
        ("get_meta", ("a",), {}),
        ("set_meta", ("a", "1"), {}),
        ("get_many", (["k"],), {}),
        ("counts", (), {}),
        ("record_intent", ("k",), {"owner": "0", "provider": "p", "submitted_at": 1.0}),
        ("record_uncertain", ("k",), {}),
        ("record_created", ("k", "t"), {"created_at": 1.0}),
        ("record_result", ("k", final()), {}),
        ("record_spent", ("k", 0.1), {}),
        ("total_uncertain", (), {}),
        ("total_spent", (), {}),
        ("reports", (["t"],), {}),
        (
            "record_report",
            ("t",),
            {"provider": "p", "outcome": "reported", "detail": None, "at": 1.0},
        ),
    ]
    public = {
        name
        for name in dir(Journal)
        if not name.startswith("_") and callable(getattr(Journal, name))
    }
    assert public == {name for name, _, _ in calls} | {"close"}, "a new method needs a case"
    for name, args, kwargs in calls:
        with pytest.raises(JournalError, match=re.escape(str(path))):
            getattr(journal, name)(*args, **kwargs)
    journal.close()  # on the way out: quiet, and safe to repeat


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
    entry = entry_of(Journal(path), "k")
    assert entry is not None and entry.state == "created" and entry.result.task_id == "task-42"


def test_a_second_run_cannot_open_a_journal_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Journal, "LOCK_TIMEOUT", 0.01)  # SQLite's busy wait, not 2 s
    path = tmp_path / "j.sqlite"
    first = Journal(path)
    with pytest.raises(InUseError, match="in use by another capbatch run") as caught:
        Journal(path)
    # Safe advice only: another --journal with the same -o would run both and pay twice.
    assert "--journal" not in str(caught.value)
    assert "wait for it to finish, or stop it; to run a different job use a different -o" in str(
        caught.value
    )
    first.close()
    Journal(path).close()  # free again once the first run is done


# --- the journal's columns are the result record's ---------------------------------


def every_field_set() -> RowResult:
    """A result with every journaled field away from its default, whatever the fields
    are: a field added to ``RowResult`` is covered without editing this test."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(RowResult):
        kind = str(field.type)
        if field.metadata["journal"] is None:
            continue  # not journaled (from_cache: said by who paid; the cascade's local_*)
        if field.name == "status":
            values[field.name] = "failed"
        elif field.name == "solution":
            values[field.name] = {"text": "q7", "n": [1, 2]}
        elif kind.startswith("int"):
            values[field.name] = 3
        elif kind.startswith("float"):
            values[field.name] = 1234.5
        else:
            values[field.name] = f"{field.name}-value"
    return RowResult(**values)


def test_a_final_result_comes_back_whole_for_the_row_that_paid(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_intent("k", owner="0", provider="ignored", submitted_at=1.0)
    written = every_field_set()
    journal.record_result("k", written, owner="0")
    entry = entry_of(journal, "k")
    assert entry is not None and entry.done
    # attempts is the journal's own count (one createTask journaled), not the write's.
    assert entry.result == dataclasses.replace(
        written, attempts=1, provider="ignored", submitted_at=1.0
    )


def test_the_table_has_a_column_for_every_journaled_field(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.close()
    db = sqlite3.connect(tmp_path / "j.sqlite")
    names = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
    db.close()
    journaled = {f.name for f in dataclasses.fields(RowResult) if f.metadata["journal"]}
    assert journaled >= {"answer", "cost_usd", "confidence"} and "from_cache" not in journaled
    assert {c.field for c in JOURNAL_COLUMNS} == journaled
    assert {c.name for c in JOURNAL_COLUMNS} <= names
    assert "cost" in names and "cost_usd" not in names  # the journal's older name


def test_a_journal_from_before_a_column_existed_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    newest = JOURNAL_COLUMNS[-1]
    journal = Journal(path)
    journal.record_result("old", final())
    journal.close()
    db = sqlite3.connect(path)  # the file as an older capbatch wrote it
    db.execute(f"ALTER TABLE tasks DROP COLUMN {newest.name}")
    db.close()
    journal = Journal(path)
    entry = entry_of(journal, "old")
    assert entry is not None and entry.done and entry.result.answer == "ab12"
    journal.record_result("new", final())
    entry = entry_of(journal, "new")
    assert entry is not None
    assert getattr(entry.result, newest.field) == getattr(final(), newest.field)
