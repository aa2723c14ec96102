"""Start-up cost of the ``capbatch`` command: how long before it does anything useful?

What: each command below runs as a child process ``--repeats`` times (default 10), the
commands interleaved so a change in machine load hits them all alike; each child's wall
time (``time.perf_counter`` around it) and CPU (user + sys from ``os.wait4`` on its pid)
are recorded, and the table shows the medians and their difference from the bare
interpreter (``python -c pass``) measured in the same run:

  python -c pass                 the floor: the interpreter and its site packages
  import capbatch                the package alone (names resolve on first use)
  capbatch --help                the group's help
  capbatch run --help            the run command's help (its options need PROVIDERS)
  capbatch report --help         imports the report command, not pandas
  capbatch serve --help          imports the emulator (aiohttp): for information
  libraries a run imports        pyarrow, aiohttp, httpx, pandas, Pillow, click, tqdm
                                 imported and nothing else: the floor under a run
  capbatch run (1 row)           a whole 1-row run (``--no-cache --quiet``) against the
                                 emulator (another process, constant solver, started
                                 once; its CPU is not counted): imports, reading the
                                 table, getBalance, one createTask, the journal, the
                                 output

Goals: ``capbatch --help`` and ``capbatch run --help`` at most 0.25 s of wall time above
the bare interpreter; the 1-row run at most 0.6 s of CPU. Why: a command that takes a
second to print its help feels broken, and the fixed cost of a run is paid by every
small job and every resume.

``capbatch`` is the console script next to this Python when there is one (what a user
types), else (or with ``--module``) ``python -m capbatch`` run from the repository root,
which times that checkout. Timing needs a quiet machine: on a shared 2-CPU
box, rerun when the load average printed in the header is above ~0.5.

    python bench/startup.py                  # 10 repeats, about 30 s
    python bench/startup.py --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _emulator import API_KEY, emulator
from _machine import machine_info, reap

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGE = REPO / "sample_data" / "images" / "cap-0001.png"
GOAL_HELP_WALL_S = 0.25
GOAL_RUN_CPU_S = 0.6
RUN_LIBRARIES = (
    "import pyarrow.parquet, pyarrow.compute, pyarrow.csv, aiohttp, httpx, pandas, PIL.Image, "
    "click, tqdm, sqlite3"
)


@dataclass
class Sample:
    wall_s: float
    cpu_s: float


def run_child(command: list[str], env: dict[str, str], timeout: float = 120) -> Sample:
    """Run ``command`` to the end; its own rusage comes from ``os.wait4`` on its pid."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO
    )
    _, usage = reap(proc, started + timeout, poll=0.002)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}: {err[-2000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime)


def capbatch_command(module: bool) -> tuple[list[str], str]:
    script = Path(sys.executable).with_name("capbatch")
    if not module and script.is_file() and os.access(script, os.X_OK):
        return [str(script)], "capbatch"
    return [sys.executable, "-m", "capbatch"], "python -m capbatch"


def median(samples: list[Sample], what: str) -> float:
    return float(statistics.median(getattr(s, what) for s in samples))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each command [10]")
    parser.add_argument(
        "--module",
        action="store_true",
        help="time `python -m capbatch` from the repository root instead of the console "
        "script (to time a checkout other than the installed one)",
    )
    args = parser.parse_args()

    for line in machine_info():
        print(line)
    capbatch, shown = capbatch_command(args.module)
    print(f"capbatch command: {shown}; {args.repeats} repeats each, interleaved")

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("CAPBATCH_DEBUG", None)
    # An installed package has its bytecode compiled (pip does it at install time); a
    # machine that sets PYTHONDONTWRITEBYTECODE (CI images, containers) would make every
    # child compile capbatch's ~70 modules from source, which no user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run_env = {**env, "CAPSOLVER_API_KEY": API_KEY}
    with tempfile.TemporaryDirectory(prefix="capbatch-startup-") as tmp, emulator([]) as (url, _):
        work = Path(tmp)
        table = work / "one.parquet"
        pq.write_table(pa.table({"id": ["r0"], "image": [str(SAMPLE_IMAGE)]}), table)

        def one_row_run(n: int) -> list[str]:
            out = work / f"out{n}.parquet"  # a new output each time: nothing to resume
            return [
                *capbatch, "run", str(table), "-o", str(out), "--base-url", url,
                "--no-cache", "--quiet",
            ]  # fmt: skip

        def fixed(*argv: str) -> Callable[[int], list[str]]:
            return lambda n: list(argv)

        commands: dict[str, tuple[Callable[[int], list[str]], dict[str, str]]] = {
            "python -c pass": (fixed(sys.executable, "-c", "pass"), env),
            "import capbatch": (fixed(sys.executable, "-c", "import capbatch"), env),
            "capbatch --help": (fixed(*capbatch, "--help"), env),
            "capbatch run --help": (fixed(*capbatch, "run", "--help"), env),
            "capbatch report --help": (fixed(*capbatch, "report", "--help"), env),
            "capbatch serve --help": (fixed(*capbatch, "serve", "--help"), env),
            # What the run's own libraries cost to import, capbatch aside: the floor
            # under the 1-row run on this machine (pyarrow loads pandas on its first
            # conversion of Python values, so a run pays for pandas too).
            "libraries a run imports": (fixed(sys.executable, "-c", RUN_LIBRARIES), env),
            "capbatch run (1 row)": (one_row_run, run_env),
        }
        samples: dict[str, list[Sample]] = {name: [] for name in commands}
        # One warm-up round (page cache, .pyc files), not counted.
        for n in range(args.repeats + 1):
            for name, (command, child_env) in commands.items():
                sample = run_child(command(n), child_env)
                if n:
                    samples[name].append(sample)

    bare_wall = median(samples["python -c pass"], "wall_s")
    bare_cpu = median(samples["python -c pass"], "cpu_s")
    print()
    header = f"{'command':<24} {'wall':>8} {'CPU':>8} {'wall-bare':>10} {'CPU-bare':>9}  goal"
    print(header)
    print("-" * len(header))
    for name, runs in samples.items():
        wall, cpu = median(runs, "wall_s"), median(runs, "cpu_s")
        goal = ""
        if name in ("capbatch --help", "capbatch run --help"):
            ok = wall - bare_wall <= GOAL_HELP_WALL_S
            goal = f"wall-bare <= {GOAL_HELP_WALL_S:.2f} s: {'met' if ok else 'MISS'}"
        elif name == "capbatch run (1 row)":
            ok = cpu <= GOAL_RUN_CPU_S
            own = cpu - median(samples["libraries a run imports"], "cpu_s")
            verdict = "met" if ok else "MISS"
            goal = f"CPU <= {GOAL_RUN_CPU_S:.2f} s: {verdict}; {own:+.2f} s over its libraries"
        print(
            f"{name:<24} {wall:>7.3f}s {cpu:>7.3f}s {wall - bare_wall:>+9.3f}s "
            f"{cpu - bare_cpu:>+8.3f}s  {goal}"
        )
    print("\nmedians of the children's wall time and user+sys CPU (os.wait4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
