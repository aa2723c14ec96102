"""The write-ahead journal: every paid step on disk before the next one is taken.

One SQLite file (stdlib ``sqlite3``, WAL mode) per output. A task moves through
``intent`` (written just before ``createTask`` is sent), ``created`` (its ``taskId`` as
soon as the reply arrives) and ``done`` (the final result). Each write is committed
before the request it guards is sent; in WAL mode a commit is a ``write()`` to the
log, so it survives ``kill -9`` (though not a power cut: ``synchronous=NORMAL`` is the
documented trade-off for WAL, and the worst case is one more possible double payment).

Tasks are keyed by content (``_io.keys.task_key``): re-running after a crash, or with
rows appended, finds answered keys and never sends them again; a key left ``created``
is polled, not re-created, while the provider still keeps it; a key left at ``intent``
was in flight at the crash and may have been paid: the run counts it.

The account key is never written here: rows hold only task ids, answers and errors.

A journal that fails SQLite's integrity check is refused at open (``JournalDamaged``):
a damaged key index makes answered keys look unanswered, and they would be paid again.
Any SQLite failure later (disk full, I/O error) is a ``JournalError`` naming the path,
never a raw ``sqlite3`` error; SQLite rolls the failed write back, so every step
recorded before it stays.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from capbatch._exceptions import CapbatchError, ConfigError, InUseError, JournalDamaged
from capbatch._io.record import JOURNAL_COLUMNS, STATUSES, RowResult
from capbatch._run.journal_errors import (
    DAMAGED_ADVICE,
    MAX_PROBLEMS,
    error_kind,
    journal_error,
    one_line,
)

SCHEMA_VERSION = "1"
#: Key prefix of the cascade's local readings (``cascade.LocalStage``), kept as tasks of
#: provider ``local`` beside the paid ones.
LOCAL_READING_PREFIX = "local|"

#: The task's own bookkeeping, beside its result columns (``record.JOURNAL_COLUMNS``).
_BOOKKEEPING = """
    key           TEXT PRIMARY KEY,  -- content key (plus the row key with the cache off)
    state         TEXT NOT NULL,     -- intent | lost | created | done
    owner         TEXT,              -- row key of the row that paid for this task
    created_at    REAL,              -- wall time the task id was received (task TTL)
    uncertain     INTEGER NOT NULL DEFAULT 0  -- sends whose outcome is unknown
