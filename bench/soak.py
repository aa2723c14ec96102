"""Soak: the reliability suite's long version. Faults, signals, kill -9s and full disks.

Runs the real ``capbatch run`` CLI against the emulator (a separate process on
loopback) injecting HTTP 5xx, dropped connections, malformed JSON,
``ERROR_SERVICE_UNAVALIABLE``, unsolvable answers and a server-side rate limit, and
stops it at random moments, each of one kind (``--moments``):

- ``kill``: SIGKILL; expect exit -9 and nothing else;
- ``term``: SIGTERM, the graceful stop; expect exit 143, no traceback, the output
  published with every input row in order (unfinished ones ``pending``, Parquet
  metadata ``capbatch.complete`` = ``false``) and no ``.NAME.PID.tmp`` beside it;
- ``int2``: two SIGINTs, the abort; expect exit 130 within 5 s of the second;
- ``full-output``: a resume whose output is on a small tmpfs (the journal stays on the
  healthy disk); expect exit 1, one ``capbatch: error:`` line and no traceback, nothing
  published under the output name nor a temporary left on the full filesystem;
- ``full-journal``: a resume whose journal is copied onto a small tmpfs
  (``--journal``) and copied back after; expect exit 1 and one clean line as above, and
  the journal intact: SQLite's integrity check passes, every answer it held before is
  still there, ``--dry-run`` counts as many answered rows as SQLite does, and the next
  run creates tasks only for rows the journal leaves unsolved (plus one more per reply
  the emulator dropped after charging and per unsolvable answer).

The tmpfs moments mount with ``mount -t tmpfs`` (root); where that fails they are
skipped and the report says so. A Parquet output under 65,536 rows is one row group
written when the run publishes, so its disk fills only then: the ``full-output``
moments come last (each runs every remaining send) and the others are mixed at random.
After the moments a last run on a healthy disk finishes the job, then:

- every row is final exactly once (solved, or failed with a terminal code), answers
  match the oracle, and the output says ``capbatch.complete`` = ``true``;
- answers the emulator charged for beyond the rows solved (paid twice: replies it
  dropped after charging, sends in flight at a kill) never exceed what the run
  reports as possible double payments;
- money: the emulator's charged total is at least the output's ``cost_usd`` sum (no
  paid answer lost) and at most that plus the reported possible double payments at
  ``--price`` (given to the emulator and the CLI alike);
- the key appears in no file written and no output.

    python bench/soak.py --rows 20000 --kills 10 --rate 500
    python bench/soak.py --rows 3000 --kills 6 --rate 400 --moments kill,term,full-journal

Loopback only; every wait is bounded; every tmpfs is unmounted in a ``finally``; it
cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from _emulator import emu_call, emulator

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
KEY = "sk-soak-" + os.urandom(6).hex()
TERMINAL = {
    "ERROR_CAPTCHA_UNSOLVABLE",
    "ERROR_SERVICE_UNAVALIABLE",
    "HTTP_500",
    "HTTP_502",
    "HTTP_503",
    "CONNECTION_LOST",
    "MALFORMED_REPLY",
    "REQUEST_TIMEOUT",
    "POLL_LIMIT_REACHED",
}
SIGNAL_KINDS = ("kill", "term", "int2")
DISK_KINDS = ("full-output", "full-journal")
KINDS = SIGNAL_KINDS + DISK_KINDS
LABELS = {
    "kill": "SIGKILLs",
    "term": "SIGTERMs",
    "int2": "double SIGINTs",
    "full-output": "disk-full output",
    "full-journal": "disk-full journal",
}
#: Bounds on every wait (seconds).
KILL_WAIT = 30.0
TERM_WAIT = 120.0  # the CLI waits up to 30 s for requests in flight, then writes
ABORT_LIMIT = 5.0  # a second SIGINT must end the run within this
SETTLE_WAIT = 15.0


def emulator_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--solver", "oracle", "--labels", str(SAMPLE / "labels.csv"),
        "--deferred", "0.3", "--solve-time", "0.3-1.5", "--seed", str(args.seed),
        "--fail-5xx", "0.05", "--drop-rate", "0.02", "--malformed-rate", "0.01",
        "--unavailable-rate", "0.03", "--unsolvable-rate", "0.02",
        "--rate-limit", str(int(args.rate * 1.2)), "--balance", "1000",
        "--price", str(args.price),
    ]  # fmt: skip


def make_table(rows: int, folder: Path) -> Path:
    base = pd.read_csv(SAMPLE / "captchas.csv", dtype=str)
    frame = base.iloc[[i % len(base) for i in range(rows)]].reset_index(drop=True)
    frame["image_path"] = [str(SAMPLE / p) for p in frame["image_path"]]
    frame["id"] = [f"soak-{i:07d}" for i in range(rows)]
    path = folder / "soak.parquet"
    frame.to_parquet(path, index=False)
    return path


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "capbatch", *args]


def mount_tmpfs(where: Path, size_kb: int) -> str | None:
    """Mount a ``size_kb`` tmpfs on ``where``; None, or why it failed."""
    where.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs", str(where)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def umount(where: Path) -> str | None:
    """Unmount ``where`` (lazily if it is busy); None, or why it failed."""
    why = ""
    for command in (["umount", str(where)], ["umount", "-l", str(where)]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
            continue
        if done.returncode == 0:
            return None
        why = done.stderr.strip() or f"exit {done.returncode}"
    return why


def free_kb(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize // 1024


def journal_files(path: Path) -> list[Path]:
    """The journal and its write-ahead log (the ``-shm`` index is rebuilt from them)."""
    return [path, Path(f"{path}-wal")]


def read_journal(path: Path, scratch: Path) -> tuple[str, dict[str, tuple[Any, ...]]]:
    """SQLite's integrity verdict and every task (key -> state, task id, status, answer)
    of the journal at ``path``, read from a copy so the real one is never touched."""
    if not path.exists():
        return "missing", {}
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    copy = scratch / path.name
    for src, dst in zip(journal_files(path), journal_files(copy), strict=True):
        if src.exists():
            shutil.copyfile(src, dst)
    try:
        db = sqlite3.connect(copy)
        try:
            verdict = str(db.execute("PRAGMA integrity_check").fetchone()[0])
            tasks = {
                row[0]: row[1:]
                for row in db.execute("SELECT key, state, task_id, status, answer FROM tasks")
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"unreadable: {exc}", {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return verdict, tasks


def solved_keys(tasks: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    return {k: v[3] for k, v in tasks.items() if v[0] == "done" and v[2] == "solved"}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("capbatch: error:")]


def unclean(text: str) -> str | None:
    """Why a fatal run's output is not one clean error line, or None."""
    if "Traceback" in text:
        return "a traceback"
    errors = error_lines(text)
    if len(errors) != 1:
        return f"{len(errors)} 'capbatch: error:' lines"
    stray = [
        line for line in text.splitlines() if line.strip() and not line.startswith("capbatch:")
    ]
    if stray:
        return f"stray output {stray[0][:120]!r}"
    return None


