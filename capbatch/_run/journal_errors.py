"""SQLite failures on the journal as capbatch errors: one line that names the path, the
problem and what to do (``journal_error``), never a raw ``sqlite3`` traceback."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from capbatch._exceptions import JournalDamaged, JournalError

#: Integrity problems quoted in the error (the check stops after this many).
MAX_PROBLEMS = 5

#: What to do about a damaged journal: the only safe choices, and what each costs.
DAMAGED_ADVICE = (
    "answered rows cannot be told apart from unanswered ones; move it aside to start "
    "over (this pays again for every row), or restore it from a backup"
)


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_name(exc: sqlite3.Error) -> str:
    # sqlite_errorname is Python 3.11+; on 3.10 the message alone tells the cases apart.
    return str(getattr(exc, "sqlite_errorname", "") or "")


def error_kind(exc: sqlite3.Error) -> str:
    """``damaged``, ``busy``, ``full``, ``io`` or ``other``."""
    name, text = _error_name(exc), str(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or any(
        words in text for words in ("malformed", "not a database")
    ):
        return "damaged"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return "busy"
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith("SQLITE_IOERR") or "I/O error" in text:
        return "io"
    return "other"


def _no_space_note(path: str) -> str:
    """``; no space left on its disk`` when that is the cause behind an I/O error."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        return ""
    # SQLite reports ENOSPC on some writes as SQLITE_FULL, on others as an I/O error.
    return "; no space left on its disk" if free < 64 * 1024 else ""


def journal_error(path: str, exc: sqlite3.Error) -> JournalError:
    """The capbatch error for a SQLite failure on the journal at ``path``: one line that
    names the path, the problem (SQLite's words, and its error name) and what to do."""
    kind, name = error_kind(exc), _error_name(exc)
    problem = one_line(str(exc)) or type(exc).__name__
    if name and name not in problem:
        problem = f"{problem}, {name}"
    if kind == "damaged":
        return JournalDamaged(
            f"the journal {path} is damaged ({problem}): {DAMAGED_ADVICE}", path=path
        )
    if kind in ("full", "io"):
        what = "written" if kind == "full" else "read or written"
        return JournalError(
            f"the journal {path} cannot be {what}: {problem}{_no_space_note(path)}; fix that "
            "and run the same command (every step recorded so far is kept)",
            path=path,
        )
    return JournalError(f"the journal {path} failed: {problem}", path=path)
