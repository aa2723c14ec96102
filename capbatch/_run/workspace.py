"""A run's files on disk, checked and locked before anything is sent or paid.

``Workspace.open(output, journal)`` is the first thing a run does with its paths:

1. **Writable paths up front.** The output and the journal must each be a file path
   whose folder exists (or can be made) and takes a new file: a directory given as
   ``-o``, a read-only folder, a file standing where a folder should be, all stop the run
   here (``ConfigError``, exit status 2) instead of after every row was paid for. An
   output that is its own journal (same resolved path, through symlinks, ``..`` or hard
   links) is refused the same way.
2. **One run per output.** The run holds exclusive locks keyed on the *output* path (and
   on the journal path) for its whole life, so a second run on the same ``-o`` stops at
   once (``InUseError``) whatever ``--journal`` it is given. See "Locks" below.
3. **Stale temporaries.** Holding the output's lock proves no other run is writing it,
   so every temporary a killed run left beside it (``.NAME.PID.tmp``) is removed.
4. **One input per output and journal.** A run of another input file on an output or a
   journal made from one stops here with one line naming the way out (``-o``), instead
   of overwriting the other input's results (``capbatch._run.ownership``, which also
   names the default output).
5. Then the journal is opened (SQLite's own exclusive lock, and its integrity check).

Locks
-----
Each key is locked with ``flock`` on a lock file the run keeps open; two lock files
guard an output:

* ``.NAME.lock`` beside the output: seen by other users and, on a shared filesystem,
  other machines;
* ``<cache dir>/locks/<sha256 of the resolved path>.lock``: outside the user's folders,
  so deleting the output's folder, the journal or ``.NAME.lock`` mid-run frees nothing.

A lock lives on the file's inode. A lock file is removed when its run ends, and a run
that locks one re-checks, after locking, that the path still names the inode it locked
(else the previous holder removed it in between, and it tries again): so removal never
lets two runs in. SQLite's journal lock, by contrast, lives on the journal's inode and
was freed by deleting the journal mid-run; it stays as a third line of defence.

Residual limits: deleting *both* output lock files while a run holds them (or the
whole cache folder plus ``.NAME.lock``) lets a second run in; two users with different
cache folders are kept apart only by ``.NAME.lock``; a filesystem without ``flock``
(some FUSE mounts) or an unwritable cache folder silently leaves the other locks only.

In-memory tables
----------------
``capbatch.run(df)`` has no output file, and used to keep its journal in memory: a
kernel crash lost every paid answer. Such a table now gets a journal in the cache folder
(``memory_journal``), named by a hash of the table's content, so calling the same
``run(df, ...)`` again resumes from it. ``CAPBATCH_CACHE_DIR`` moves the cache folder;
``journal=":memory:"`` opts out.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from capbatch._exceptions import ConfigError, InUseError
from capbatch._io.inputs import TableSource
from capbatch._io.outputs import temp_pattern
from capbatch._run.journal import Journal
from capbatch._run.ownership import (
    check_same_input,
    journal_for_input,
    recorded_input,
    same_file,
)

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt
else:
    import fcntl

#: Environment variable naming capbatch's cache folder (journals of in-memory tables,
#: lock files). Tests point it at a temporary folder.
CACHE_ENV = "CAPBATCH_CACHE_DIR"

#: Rows per batch when hashing a table: fixed, so the hash does not depend on the run's
#: ``batch_rows`` (the same table resumes whatever batch size the next call uses).
_HASH_BATCH_ROWS = 65_536

#: Attempts at locking a file that the previous holder keeps removing underneath.
_LOCK_TRIES = 20


# --- the cache folder ---------------------------------------------------------------


def cache_dir() -> Path:
    """capbatch's cache folder: ``$CAPBATCH_CACHE_DIR``, else the platform's user cache.

    Linux and other Unix: ``$XDG_CACHE_HOME/capbatch`` (``~/.cache/capbatch``); macOS:
    ``~/Library/Caches/capbatch``; Windows: ``%LOCALAPPDATA%\\capbatch\\Cache``.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    try:
        if sys.platform == "win32":
            local = os.environ.get("LOCALAPPDATA")
            base = Path(local) if local else Path.home() / "AppData" / "Local"
            return base / "capbatch" / "Cache"
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Caches" / "capbatch"
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says to ignore a relative value.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    except RuntimeError:  # no home folder to be found
        raise ConfigError(f"cannot find a cache folder: set {CACHE_ENV}") from None
    return base / "capbatch"