"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks ({_BOOKKEEPING},
    {", ".join(f"{c.name} {c.sql}" for c in JOURNAL_COLUMNS)}
);
CREATE TABLE IF NOT EXISTS reports (
    task_id     TEXT PRIMARY KEY,  -- one report per task, whichever rows share it
    provider    TEXT,
    outcome     TEXT NOT NULL,     -- record.REPORT_OUTCOMES
    detail      TEXT,              -- why: the provider's error code, the window missed
    reported_at REAL NOT NULL      -- wall time of the attempt
);
"""

_COLUMNS = ", ".join(
    ["key", "state", "owner", "created_at", "uncertain"] + [c.name for c in JOURNAL_COLUMNS]
)


@dataclass(frozen=True)
class JournalEntry:
    """One task's row in the journal: its bookkeeping, and what it holds of the result
    (``result``: status "pending" until the task is done)."""

    key: str
    state: str
    owner: str | None
    created_at: float | None
    uncertain: int
    result: RowResult

    @property
    def done(self) -> bool:
        return self.state == "done"


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    key, state, owner, created_at, uncertain = row[:5]
    values: dict[str, Any] = {}
    for column, value in zip(JOURNAL_COLUMNS, row[5:], strict=True):
        if value is None:
            continue  # the field's default (a count of 0, no cost yet)
        values[column.field] = json.loads(value) if column.encode is not None else value
    status = values.get("status") or ("failed" if state == "done" else "pending")
    values["status"] = status if status in STATUSES else "failed"
    return JournalEntry(key, state, owner, created_at, uncertain, RowResult(**values))


#: Result columns the final write sets, and how each merges with what the row holds.
_WRITTEN = [c for c in JOURNAL_COLUMNS if c.merge != "none"]
_MERGE_SQL = {
    "set": "{c} = excluded.{c}",
    "add": "{c} = COALESCE({c}, 0) + excluded.{c}",
    "keep": "{c} = COALESCE({c}, excluded.{c})",
    "newer": "{c} = COALESCE(excluded.{c}, {c})",
}
_RECORD_RESULT = (
    f"INSERT INTO tasks (key, state, owner, {', '.join(c.name for c in _WRITTEN)}) "  # noqa: S608
    f"VALUES (?, 'done', ?, {', '.join('?' for _ in _WRITTEN)}) "
    "ON CONFLICT(key) DO UPDATE SET state = 'done', owner = COALESCE(owner, excluded.owner), "
    + ", ".join(_MERGE_SQL[c.merge].format(c=c.name) for c in _WRITTEN)
)


def _add_new_columns(db: sqlite3.Connection) -> None:
    """A journal written before a result column existed gets it (empty for its tasks), so
    adding a field to ``RowResult`` needs no migration of its own."""
    have = {str(row[1]) for row in db.execute("PRAGMA table_info(tasks)")}
    for column in JOURNAL_COLUMNS:
        if column.name not in have:
            db.execute(f"ALTER TABLE tasks ADD COLUMN {column.name} {column.sql}")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[Journal, _P], _R],
) -> Callable[Concatenate[Journal, _P], _R]:
    """Turn any ``sqlite3`` error of a journal method into a ``JournalError`` (one line in
    the CLI, a catchable capbatch error in the API), never a raw SQLite traceback. In a
    job, the runner then stops the run with the journal as it stands."""

    @functools.wraps(method)
    def guarded(self: Journal, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from None

    return guarded


class Journal:
    """The SQLite journal of one output. Not thread-safe: use it from one thread.

    Opening takes SQLite's exclusive lock and checks the file's integrity; every method
    raises ``JournalError`` (``JournalDamaged`` for corruption) when SQLite fails."""

    #: Seconds to wait for another run to let go of the journal before giving up.
    LOCK_TIMEOUT = 2.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the folder of the journal {self.path}: {exc.strerror or exc}"
                ) from None
        db: sqlite3.Connection | None = None
        try:
            # One user at a time, but not always the thread that opened it (a dry run reads
            # it from a worker thread).
            db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.LOCK_TIMEOUT,
            )
            # Exclusive: two runs on one journal would each send the other's rows and
            # pay twice, so the second one must not start. It also spares every commit
            # the shared-memory index and its file locks (40 -> 30 us per row here).
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")  # take the lock now, not at the first write
            db.execute("COMMIT")
            if self.path != ":memory:":
                self._check_integrity(db)  # before the first write: never build on damage
            db.executescript(_SCHEMA)
            _add_new_columns(db)
            self._db = db
            self._check_version()
        except BaseException as exc:
            # Close now: a refused journal must not stay locked until garbage collection.
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._open_error(exc) from None
            raise

    def _check_integrity(self, db: sqlite3.Connection) -> None:
        """Refuse a journal that fails SQLite's full ``integrity_check``.

        Not ``quick_check``: only the full check compares each index with its table, and a
        damaged key index makes answered keys look unanswered (sent, and paid, again)
        while ``quick_check`` says "ok" (tests/unit/test_journal.py builds such a file).
        Measured on this project's 2-core VM, warm cache, journals of realistic rows:
        100k rows (28 MB) quick_check 47 ms, integrity_check 0.26 s; 1M rows (288 MB)
        0.43 s and 4.1 s. A run of that many rows takes hours: the full check is cheap
        insurance on every start.
        """
        rows = db.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})").fetchall()
        problems = [str(row[0]) for row in rows]
        if problems != ["ok"]:
            raise JournalDamaged(
                f"the journal {self.path} is damaged ({one_line('; '.join(problems))}): "
                f"{DAMAGED_ADVICE}",
                path=self.path,
            )

    def _check_version(self) -> None:
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise ConfigError(
                f"the journal {self.path} has schema {version}; this capbatch writes "
                f"{SCHEMA_VERSION}. Use another --journal path."
            )

    def _open_error(self, exc: sqlite3.Error) -> CapbatchError:
        """Opening failed: nothing was sent yet."""
        kind = error_kind(exc)
        if kind == "busy":
            return InUseError(
                f"the journal {self.path} is in use by another capbatch run; wait for it to "
                "finish, or stop it; to run a different job use a different -o"
            )
        if kind == "damaged":
            return JournalDamaged(
                f"the journal {self.path} is damaged or not a capbatch journal "
                f"({one_line(str(exc))}): {DAMAGED_ADVICE}",
                path=self.path,
            )
        if kind in ("full", "io"):
            return journal_error(self.path, exc)
        # The path itself is the problem (a folder, no permission): a usage error.
        return ConfigError(f"cannot open the journal {self.path}: {one_line(str(exc))}")

    # --- metadata ---------------------------------------------------------------------

    @_guarded
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- reads ------------------------------------------------------------------------

    @_guarded
    def get_many(self, keys: Iterable[str]) -> dict[str, JournalEntry]:
        """Entries for ``keys`` (those present), in chunks to respect SQLite's limits."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, JournalEntry] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_COLUMNS} FROM tasks WHERE key IN ({marks})"  # noqa: S608
            for row in self._db.execute(sql, chunk):
                entry = _entry(row)
                found[entry.key] = entry
        return found

    @_guarded
    def counts(self) -> dict[str, int]:
        """Number of tasks per state (``intent``, ``lost``, ``created``, ``done``); the
        cascade's local readings are not tasks of a provider and are not counted."""
        rows = self._db.execute(
            "SELECT state, COUNT(*) FROM tasks WHERE key NOT LIKE ? GROUP BY state",
            (LOCAL_READING_PREFIX + "%",),
        ).fetchall()
        return {str(state): int(n) for state, n in rows}

    # --- writes (each one committed before the step it guards) -------------------------

    @_guarded
    def record_intent(self, key: str, *, owner: str, provider: str, submitted_at: float) -> None:
        """About to send createTask for ``key``. Keeps the earlier submit time on retries."""
        self._db.execute(
            "INSERT INTO tasks (key, state, owner, provider, submitted_at, attempts) "
            "VALUES (?, 'intent', ?, ?, ?, 1) "
            "ON CONFLICT(key) DO UPDATE SET state = 'intent', task_id = NULL, "
            "created_at = NULL, owner = excluded.owner, provider = excluded.provider, "
            "attempts = attempts + 1, "
            "submitted_at = COALESCE(submitted_at, excluded.submitted_at)",
            (key, owner, provider, submitted_at),
        )

    @_guarded
    def record_uncertain(self, key: str) -> None:
        """A createTask for ``key`` may have reached the provider without a reply."""
        # "lost": the send is counted once, here; a resume re-creates it without
        # counting it again (an "intent" left by a crash is counted by the resume).
        self._db.execute(
            "UPDATE tasks SET uncertain = uncertain + 1, "
            "state = CASE WHEN state = 'intent' THEN 'lost' ELSE state END WHERE key = ?",
            (key,),
        )

    @_guarded
    def record_created(self, key: str, task_id: str, *, created_at: float) -> None:
        self._db.execute(
            "UPDATE tasks SET state = 'created', task_id = ?, created_at = ? WHERE key = ?",
            (task_id, created_at, key),
        )

    @_guarded
    def record_result(self, key: str, result: RowResult, *, owner: str | None = None) -> None:
        """The final result of ``key`` (its ``cost_usd`` and ``polls`` are added to what
        the task holds). Also creates the row for keys never sent."""
        values = []
        for column in _WRITTEN:
            value = getattr(result, column.field)
            values.append(column.encode(value) if column.encode and value is not None else value)
        self._db.execute(_RECORD_RESULT, (key, owner, *values))

    @_guarded
    def record_spent(self, key: str, cost: float) -> None:
        """Money spent on ``key`` before its final result (a charged failed attempt)."""
        self._db.execute("UPDATE tasks SET cost = COALESCE(cost, 0) + ? WHERE key = ?", (cost, key))

    # --- wrong-answer reports (capbatch feedback, run --report-wrong) -------------------

    @_guarded
    def reports(self, task_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """``task_id -> (outcome, detail)`` for the tasks of ``task_ids`` already reported
        (or found not reportable): a report is sent at most once per task."""
        wanted = list(dict.fromkeys(task_ids))
        found: dict[str, tuple[str, str | None]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT task_id, outcome, detail FROM reports WHERE task_id IN ({marks})"  # noqa: S608
            for task_id, outcome, detail in self._db.execute(sql, chunk):
                found[str(task_id)] = (str(outcome), detail)
        return found

    @_guarded
    def record_report(
        self, task_id: str, *, provider: str, outcome: str, detail: str | None, at: float
    ) -> None:
        """What reporting ``task_id`` came to, written once (a second write for the same
        task is ignored), and the ``reported`` column of every journal row of the task."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO reports (task_id, provider, outcome, detail, reported_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(task_id) DO NOTHING",
                (task_id, provider, outcome, detail, at),
            )
            self._db.execute(
                "UPDATE tasks SET reported = (SELECT outcome FROM reports WHERE task_id = ?) "
                "WHERE task_id = ?",
                (task_id, task_id),
            )
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    @_guarded
    def total_uncertain(self) -> int:
        """createTask sends, over every run of this journal, that may have been paid
        without an answer we could use (each a possible double payment)."""
        row = self._db.execute("SELECT COALESCE(SUM(uncertain), 0) FROM tasks").fetchone()
        return int(row[0])

    @_guarded
    def total_spent(self) -> float:
        row = self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM tasks").fetchone()
        return float(row[0])

    @_guarded
    def close(self) -> None:
        # Best effort on the way out: fold the WAL back so one file remains.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


#: Journal meta key: every provider and URL that wrote answers into the journal.
ENDPOINTS_META = "endpoints"


def note_endpoint(journal: Journal, here: str) -> str | None:
    """Record ``here`` in the journal; a notice when other endpoints wrote to it before."""
    try:
        seen = [str(e) for e in json.loads(journal.get_meta(ENDPOINTS_META) or "[]")]
    except ValueError:
        seen = []
    if here not in seen:
        journal.set_meta(ENDPOINTS_META, json.dumps([*seen, here]))
    others = [e for e in seen if e != here]
    if not others:
        return None
    return (
        f"the journal also holds answers from {', '.join(others)}; they are not reused for {here}"
    )