class Soak:
    def __init__(self, args: argparse.Namespace, url: str, folder: Path, deadline: float) -> None:
        self.args = args
        self.url = url
        self.folder = folder
        self.deadline = deadline
        self.env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        self.env["CAPSOLVER_API_KEY"] = KEY
        self.env["CAPBATCH_CACHE_DIR"] = str(folder / "cache")  # lock files stay in here
        self.rng = random.Random(args.seed)
        self.table = make_table(args.rows, folder)
        self.ids = [f"soak-{i:07d}" for i in range(args.rows)]
        self.out = folder / "out.parquet"
        self.journal = folder / "out.journal.sqlite"  # the default beside the output
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.job_finished = False
        self.kinds: list[str] = []
        self.runs = 0
        self.seconds = 0  # double-SIGINT moments whose second signal found the run going
        self.share = 1
        #: After a full-journal moment: the next run may create at most this many tasks
        #: (rows the journal leaves unsolved), plus re-creates the emulator explains.
        self.creates_allowed: int | None = None

    # --- plumbing ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return emu_call(self.url, "/_stats")

    def settled_stats(self) -> dict[str, Any]:
        """The counters once the emulator has no request in flight (a dead client's
        last requests may still be running there), waiting at most SETTLE_WAIT."""
        limit = time.monotonic() + SETTLE_WAIT
        while True:
            counters = self.stats()
            if counters["in_flight"] == 0 or time.monotonic() > limit:
                return counters
            time.sleep(0.05)

    def run_args(self, output: Path, journal: Path | None = None) -> list[str]:
        args = ["run", str(self.table), "-o", str(output), "--base-url", self.url]
        args += ["--no-cache", "--rate", str(self.args.rate), "--max-in-flight", "64"]
        args += ["--max-attempts", "8", "--price", str(self.args.price)]
        return args + (["--journal", str(journal)] if journal is not None else [])

    def start(self, args: list[str], kind: str) -> tuple[subprocess.Popen[bytes], Path]:
        self.runs += 1
        log = self.logs / f"{self.runs:02d}-{kind}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                cli(args), env=self.env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT
            )
        return proc, log

    def wait(self, proc: subprocess.Popen[bytes], seconds: float, what: str) -> int | None:
        try:
            return proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=KILL_WAIT)
            self.problems.append(f"{what}: still running after {seconds:.0f} s (killed)")
            return None

    def left(self, floor: float = 120.0) -> float:
        return max(floor, self.deadline - time.monotonic())

    def check_creates(self, before: dict[str, Any], after: dict[str, Any], what: str) -> None:
        """The run after a full-journal moment: one task per row the journal left
        unsolved at most, plus one per reply dropped after charging or unsolvable answer."""
        if self.creates_allowed is None:
            return
        created = after["create_accepted"] - before["create_accepted"]
        extra = (after["dropped_after_create"] - before["dropped_after_create"]) + (
            after["unsolvable"] - before["unsolvable"]
        )
        bound = self.creates_allowed + extra
        line = f"    creates after the full journal ({what}): {created} <= {bound}"
        print(line + ("" if created <= bound else "  <-- too many"))
        if created > bound:
            self.problems.append(
                f"the run after a full journal created {created} tasks; the journal left "
                f"{self.creates_allowed} rows unsolved (+{extra} explained re-creates)"
            )
        self.creates_allowed = None

    def fail(self, index: int, kind: str, why: str, log: Path) -> None:
        self.problems.append(f"moment {index} ({kind}): {why} [log {log.name}]")

    # --- the plan ---------------------------------------------------------------------

    def plan(self, kinds: list[str]) -> list[str]:
        """``--kills`` signal moments (each chosen kind at least once, the rest at
        random), ``--disk-full`` full-journal moments at random places after the first,
        then ``--disk-full`` full-output moments (see the module docstring)."""
        signals = [k for k in kinds if k in SIGNAL_KINDS]
        moments: list[str] = []
        if signals and self.args.kills > 0:
            moments = signals[: self.args.kills]
            moments += [self.rng.choice(signals) for _ in range(self.args.kills - len(moments))]
            self.rng.shuffle(moments)
        if "full-journal" in kinds:
            for _ in range(self.args.disk_full):
                moments.insert(self.rng.randint(min(1, len(moments)), len(moments)), "full-journal")
        if "full-output" in kinds:
            moments += ["full-output"] * self.args.disk_full
        # Creates per moment, on average: the last run keeps a share of the work too.
        self.share = max(2, int(self.args.rows * 1.1) // (len(moments) + 2))
        return moments

    def moment(self, index: int, kind: str) -> None:
        if time.monotonic() > self.deadline:
            self.skipped[kind] += 1
            self.notes.append(f"moment {index} ({kind}) skipped: --max-minutes reached")
            return
        if kind in SIGNAL_KINDS:
            self.signal_moment(index, kind)
        elif kind == "full-output":
            self.full_output(index)
        else:
            self.full_journal(index)

    # --- signals ----------------------------------------------------------------------

    def signal_moment(self, index: int, kind: str) -> None:
        if self.job_finished:  # nothing left to stop
            self.skipped[kind] += 1
            return
        before = self.settled_stats()
        published = self.out.stat().st_mtime_ns if self.out.exists() else None
        proc, log = self.start([*self.run_args(self.out), "--quiet"], kind)
        lo = max(1, self.share // 5)
        target = before["create_calls"] + self.rng.randint(lo, max(lo + 1, 2 * self.share - lo))
        limit = min(self.deadline, time.monotonic() + 300)
        while proc.poll() is None and time.monotonic() < limit:
            if self.stats()["create_calls"] >= target:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            code = proc.wait()
            self.check_creates(before, self.settled_stats(), f"run {self.runs}")
            if code == 0:
                self.job_finished = True
                self.skipped[kind] += 1
                self.notes.append(f"moment {index} ({kind}): the run finished before it")
                print(f"moment {index} {kind}: the run finished first (exit 0)")
            else:
                self.fail(index, kind, f"exit {code} before the signal", log)
            return
        aborted_in = None
        if kind == "kill":
            proc.kill()
            code = self.wait(proc, KILL_WAIT, f"moment {index} (kill)")
            expected = -signal.SIGKILL
        elif kind == "term":
            proc.send_signal(signal.SIGTERM)
            code = self.wait(proc, TERM_WAIT, f"moment {index} (term)")
            expected = 143
        else:
            proc.send_signal(signal.SIGINT)
            time.sleep(self.rng.uniform(0.01, 0.2))
            second = time.monotonic()
            if proc.poll() is None:  # else the graceful stop was over already
                proc.send_signal(signal.SIGINT)
                self.seconds += 1
            else:
                second = None
            code = self.wait(proc, KILL_WAIT, f"moment {index} (int2)")
            aborted_in = None if second is None else time.monotonic() - second
            expected = 130
        after = self.settled_stats()
        self.check_creates(before, after, f"run {self.runs}")
        text = log.read_text(errors="replace")
        detail = ""
        if code == 0:  # it finished between the last look and the signal
            self.job_finished = True
            self.skipped[kind] += 1
            self.notes.append(f"moment {index} ({kind}): the run finished before the signal")
            print(f"moment {index} {kind}: the run finished first (exit 0)")
            return
        self.done[kind] += 1
        if code != expected:
            why = f"exit {code}, expected {expected}"
            if code == -signal.SIGINT and kind == "int2":
                why += (
                    " (killed by the second SIGINT itself"
                    + (
                        ", after the graceful stop had finished and printed its last line"
                        if "the journal is intact" in text
                        else ""
                    )
                    + ")"
                )
            self.fail(index, kind, why, log)
        if kind != "kill" and "Traceback" in text:
            self.fail(index, kind, "a traceback in the CLI output", log)
        if kind == "int2" and aborted_in is None:
            detail = ", over before the second SIGINT"
        if aborted_in is not None:
            detail = f", ended {aborted_in:.2f} s after the second SIGINT"
            if aborted_in > ABORT_LIMIT:
                self.fail(index, kind, f"the second SIGINT took {aborted_in:.1f} s", log)
        if kind == "term" and code == expected:
            detail = self.check_term_output(index, published, log)
        creates = after["create_calls"] - before["create_calls"]
        print(f"moment {index} {kind}: exit {code} after {creates} createTask calls{detail}")

    def check_term_output(self, index: int, published: int | None, log: Path) -> str:
        """After a graceful stop: every row published, pending ones marked, no temp."""
        if not self.out.exists() or self.out.stat().st_mtime_ns == published:
            self.fail(index, "term", "no output published", log)
            return ""
        leftovers = sorted(p.name for p in self.folder.glob(f".{self.out.name}.*.tmp"))
        if leftovers:
            self.fail(index, "term", f"temporaries left beside the output: {leftovers}", log)
        result = pd.read_parquet(self.out, columns=["id", "status"])
        if list(result["id"]) != self.ids:
            self.fail(index, "term", f"{len(result)} rows, not every input row in order", log)
        statuses = set(result["status"])
        if not statuses <= {"solved", "failed", "pending"}:
            self.fail(index, "term", f"statuses {sorted(statuses)}", log)
        pending = int((result["status"] == "pending").sum())
        complete = (pq.read_metadata(self.out).metadata or {}).get(b"capbatch.complete")
        if pending and complete != b"false":
            self.fail(index, "term", f"{pending} pending but capbatch.complete={complete!r}", log)
        return f"; output {len(result)} rows, {pending} pending, complete={complete!r}"

    # --- full disks -------------------------------------------------------------------

    def mount(self, index: int, kind: str, where: Path, size_kb: int) -> bool:
        why = mount_tmpfs(where, size_kb)
        if why is None:
            return True
        self.skipped[kind] += 1
        self.notes.append(f"moment {index} ({kind}) skipped: cannot mount a tmpfs ({why})")
        print(f"moment {index} {kind}: skipped, cannot mount a tmpfs: {why}")
        return False

    def unmount(self, where: Path) -> None:
        why = umount(where)
        if why is not None:
            self.problems.append(f"cannot unmount {where}: {why}")

    def fatal_checks(self, index: int, kind: str, code: int | None, log: Path, free: int) -> str:
        """A disk-full run: exit 1 with one clean line. Returns that line. ``free``: KB
        left on the tmpfs when the run ended."""
        text = log.read_text(errors="replace")
        line = (error_lines(text) or [""])[0]
        if code == 0 and free > 0:  # it fit: a sizing miss, not a broken promise
            self.done[kind] -= 1
            self.skipped[kind] += 1
            self.notes.append(
                f"moment {index} ({kind}) not exercised: the run fit on the tmpfs "
                f"({free} KB free) and finished"
            )
        elif code == 0:
            self.fail(index, kind, "exit 0 though the tmpfs is full (an error swallowed?)", log)
        elif code != 1:
            self.fail(index, kind, f"exit {code}, expected 1", log)
        why = unclean(text) if code else None
        if why:
            self.fail(index, kind, f"not one clean line: {why}", log)
        return line

    def full_output(self, index: int) -> None:
        kind = "full-output"
        estimate = max(
            self.out.stat().st_size if self.out.exists() else 0,
            4 * self.table.stat().st_size,
        )
        size_kb = max(16, int(estimate * self.rng.uniform(0.3, 0.7)) // 1024)
        where = self.folder / f"full-output-{index}"
        if not self.mount(index, kind, where, size_kb):
            return
        try:
            before = self.settled_stats()
            target = where / self.out.name
            proc, log = self.start([*self.run_args(target, journal=self.journal), "--quiet"], kind)
            code = self.wait(proc, self.left(), f"moment {index} ({kind})")
            after = self.settled_stats()
            self.check_creates(before, after, f"run {self.runs}")
            self.done[kind] += 1
            line = self.fatal_checks(index, kind, code, log, free_kb(where))
            if code != 0 and target.exists():
                self.fail(index, kind, "an output was published on the full disk", log)
            leftovers = sorted(p.name for p in where.glob(f".{target.name}.*.tmp"))
            if leftovers:
                self.fail(index, kind, f"temporaries left on the full disk: {leftovers}", log)
            creates = after["create_calls"] - before["create_calls"]
            print(
                f"moment {index} {kind} ({size_kb} KB tmpfs): exit {code} after {creates} "
                f"createTask calls; {line[:160]}"
            )
        finally:
            self.unmount(where)

    def full_journal(self, index: int) -> None:
        kind = "full-journal"
        if self.job_finished:
            self.skipped[kind] += 1
            self.notes.append(f"moment {index} ({kind}) skipped: the job had finished")
            return
        scratch = self.folder / "scratch"
        verdict, tasks = read_journal(self.journal, scratch)
        if verdict not in ("ok", "missing"):
            self.problems.append(f"moment {index} ({kind}): the journal before it: {verdict}")
        held = sum(p.stat().st_size for p in journal_files(self.journal) if p.exists())
        wal = journal_files(self.journal)[1]
        # The log grows a page or more per commit until a checkpoint (at ~4 MB) lets it
        # start over; past that only the journal's own growth fills the disk, slowly. So
        # the room left is below what the log can still grow, and a draw: early or later.
        wal_kb = wal.stat().st_size // 1024 if wal.exists() else 0
        headroom = self.rng.randint(192, max(256, min(1536, (4096 - wal_kb) * 3 // 5)))
        size_kb = (held + 32 * 1024) // 1024 + headroom  # + the -shm index
        where = self.folder / f"full-journal-{index}"
        if not self.mount(index, kind, where, size_kb):
            return
        moved = where / self.journal.name
        published = self.out.stat().st_mtime_ns if self.out.exists() else None
        ran = False
        try:
            for src, dst in zip(journal_files(self.journal), journal_files(moved), strict=True):
                if src.exists():
                    shutil.copyfile(src, dst)
            before = self.settled_stats()
            proc, log = self.start([*self.run_args(self.out, journal=moved), "--quiet"], kind)
            ran = True
            code = self.wait(proc, self.left(), f"moment {index} ({kind})")
            full_left = free_kb(where)
        finally:
            try:
                if ran:  # the copy on the tmpfs is the journal now: bring it back first
                    pairs = zip(journal_files(moved), journal_files(self.journal), strict=True)
                    for src, dst in pairs:
                        if src.exists():
                            shutil.copyfile(src, dst)
                        else:
                            dst.unlink(missing_ok=True)
                    Path(f"{self.journal}-shm").unlink(missing_ok=True)
            finally:
                self.unmount(where)
        after = self.settled_stats()
        self.check_creates(before, after, f"run {self.runs}")
        self.done[kind] += 1
        line = self.fatal_checks(index, kind, code, log, full_left)
        # Intact: SQLite finds nothing wrong, every answer it held is still there, and
        # capbatch itself reads it the same way.
        verdict_after, tasks_after = read_journal(self.journal, scratch)
        if verdict_after != "ok":
            self.fail(index, kind, f"the journal after it: {verdict_after}", log)
        kept, now = solved_keys(tasks), solved_keys(tasks_after)
        lost = [k for k, answer in kept.items() if now.get(k) != answer]
        if lost:
            self.fail(index, kind, f"{len(lost)} answers lost or changed in the journal", log)
        answered = sum(1 for v in tasks_after.values() if v[0] == "done")
        dry = subprocess.run(
            cli([*self.run_args(self.out), "--dry-run"]), env=self.env, cwd=REPO,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if KEY in dry.stdout + dry.stderr:
            self.fail(index, kind, "the key in the --dry-run output", log)
        found = re.search(r"(\d+) answered already", dry.stdout + dry.stderr)
        if dry.returncode != 0 or found is None or int(found.group(1)) != answered:
            said = found.group(0) if found else (dry.stdout + dry.stderr).strip()[-200:]
            self.fail(
                index, kind, f"--dry-run after it: exit {dry.returncode}, {said!r}; "
                f"SQLite counts {answered} answered", log,
            )  # fmt: skip
        self.creates_allowed = self.args.rows - len(now)
        creates = after["create_calls"] - before["create_calls"]
        wrote = self.out.exists() and self.out.stat().st_mtime_ns != published
        print(
            f"moment {index} {kind} ({size_kb} KB tmpfs for a {held // 1024} KB journal "
            f"and {wal_kb} KB log, {full_left} KB free after it exited): exit {code} after "
            f"{creates} createTask calls; journal {verdict_after}, {len(kept)} -> {len(now)} "
            f"answers, {len(lost)} lost; output {'written' if wrote else 'not written'}; "
            f"{line[:160]}"
        )

    # --- the last run and the checks --------------------------------------------------

    def finish(self, started: float) -> int:
        before = self.settled_stats()
        proc, log = self.start(self.run_args(self.out), "final")
        code = self.wait(proc, self.left(60.0), "the last run")
        counters = self.settled_stats()
        self.check_creates(before, counters, "the last run")
        elapsed = time.monotonic() - started
        text = log.read_text(errors="replace")
        if code != 0:
            print(text[-3000:])
            print(f"FAIL: the last run exited {code} [log {log.name}]")
            return 1
        args, problems = self.args, self.problems
        result = pd.read_parquet(self.out)
        if list(result["id"]) != self.ids:
            problems.append(f"{len(result)} rows in the output for {args.rows} in the input")
        complete = (pq.read_metadata(self.out).metadata or {}).get(b"capbatch.complete")
        if complete != b"true":
            problems.append(f"the last output says capbatch.complete={complete!r}")
        leftovers = sorted(p.name for p in self.folder.glob(f".{self.out.name}.*.tmp"))
        if leftovers:
            problems.append(f"temporaries left beside the output: {leftovers}")
        failed = result[result["status"] != "solved"]
        odd = set(failed["error_code"]) - TERMINAL
        if odd or set(failed["status"]) - {"failed"}:
            problems.append(
                f"non-final rows: {sorted(set(failed['status']))}, codes {sorted(map(str, odd))}"
            )
        solved = result[result["status"] == "solved"]
        wrong = int((solved["answer"] != solved["label"]).sum())
        if wrong:
            problems.append(f"{wrong} answers differ from the oracle's")
        # Money is the measure: the emulator charges once per solved task. Answers it
        # charged for beyond the rows we solved were paid twice; each must have been
        # reported (a dropped reply or a send in flight at a kill).
        found = re.search(r"possible double payments: (\d+)", text)
        reported = int(found.group(1)) if found else -1
        if found is None:
            problems.append("the last run's summary has no 'possible double payments'")
        paid_twice = int(counters["solved"]) - len(solved)
        if paid_twice > reported:
            problems.append(f"{paid_twice} answers paid twice, {reported} reported")
        charged = float(counters["charged_total"])
        paid_for = float(result["cost_usd"].fillna(0).sum())
        ceiling = paid_for + max(reported, 0) * args.price
        if not paid_for - 1e-9 <= charged <= ceiling + 1e-9:
            problems.append(
                f"charged ${charged:.4f} outside [output cost ${paid_for:.4f}, "
                f"+ {reported} x ${args.price} = ${ceiling:.4f}]"
            )
        files = [p for p in self.folder.rglob("*") if p.is_file()]
        leaked = [p.name for p in files if KEY.encode() in p.read_bytes()]
        if leaked:
            problems.append(f"key found in {leaked}")
        counts = ", ".join(
            f"{self.done[k]} {LABELS[k]}"
            + (f" ({self.skipped[k]} skipped)" if self.skipped[k] else "")
            for k in KINDS
            if k in self.kinds
        )
        print()
        print(f"moments: {counts}")
        if self.done["int2"]:
            print(f"  the second SIGINT found the run still stopping {self.seconds} times")
        for note in self.notes:
            print(f"  note: {note}")
        print(f"rows {args.rows}, {self.runs} runs, wall time {elapsed:.0f} s")
        print(
            f"solved {len(solved)}, failed {len(failed)}: "
            f"{failed['error_code'].value_counts().to_dict()}"
        )
        print(
            f"createTask calls {counters['create_calls']} ({counters['create_accepted']} "
            f"accepted), charged answers {counters['solved']}, paid twice {paid_twice}, "
            f"reported possible double payments {reported} (replies dropped by the "
            f"emulator after charging: {counters['dropped_after_create']})"
        )
        print(
            f"charged ${charged:.4f}; output cost_usd ${paid_for:.4f} <= charged <= "
            f"${ceiling:.4f} (+ {reported} x ${args.price})"
        )
        print("PASS" if not problems else "FAIL: " + "; ".join(problems))
        return 0 if not problems else 1

    def soak(self, kinds: list[str]) -> int:
        self.kinds = kinds
        moments = self.plan(kinds)
        print(f"{len(moments)} moments: {' '.join(moments)}")
        started = time.monotonic()
        for index, kind in enumerate(moments, 1):
            self.moment(index, kind)
        return self.finish(started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--kills", type=int, default=10,
        help="signal moments (kill, term, int2 as --moments allows)",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--price", type=float, default=0.0004, help="USD per task (both sides)")
    parser.add_argument(
        "--moments", default=",".join(KINDS),
        help=f"kinds of moment, comma-separated, from {','.join(KINDS)} [default: all]",
    )  # fmt: skip
    parser.add_argument(
        "--disk-full", type=int, default=1, help="moments of each full-* kind chosen"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (logs, journal) on FAIL"
    )
    parser.add_argument("--max-minutes", type=float, default=30.0)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.moments.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        parser.error(f"--moments: unknown {unknown}; choose from {','.join(KINDS)}")
    deadline = time.monotonic() + args.max_minutes * 60
    # No 6-character piece of KEY in the path: the CLI masks such pieces in its messages.
    folder = Path(tempfile.mkdtemp(prefix="capbatch-soakrun-"))
    status = 1
    with emulator(emulator_flags(args), api_key=KEY, solver=None) as (url, _pid):
        try:
            status = Soak(args, url, folder, deadline).soak(kinds)
            return status
        finally:
            for mounted in folder.glob("full-*"):  # never leave a tmpfs behind
                if os.path.ismount(mounted):
                    umount(mounted)
            if status == 0 or not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                print(f"kept for inspection (logs in logs/): {folder}")


if __name__ == "__main__":
    raise SystemExit(main())