def table_digest(table: TableSource) -> str:
    """SHA-256 of a table's content: its schema (without metadata) and the Arrow IPC bytes
    of its rows, in fixed-size batches.

    Metadata is left out because pandas writes its own version there (an upgrade would
    otherwise change the hash); a DataFrame and the pyarrow Table made from it hash the
    same. Measured on this project's 2-core VM: 100k rows of (id, image path, label),
    7.7 MB of IPC, 12 ms from a DataFrame and 7 ms from a pyarrow Table.
    """
    view = copy.copy(table)  # the caller's source keeps its own batch size
    view.batch_rows = _HASH_BATCH_ROWS
    digest = hashlib.sha256(view.schema.remove_metadata().serialize())
    for batch in view.batches():
        digest.update(batch.serialize())
    return digest.hexdigest()


def memory_journal(table: TableSource) -> Path:
    """Where the journal of an in-memory table lives: one per table content."""
    rows = table.num_rows if table.num_rows is not None else table.count_rows()
    name = f"table-{rows}rows-{table_digest(table)[:32]}.journal.sqlite"
    return cache_dir() / "journals" / name


def memory_journal_notice(path: str) -> str:
    return (
        f"journal of this in-memory table: {path} (the same call again resumes from it "
        f"without paying twice; {CACHE_ENV} moves it, journal=':memory:' keeps none)"
    )


# --- checks -------------------------------------------------------------------------


