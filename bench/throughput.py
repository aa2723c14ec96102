"""End-to-end throughput of ``capbatch run``: does it keep the configured rate, never
exceed it, and stay cheap in client CPU?

What: the real CLI (``python -m capbatch run``, a child process) against the capbatch
emulator (``python -m capbatch serve --solver constant``, another process, answering at
once), for each ``--rates`` value on a table of ``rate x --seconds`` rows (paths to a few
sample images, Parquet, ``--no-cache`` so every row is one ``createTask``).

Why: the provider, not capbatch, must be the bottleneck. If the client cannot send at
the configured rate, or bunches requests so a provider sees more than the rate in some
second, or burns a core to do it, capbatch is in the way.

Per rate it prints:

  achieved/conf.   (requests - 1) / (t_last_send - t_first_send) / rate. The send times
                   are the rows' ``submitted_at`` (each row is exactly one request here:
                   the bench checks that requests == rows == creates received), so this
                   is the rate of the sending phase alone, without CLI start-up or the
                   final write. A limiter that spaces N requests exactly 1/rate apart
                   scores 1.0; capbatch aims 2 % under (``SAFETY_FACTOR``). Goal >= 0.97.
  emu max/1s       the most API requests the emulator saw in any sliding one-second
                   window (``GET /_stats`` ``max_requests_per_second``, getBalance
                   included, as a provider counts them). Goal <= rate.
  client max/1s    the same, computed from the client's own send times (createTask
                   only): tells client bunching from server-side queueing.
  CPU/task         the CLI child's user+sys CPU (``os.wait4``) / rows. Goal <= 1 ms.
  net CPU/task     (child CPU - fixed cost) / (rows - 1), where the fixed cost is the
                   median CPU of a whole 1-row run (imports, setup, getBalance, writing
                   the output), measured first and printed; ``import capbatch.cli`` alone
                   is printed too.
  floor CPU/req    the same createTask bodies sent at the same rate for ``--floor-seconds``
                   by a bare aiohttp client (a child process; CPU of its sending loop
                   only): what one request costs on this machine at this rate without
                   capbatch. At low rates every request wakes an idle process, and that
                   alone can cost most of a millisecond on a VM. ``--no-floor`` skips it.
  emu CPU          the emulator's CPU share during the run (from /proc), to show it
                   was not the bottleneck.
  others           CPU cores used by every other process during the run (/proc/stat
                   minus the CLI and the emulator). Timing needs a quiet machine: with
                   others > ~0.3 on a 2-CPU box, rerun before trusting a MISS.

Stats are reset (``POST /_reset_stats``) before every run. Everything runs on loopback,
in a temporary directory that is removed at the end, and the emulator process is
stopped. Each CLI run is killed if it takes 3x its nominal time plus 30 s; the default
run (rates 50, 200, 1000 at 10 s, floors at 5 s) takes about 65 s.

    python bench/throughput.py                       # rates 50, 200, 1000
    python bench/throughput.py --rates 100,2000 --seconds 5 --max-in-flight 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _emulator import API_KEY, emu_call, emulator
from _machine import machine_busy_s, machine_info, process_cpu_s, reap

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_data" / "images"
GOAL_RATIO = 0.97
GOAL_CPU_MS = 1.0


# --- measurements -------------------------------------------------------------------


# --- the CLI child --------------------------------------------------------------------


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stderr: str


def run_child(command: list[str], timeout: float, env: dict[str, str], log: Path) -> ChildRun:
    """Run ``command``; its own rusage comes from ``os.wait4`` on its pid."""
    with log.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, usage = reap(proc, started + timeout)
        wall = time.perf_counter() - started
    return ChildRun(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        stderr=log.read_text()[-2000:],
    )


def cli_command(table: Path, out: Path, url: str, rate: float, in_flight: int) -> list[str]:
    return [
        sys.executable, "-m", "capbatch", "run", str(table), "-o", str(out),
        "--journal", str(out.with_suffix(".journal.sqlite")), "--base-url", url,
        "--no-cache", "--quiet", "--rate", str(rate), "--max-in-flight", str(in_flight),
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CAPSOLVER_API_KEY"] = API_KEY
    env.pop("CAPBATCH_EMULATOR_KEY", None)
    return env


# --- the floor: a bare aiohttp client at the same rate ---------------------------------

FLOOR_SCRIPT = r"""
import asyncio, base64, json, resource, sys, time
import aiohttp

url, rate, n, key, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
bodies = []
for path in sys.argv[6:]:
    with open(path, "rb") as fh:
        task = {"type": "ImageToTextTask", "body": base64.b64encode(fh.read()).decode()}
    bodies.append(json.dumps({"clientKey": key, "task": task}).encode())


