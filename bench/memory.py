"""Peak memory of ``capbatch run`` on big tables: does it stream, or grow with the rows?

What: the real CLI (``python -m capbatch run``, a child process) against the capbatch
emulator (``python -m capbatch serve --solver constant``, another process, answering at
once) on Parquet tables of ``--sizes`` rows (an ``id`` column and an ``image`` column of
paths to a few sample images, repeated), ``--no-cache`` so every row is one request,
at a rate far above what the client can do (``--rate 20000 --max-in-flight 200``), so
each run goes as fast as the client can go.

Why: the design promises streaming: memory is a bounded window of batches, whatever
the table's size. A per-row leak (a list of every latency, every result, every key)
is invisible on a small table and fatal on a big one.

How it measures: each CLI child is waited for with ``os.wait4(pid)``, which returns that
child's own rusage, so ``ru_maxrss`` is that run's peak RSS (``RUSAGE_CHILDREN`` would
give the maximum over every child waited for so far). The peak of a 1-row run (imports
and setup, the floor) is printed too. Progress (rows sent, rows/s, current RSS) is
printed every ``--progress-every`` seconds, from the emulator's ``GET /_stats`` and the
child's ``/proc/PID/status``.

Goals: peak RSS < 500 MB for every size, and the largest size's peak at most 1.25x
the smallest's (1M rows vs 100k rows by default).

Bounded: a run that exceeds ``--timeout`` seconds is killed and reported. Everything
runs on loopback, in a temporary directory removed at the end (tables, outputs,
journals), and the emulator process is stopped. The default sizes take 10-15 minutes
on a 2-CPU machine: the 1M run goes at the client's full speed (1,200-2,000 rows/s
there, depending on what else the machine runs).

    python bench/memory.py                          # 100,000 and 1,000,000 rows
    python bench/memory.py --sizes 20000,200000     # a quicker look
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _emulator import API_KEY, emu_call, emulator
from _machine import machine_info

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_data" / "images"
GOAL_MB = 500.0
GOAL_RATIO = 1.25
CHUNK_ROWS = 100_000


# --- measurements -------------------------------------------------------------------


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(current RSS, peak RSS) of a live process in MB (Linux /proc), None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE))
    if "VmRSS" not in values or "VmHWM" not in values:
        return None
    return int(values["VmRSS"]) / 1024, int(values["VmHWM"]) / 1024


# --- one CLI run ----------------------------------------------------------------------


@dataclass
class Run:
    rows: int
    returncode: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_mb: float = 0.0
    output_rows: int = 0
    error: str | None = None


def write_table(path: Path, rows: int, images: list[str]) -> None:
    """``rows`` rows of (id, image path), written in chunks to keep this process small."""
    schema = pa.schema([("id", pa.int64()), ("image", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(rows, start + CHUNK_ROWS)
            paths = [images[i % len(images)] for i in range(start, stop)]
            ids = pa.array(range(start, stop), type=pa.int64())
            writer.write_table(pa.table({"id": ids, "image": paths}, schema=schema))


def run_cli(
    rows: int, table: Path, work: Path, url: str, args: argparse.Namespace, *, label: str
) -> Run:
    out = work / f"{table.stem}.results.parquet"
    command = [
        sys.executable, "-m", "capbatch", "run", str(table), "-o", str(out),
        "--journal", str(work / f"{table.stem}.journal.sqlite"), "--base-url", url,
        "--no-cache", "--quiet", "--rate", str(args.rate),
        "--max-in-flight", str(args.max_in_flight),
    ]  # fmt: skip
    env = dict(os.environ, CAPSOLVER_API_KEY=API_KEY)
    result = Run(rows)
    emu_call(url, "/_reset_stats", post=True)
    log = work / "child.log"
    with log.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        next_report = started + args.progress_every
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now - started > args.timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                result.error = f"killed after --timeout {args.timeout:g} s"
                break
            if now >= next_report and label:
                next_report += args.progress_every
                sent = int(emu_call(url, "/_stats")["create_calls"])
                mem = rss_mb(proc.pid)
                shown = "" if mem is None else f", RSS {mem[0]:.0f} MB (peak {mem[1]:.0f} MB)"
                print(
                    f"    {label}: {now - started:5.0f} s, {sent:>9,} / {rows:,} rows sent "
                    f"({sent / (now - started):,.0f}/s){shown}",
                    flush=True,
                )
            time.sleep(0.05)
        result.wall_s = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    result.returncode = proc.returncode
    result.cpu_s = usage.ru_utime + usage.ru_stime
    result.peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    if result.error is None and proc.returncode != 0:
        result.error = f"exit {proc.returncode}: {log.read_text().strip()[-300:]}"
    if out.exists():
        result.output_rows = pq.read_metadata(out).num_rows
        if result.error is None and result.output_rows != rows:
            result.error = f"output has {result.output_rows} rows, expected {rows}"
    for leftover in work.glob(f"{table.stem}.*"):
        if leftover != table:
            leftover.unlink()
    return result


# --- report ---------------------------------------------------------------------------


def print_table(runs: list[Run], floor: Run) -> None:
    smallest = runs[0]
    header = (
        f"{'rows':>10} {'wall s':>7} {'rows/s':>7} {'CPU ms/row':>11} {'peak RSS MB':>14}"
        f" {'over floor MB':>14} {'x smallest':>11}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        ratio = run.peak_mb / smallest.peak_mb if smallest.peak_mb else 0.0
        peak = f"{run.peak_mb:.0f} {'ok' if run.peak_mb < GOAL_MB else 'MISS'}"
        times = f"{ratio:.2f} {'ok' if ratio <= GOAL_RATIO else 'MISS'}"
        print(
            f"{run.rows:>10,} {run.wall_s:>7.0f} {run.rows / max(run.wall_s, 1e-9):>7,.0f}"
            f" {run.cpu_s / run.rows * 1000:>11.3f} {peak:>14}"
            f" {run.peak_mb - floor.peak_mb:>14.0f} {times:>11}"
        )
        if run.error:
            print(f"           ! {run.error}")
    if len(runs) >= 2 and runs[-1].rows > smallest.rows:
        growth = (runs[-1].peak_mb - smallest.peak_mb) * 2**20 / (runs[-1].rows - smallest.rows)
        print(f"growth between the smallest and the largest run: {growth:.1f} bytes per row")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="100000,1000000", help="comma-separated row counts [100000,1000000]"
    )
    parser.add_argument("--rate", type=float, default=20000.0, help="--rate [20000]")
    parser.add_argument("--max-in-flight", type=int, default=200, help="--max-in-flight [200]")
    parser.add_argument("--images", type=int, default=8, help="distinct sample images [8]")
    parser.add_argument(
        "--timeout", type=float, default=1500.0, help="seconds before a run is killed [1500]"
    )
    parser.add_argument(
        "--progress-every", type=float, default=15.0, help="seconds between progress lines"
    )
    args = parser.parse_args()
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--sizes must be positive row counts")
    images = sorted(str(p) for p in SAMPLE_IMAGES.glob("*.png"))[: args.images]
    if not images:
        parser.error(f"no sample images in {SAMPLE_IMAGES}")

    for line in machine_info():
        print(line)
    print(
        f"tables: {', '.join(f'{n:,}' for n in sizes)} rows over {len(images)} images; "
        f"--no-cache --rate {args.rate:g} --max-in-flight {args.max_in_flight}; "
        "emulator: constant solver, instant answers"
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="capbatch-bench-") as tmp:
        work = Path(tmp)
        # Money for every row, and a short task TTL so the emulator stays small too.
        with emulator(["--balance", "100000000", "--task-ttl", "60"]) as (url, _pid):
            one = work / "one.parquet"
            write_table(one, 1, images)
            floor = run_cli(1, one, work, url, args, label="")
            print(f"floor: a 1-row run peaks at {floor.peak_mb:.0f} MB RSS (imports and setup)")
            for rows in sizes:
                table = work / f"rows{rows}.parquet"
                write_table(table, rows, images)
                print(f"  {rows:,} rows ...", flush=True)
                runs.append(run_cli(rows, table, work, url, args, label=f"{rows:,}"))
                table.unlink()
                print(f"    done: peak RSS {runs[-1].peak_mb:.0f} MB in {runs[-1].wall_s:.0f} s")
    print()
    print_table(runs, floor)
    print()
    print(
        f"goals: peak RSS < {GOAL_MB:g} MB; the largest run at most {GOAL_RATIO}x the "
        "smallest ('x smallest')"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