def check_writable(path: Path, what: str) -> None:
    """Raise ``ConfigError`` unless a file can be written at ``path`` (``what``: "output"
    or "journal"): not a directory, its folder exists or can be made, and a new file can
    be created in it. Makes the folder, as the run would."""
    if path.is_dir():
        example = path / ("results.parquet" if what == "output" else "journal.sqlite")
        raise ConfigError(f"the {what} {path} is a directory; give a file path (e.g. {example})")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"cannot write the {what} {path}: a file stands where its folder should be"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot write the {what} {path}: cannot make its folder {folder} "
            f"({exc.strerror or exc})"
        ) from None
    # A real file, not os.access(): root, ACLs, read-only mounts and full inode tables all
    # answer here exactly as they will when the run writes.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        hint = f" (set {CACHE_ENV} to a writable folder)" if _in_cache(path) else ""
        raise ConfigError(
            f"cannot write the {what} {path}: cannot create a file in {folder} "
            f"({exc.strerror or exc}){hint}"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _in_cache(path: Path) -> bool:
    try:
        return path.is_relative_to(cache_dir())
    except ConfigError:
        return False


def check_distinct(output: Path, journal: str) -> None:
    """Refuse an output that is the journal (or one of SQLite's files beside it)."""
    if journal == ":memory:":
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        if same_file(output, Path(journal + suffix)):
            raise ConfigError(
                f"the output {output} and the journal {journal}{suffix} are the same file; "
                "give --journal another path (or leave it out: it then goes beside the output)"
            )


# --- locks --------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    """An exclusive lock on ``fd`` without waiting; False when another holds it."""
    try:
        if sys.platform == "win32":  # pragma: no cover
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
            return False
        raise
    return True


def _names_inode(path: Path, file: BinaryIO) -> bool:
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    held = os.fstat(file.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _open_lock_file(path: Path) -> BinaryIO:
    # Append mode: opening never truncates what the holder wrote in it. A lock file left
    # by another user may be read-only to us; flock works on a read-only descriptor too,
    # so that user's live run still keeps ours out.
    try:
        return open(path, "a+b", buffering=0)  # kept open by the caller: it is the lock
    except PermissionError:
        return open(path, "rb", buffering=0)


class _Lock:
    """An exclusive ``flock`` on a lock file, held while the file stays open."""

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file = file

    @classmethod
    def acquire(cls, path: Path, *, owner: str) -> _Lock | None:
        """The lock, or None when another run holds it."""
        for _ in range(_LOCK_TRIES):
            file = _open_lock_file(path)
            try:
                if not _try_lock(file.fileno()):
                    file.close()
                    return None
                # The previous holder removes the file as it lets go: if that happened
                # between our open and our lock, we hold a lock on an orphan; try again.
                if _names_inode(path, file):
                    # Who holds it, for the "in use" message; best effort (a full disk, a
                    # file left by another user that we may only read).
                    with contextlib.suppress(OSError):
                        file.truncate(0)
                        file.write(f"pid {os.getpid()}\n{owner}\n".encode())
                    return cls(path, file)
            except BaseException:
                file.close()
                raise
            file.close()
        raise ConfigError(f"cannot lock {path}: the file keeps being replaced")

    def release(self) -> None:
        try:
            # Remove before unlocking, so a run that opened it meanwhile sees the path no
            # longer names the inode it locks (see acquire) and does not count it.
            if _names_inode(self.path, self._file):
                self.path.unlink()
        except OSError:
            pass  # a leftover lock file is harmless: the next run reuses it
        finally:
            self._file.close()


def _holder(path: Path) -> str:
    """`` (pid N)`` from a held lock file, best effort."""
    try:
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    except OSError:
        return ""
    return f" ({first.strip()})" if re.fullmatch(r"pid \d+", first.strip()) else ""


def _key_lock_path(target: Path) -> Path | None:
    """The lock file of ``target`` in the cache folder (None if there is none to be had)."""
    try:
        folder = cache_dir() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ConfigError):
        return None  # an unwritable cache folder leaves the lock beside the output
    key = hashlib.sha256(os.fsencode(os.path.realpath(target))).hexdigest()[:40]
    return folder / f"{key}.lock"


def _lock_all(paths: list[Path], owner: str, in_use: str) -> list[_Lock]:
    held: list[_Lock] = []
    try:
        for path in paths:
            try:
                lock = _Lock.acquire(path, owner=owner)
            except OSError:
                # A filesystem without flock, or a folder we cannot write (already checked
                # for the output's): the other locks still stand.
                continue
            if lock is None:
                raise InUseError(in_use.format(holder=_holder(path)))
            held.append(lock)
    except BaseException:
        for lock in reversed(held):
            lock.release()
        raise
    return held


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Remove what killed runs left beside ``output``: the writer's ``.NAME.PID.tmp``
    files and the path checks' ``.NAME.XXXXXXXX.probe`` files.

    Call only while holding the output's lock: it proves no live run writes them (a PID
    check would not: in a container the new run often gets the dead run's PID).
    """
    pattern = temp_pattern(output)
    probe = re.compile(rf"\.{re.escape(output.name)}\.[A-Za-z0-9_]{{8}}\.probe")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(output.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (pattern.fullmatch(entry.name) or probe.fullmatch(entry.name)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


# --- the workspace ------------------------------------------------------------------


class Workspace:
    """A run's checked paths, its locks and its open journal; ``close`` lets go of all."""

    def __init__(self, journal: Journal, locks: list[_Lock], removed: list[Path]) -> None:
        self.journal = journal
        self._locks = locks
        #: Stale temporaries of earlier, killed runs removed at open.
        self.removed = removed

    @classmethod
    def open(cls, output: Path | None, journal: str, *, source: Path | None = None) -> Workspace:
        """Check, lock, clean up and open the journal, before any request is sent.
        ``source`` is the input file or folder (None for an in-memory table).

        Raises ``ConfigError`` for a path that cannot work or that belongs to another
        input, ``InUseError`` when another run holds the output or the journal, and
        whatever ``Journal`` raises."""
        if output is not None:
            check_writable(output, "output")
        if journal != ":memory:":
            check_writable(Path(journal), "journal")
        if output is not None:
            check_distinct(output, journal)
            if source is not None and source.is_file() and same_file(output, source):
                raise ConfigError(f"the output {output} is the input file: give -o another path")
        advice = "wait for it to finish, or stop it; to run a different job use a different -o"
        locks: list[_Lock] = []
        try:
            if output is not None:
                beside = output.with_name(f".{output.name}.lock")
                keyed = _key_lock_path(output)
                locks += _lock_all(
                    [beside] + ([keyed] if keyed else []),
                    f"output {os.path.realpath(output)}",
                    f"the output {output} is in use by another capbatch run{{holder}}; {advice}",
                )
            if journal != ":memory:":
                keyed = _key_lock_path(Path(journal))
                locks += _lock_all(
                    [keyed] if keyed else [],
                    f"journal {os.path.realpath(journal)}",
                    f"the journal {journal} is in use by another capbatch run{{holder}}; {advice}",
                )
            if output is not None and source is not None and output.is_file():
                check_same_input("output", output, recorded_input(output), source)
            removed = remove_stale_temporaries(output) if output is not None else []
            return cls(journal_for_input(journal, source), locks, removed)
        except BaseException:
            for lock in reversed(locks):
                lock.release()
            raise

    def close(self) -> None:
        """Close the journal, then release the locks (even if closing failed)."""
        try:
            self.journal.close()
        finally:
            for lock in reversed(self._locks):
                lock.release()
            self._locks = []

    @property
    def lock_paths(self) -> list[Path]:
        """The lock files held (for diagnostics and tests)."""
        return [lock.path for lock in self._locks]

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