async def main():
    interval = 1 / (rate * 0.98)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def one(i):
            async with session.post(url + "/createTask", data=bodies[i % len(bodies)],
                                    headers=headers) as reply:
                json.loads(await reply.read())

        before = resource.getrusage(resource.RUSAGE_SELF)
        start, tasks = time.monotonic(), []
        for i in range(n):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    with open(out, "w") as fh:
        fh.write(repr(cpu / n))


asyncio.run(main())
"""


def floor_cpu_per_request(
    url: str, rate: float, seconds: float, images: list[str], work: Path
) -> float | None:
    """CPU seconds per request of a bare aiohttp client sending at ``rate``."""
    script, out = work / "floor.py", work / "floor.out"
    script.write_text(FLOOR_SCRIPT)
    n = max(2, int(rate * seconds))
    command = [sys.executable, str(script), url, str(rate), str(n), API_KEY, str(out), *images]
    run = run_child(command, 3 * seconds + 30, child_env(), work / "floor.log")
    if run.returncode != 0 or not out.exists():
        print(f"    (floor client failed: {run.stderr.strip()[-200:]})")
        return None
    return float(out.read_text())


# --- tables and measurements ----------------------------------------------------------


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window (t - window, t] (as the emulator counts)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass
class RateResult:
    rate: float
    rows: int
    child: ChildRun
    requests: int = 0
    received: int = 0
    ratio: float = 0.0
    emu_max: int = 0
    client_max: int = 0
    emu_cpu_share: float | None = None
    floor_s: float | None = None
    #: CPU used by every other process on the machine during the run, in cores.
    others_cores: float | None = None
    error: str | None = None


def measure_rate(
    rate: float,
    rows: int,
    args: argparse.Namespace,
    url: str,
    emu_pid: int,
    work: Path,
    base: pa.Table,
) -> RateResult:
    table = work / f"rate{rate:g}.parquet"
    pq.write_table(base.slice(0, rows), table)
    out = work / f"rate{rate:g}.results.parquet"
    emu_call(url, "/_reset_stats", post=True)
    emu_cpu0, busy0 = process_cpu_s(emu_pid), machine_busy_s()
    command = cli_command(table, out, url, rate, args.max_in_flight)
    child = run_child(command, 3 * rows / rate + 30, child_env(), work / "child.log")
    emu_cpu1, busy1 = process_cpu_s(emu_pid), machine_busy_s()
    result = RateResult(rate, rows, child)
    if emu_cpu0 is not None and emu_cpu1 is not None:
        result.emu_cpu_share = (emu_cpu1 - emu_cpu0) / child.wall_s
        if busy0 is not None and busy1 is not None:
            others = (busy1 - busy0) - (emu_cpu1 - emu_cpu0) - child.cpu_s
            result.others_cores = max(0.0, others) / child.wall_s
    stats = emu_call(url, "/_stats")
    result.emu_max = int(stats["max_requests_per_second"])
    result.received = int(stats["create_calls"]) + int(stats["polls"])
    if child.returncode != 0 or not out.exists():
        result.error = f"exit {child.returncode}: {child.stderr.strip()[-300:]}"
        return result
    meta = pq.read_metadata(out).metadata or {}
    summary = json.loads(meta.get(b"capbatch.run", b"{}"))
    result.requests = int(summary.get("requests", 0))
    results = pq.read_table(out, columns=["status", "submitted_at"])
    sent = sorted(
        v.timestamp() for v in results.column("submitted_at").to_pylist() if v is not None
    )
    solved = results.column("status").to_pylist().count("solved")
    if not (result.requests == rows == result.received == solved == len(sent)):
        result.error = (
            f"expected one request per row: rows {rows}, client requests {result.requests},"
            f" emulator received {result.received}, solved {solved}"
        )
    if len(sent) >= 2 and sent[-1] > sent[0]:
        result.ratio = (len(sent) - 1) / (sent[-1] - sent[0]) / rate
    result.client_max = max_in_window(sent) if sent else 0
    for leftover in work.glob("rate*"):
        leftover.unlink()
    return result


def fixed_cost(url: str, work: Path, base: pa.Table, repeats: int) -> tuple[float, float, float]:
    """Median CPU of ``import capbatch.cli`` and of a whole 1-row run; its RSS (MB)."""
    imports = [
        run_child([sys.executable, "-c", "import capbatch.cli"], 60, child_env(), work / "i.log")
        for _ in range(repeats)
    ]
    table = work / "one.parquet"
    pq.write_table(base.slice(0, 1), table)
    runs = []
    for n in range(repeats):
        out = work / f"one{n}.results.parquet"
        runs.append(
            run_child(cli_command(table, out, url, 1000, 1), 60, child_env(), work / "o.log")
        )
        if runs[-1].returncode != 0:
            raise SystemExit(f"a 1-row run failed: {runs[-1].stderr}")
    return (
        statistics.median(r.cpu_s for r in imports),
        statistics.median(r.cpu_s for r in runs),
        statistics.median(r.maxrss_mb for r in runs),
    )


# --- report ---------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_table(results: list[RateResult], fixed_cpu: float) -> None:
    header = (
        f"{'rate':>6} {'rows':>6} {'wall s':>7} {'achieved/conf.':>15} {'emu max/1s':>11}"
        f" {'client max/1s':>14} {'CPU s':>6} {'CPU/task ms':>12} {'net CPU/task ms':>16}"
        f" {'floor CPU/req':>14} {'emu CPU':>8} {'others':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cpu = r.child.cpu_s
        per_task = cpu / r.rows * 1000
        net = (cpu - fixed_cpu) / max(1, r.rows - 1) * 1000
        emu_cpu = "?" if r.emu_cpu_share is None else f"{100 * r.emu_cpu_share:.0f}%"
        others = "?" if r.others_cores is None else f"{r.others_cores:.2f}"
        floor = "-" if r.floor_s is None else f"{r.floor_s * 1000:.3f}"
        print(
            f"{r.rate:>6g} {r.rows:>6} {r.child.wall_s:>7.1f}"
            f" {f'{r.ratio:.3f} {mark(r.ratio >= GOAL_RATIO)}':>15}"
            f" {f'{r.emu_max} {mark(r.emu_max <= r.rate)}':>11}"
            f" {f'{r.client_max} {mark(r.client_max <= r.rate)}':>14}"
            f" {cpu:>6.2f} {f'{per_task:.3f} {mark(per_task <= GOAL_CPU_MS)}':>12}"
            f" {f'{net:.3f} {mark(net <= GOAL_CPU_MS)}':>16} {floor:>14} {emu_cpu:>8}"
            f" {others:>7}"
        )
        if r.error:
            print(f"       ! {r.error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="50,200,1000", help="comma-separated requests/s [50,200,1000]"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="nominal seconds per run: rows = rate x this"
    )
    parser.add_argument("--max-in-flight", type=int, default=100, help="--max-in-flight [100]")
    parser.add_argument("--images", type=int, default=8, help="distinct sample images [8]")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the fixed-cost measurements [3]"
    )
    parser.add_argument(
        "--floor-seconds", type=float, default=5.0, help="seconds of the bare-aiohttp floor [5]"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-aiohttp floor")
    args = parser.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not rates or min(rates) <= 0 or args.seconds <= 0:
        parser.error("rates and --seconds must be positive")
    images = sorted(str(p) for p in SAMPLE_IMAGES.glob("*.png"))[: args.images]
    if not images:
        parser.error(f"no sample images in {SAMPLE_IMAGES}")

    for line in machine_info():
        print(line)
    total = max(int(rate * args.seconds) for rate in rates)
    print(
        f"table: up to {total} rows over {len(images)} images; --no-cache, "
        f"--max-in-flight {args.max_in_flight}; emulator: constant solver, instant answers"
    )
    with tempfile.TemporaryDirectory(prefix="capbatch-bench-") as tmp:
        work = Path(tmp)
        ids = pa.array(range(total), type=pa.int64())
        paths = pa.array([images[i % len(images)] for i in range(total)], type=pa.string())
        base = pa.table({"id": ids, "image": paths})
        with emulator(["--balance", "1000000"]) as (url, emu_pid):
            import_cpu, fixed_cpu, fixed_rss = fixed_cost(url, work, base, args.repeats)
            print(
                f"fixed cost: `import capbatch.cli` {import_cpu * 1000:.0f} ms CPU; a whole 1-row"
                f" run {fixed_cpu * 1000:.0f} ms CPU, {fixed_rss:.0f} MB peak RSS (medians of"
                f" {args.repeats}); subtracted in 'net CPU/task'"
            )
            print()
            results = []
            for rate in rates:
                rows = max(2, int(rate * args.seconds))
                print(f"  rate {rate:g}: {rows} rows ...", flush=True)
                result = measure_rate(rate, rows, args, url, emu_pid, work, base)
                if not args.no_floor:
                    result.floor_s = floor_cpu_per_request(
                        url, rate, args.floor_seconds, images, work
                    )
                results.append(result)
    print()
    print_table(results, fixed_cpu)
    print()
    print(
        f"goals: achieved/conf. >= {GOAL_RATIO}, max requests in any 1 s <= rate, "
        f"client CPU <= {GOAL_CPU_MS:g} ms per task"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
