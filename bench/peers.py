"""capbatch against the usual ways of solving a table of captchas with CapSolver's SDKs.

One workload, one machine, one run: the first ``--rows`` rows (default 2,000) of the
sample set, repeated as needed, each row sent for real (capbatch runs with
``--no-cache``), against ``capbatch serve`` configured like a real service:

  synchronous answers after 150-300 ms; 30 % of tasks deferred, ready after 1-3 s;
  2 % ERROR_CAPTCHA_UNSOLVABLE; at most 100 requests/s, more answered with HTTP 429
  ERROR_RATE_LIMIT; every deferred createTask reply says "status":"idle" (the official
  SDK crashes with KeyError 'status' on the reply without it, which CapSolver also sends).

Contenders, each used the way its own README teaches (see ``bench/_peer_contenders.py``):

  sdk-loop      the official ``capsolver`` SDK, ``capsolver.solve`` in a plain loop
  sdk-threads   the same in a ``ThreadPoolExecutor(50)``
  p3-async      ``python3-capsolver``'s ``ImageToText.aio_captcha_handler`` under
                ``asyncio.gather`` and an ``asyncio.Semaphore(50)``
  capbatch      ``capbatch run TABLE --rate 100 --max-in-flight 50 --no-cache``
  capbatch-callbacks  the same with ``--callback-url``/``--callback-listen`` on a free
                loopback port the emulator may call (``--callback-allow``): deferred
                answers come by callback, polling only as the fallback

Each contender is a child process; the emulator is another, started afresh (same seed)
for each contender so its counters are that contender's alone. Measured:

  wall s        from starting the child to its exit (imports, reading the table and
                writing the answers included, the same for everyone)
  solved/s      rows solved / wall s
  req/task      the emulator's ``requests_total`` / rows (createTask + getTaskResult,
                rate-limited ones included)
  req/solved    the same requests / rows solved
  429s          the emulator's ``errors_by_code["ERROR_RATE_LIMIT"]``
  solved        rows with an answer
  failed        rows with an error recorded (unsolvable, rate limit, ...)
  lost          rows with neither (or the child died / timed out before them)
  wrong         answers != the row's label (the oracle answers the label, so any
                mismatch is a row mix-up)
  CPU ms/task   the child's user+sys CPU (``os.wait4`` rusage) / rows

Every figure is also shown as a ratio to capbatch's. The notes under the table give, per
contender, the CPU the emulator and the rest of the machine used meanwhile (a shared
machine skews a run) and the errors the rows recorded.

Loopback only; every child is bounded by ``--timeout`` (45 min for the plain loop, 10 min
for the others) and killed with its process group past it; the emulator processes and the
temporary folder are removed at the end, also on Ctrl-C or ``kill``.

    python bench/peers.py                                   # the full run (~33 min)
    python bench/peers.py --rows 300 --contenders sdk-threads,p3-async,capbatch
    python bench/peers.py --json /tmp/peers.json            # also keep the raw figures
    python bench/peers.py --render /tmp/peers.json          # print that run's report again
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _emulator
from _machine import cpu_model, machine_busy_s, process_cpu_s, total_ram, version

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
CONTENDERS_SCRIPT = Path(__file__).resolve().parent / "_peer_contenders.py"
API_KEY = "peers-bench-key"

#: The emulator, configured like a real service.
EMULATOR_SETTINGS = [
    "--solver", "oracle",
    "--sync-latency", "0.15-0.3",
    "--deferred", "0.3",
    "--solve-time", "1-3",
    "--unsolvable-rate", "0.02",
    "--rate-limit", "100",
    "--deferred-reply-status", "idle",
]  # fmt: skip

#: The emulator's request rate and longest solve time, from the settings above: no
#: client can finish sooner than its admitted requests / the rate + the longest solve.
SERVER_RATE = 100.0
LONGEST_SOLVE_S = 3.0


def bound_s(stats: dict[str, Any]) -> float:
    """The least wall time the server allows for the requests it let through."""
    admitted = stats.get("create_calls", 0) + stats.get("polls", 0)
    return float(admitted) / SERVER_RATE + LONGEST_SOLVE_S


#: name -> (label, default timeout in seconds)
CONTENDERS: dict[str, tuple[str, float]] = {
    "sdk-loop": ("`capsolver` SDK, plain loop", 45 * 60),
    "sdk-threads": ("`capsolver` SDK, ThreadPoolExecutor(50)", 10 * 60),
    "p3-async": ("`python3-capsolver` asyncio, gather + Semaphore(50)", 10 * 60),
    "capbatch": ("`capbatch run --rate 100 --max-in-flight 50`", 10 * 60),
    "capbatch-callbacks": ("the same with `--callback-url` (answers by callback)", 10 * 60),
}

#: The slow plain loop last, so the short runs are not waiting behind it.
RUN_ORDER = ("sdk-threads", "p3-async", "capbatch", "capbatch-callbacks", "sdk-loop")


@dataclass
class Result:
    name: str
    rows: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    exit: str = ""
    requests: int = 0
    rate_limited: int = 0
    solved: int = 0
    failed: int = 0
    lost: int = 0
    wrong: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    #: The machine's 1-minute load average just before the contender started.
    load_before: float = 0.0
    #: CPU (in cores) the emulator used, and every other process on the machine,
    #: on average while the contender ran.
    emulator_cores: float = 0.0
    others_cores: float = 0.0
    stderr_tail: str = ""


# --- the workload ---------------------------------------------------------------------


def make_table(rows: int, directory: Path) -> tuple[Path, dict[str, str]]:
    """The first ``rows`` sample images (the set repeated as needed) with unique ids;
    returns the Parquet path and id -> label."""
    import pandas as pd

    sample = pd.read_parquet(SAMPLE / "captchas_b64.parquet", columns=["image_b64", "label"])
    picks = [i % len(sample) for i in range(rows)]
    frame = pd.DataFrame(
        {
            "id": [f"row-{i:05d}" for i in range(rows)],
            "image_b64": sample["image_b64"].iloc[picks].tolist(),
            "label": sample["label"].iloc[picks].tolist(),
        }
    )
    path = directory / "table.parquet"
    frame.to_parquet(path, index=False)
    return path, dict(zip(frame["id"], frame["label"], strict=True))


# --- the emulator process -------------------------------------------------------------


def _get_json(url: str, method: str = "GET") -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    post = method == "POST"
    # The emulator's POST controls need the key in a JSON body, sent as JSON.
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps({"clientKey": API_KEY}).encode() if post else None,
        headers={"Content-Type": "application/json"} if post else {},
    )
    with opener.open(request, timeout=30) as reply:
        data: dict[str, Any] = json.loads(reply.read())
        return data


def emulator(
    seed: int, callback_port: int | None = None
) -> AbstractContextManager[tuple[str, int]]:
    """The emulator configured like a real service, in its own process; it may send
    callbacks to ``callback_port`` on loopback, when given."""
    extra = [*EMULATOR_SETTINGS, "--labels", str(SAMPLE / "labels.csv"), "--seed", str(seed)]
    if callback_port is not None:
        extra += ["--callback-allow", str(callback_port)]
    return _emulator.emulator(extra, api_key=API_KEY, solver=None)


# --- running one contender ------------------------------------------------------------


def run_child(
    command: list[str], env: dict[str, str], timeout: float, log: Path
) -> tuple[float, float, str]:
    """Run ``command`` in its own process group; (wall s, CPU s, exit description).
    CPU is the child's user+sys from ``os.wait4`` (its waited-for children included).
    The child's whole group is killed on timeout, and if the bench itself is stopped."""
    with log.open("wb") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = start + timeout
        exit_text = ""
        reaped = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if time.perf_counter() > deadline:
                    exit_text = f"TIMEOUT after {timeout:.0f} s"
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
            reaped = True
        finally:
            if not reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if not exit_text:
        code = proc.returncode
        exit_text = "ok" if code == 0 else f"exit {code}"
    return wall, usage.ru_utime + usage.ru_stime, exit_text


def read_sdk_answers(path: Path) -> dict[str, dict[str, Any]]:
    answers: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return answers
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        answers[item["id"]] = item
    return answers


def read_capbatch_answers(path: Path) -> dict[str, dict[str, Any]]:
    import pandas as pd

    answers: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return answers
    frame = pd.read_parquet(path, columns=["id", "status", "answer", "error_code"])
    for row_id, status, answer, code in frame.itertuples(index=False):
        if status == "solved" and isinstance(answer, str):
            answers[row_id] = {"id": row_id, "answer": answer}
        elif status == "failed" and isinstance(code, str) and code:
            answers[row_id] = {"id": row_id, "error": code}
    return answers


def score(result: Result, answers: dict[str, dict[str, Any]], labels: dict[str, str]) -> None:
    for row_id, label in labels.items():
        item = answers.get(row_id)
        if item is None:
            result.lost += 1
        elif "error" in item:
            result.failed += 1
            code = str(item["error"])
            result.errors[code] = result.errors.get(code, 0) + 1
        else:
            result.solved += 1
            if item.get("answer") != label:
                result.wrong += 1


def free_port() -> int:
    """A loopback port free now (for the callback receiver)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def capbatch_command(url: str, table: Path, out: Path, port: int | None) -> list[str]:
    """The ``capbatch run`` command of the ``capbatch`` and ``capbatch-callbacks`` rows."""
    command = [
        sys.executable, "-m", "capbatch", "run", str(table),
        "--base-url", url, "--rate", "100", "--max-in-flight", "50",
        "--no-cache", "-o", str(out), "--quiet",
    ]  # fmt: skip
    if port is not None:
        command += ["--callback-url", f"http://127.0.0.1:{port}/cb"]
        command += ["--callback-listen", f"127.0.0.1:{port}"]
    return command


def run_contender(
    name: str, labels: dict[str, str], table: Path, work: Path, seed: int, timeout: float
) -> Result:
    result = Result(name=name, rows=len(labels), load_before=os.getloadavg()[0])
    env = {**os.environ, "CAPSOLVER_API_KEY": API_KEY, "NO_PROXY": "127.0.0.1,localhost"}
    log = work / f"{name}.log"
    ours = name.startswith("capbatch")
    port = free_port() if name == "capbatch-callbacks" else None
    with emulator(seed, port) as (url, emulator_pid):
        _get_json(url + "/_reset_stats", method="POST")
        if ours:
            out = work / f"{name}.results.parquet"
            command = capbatch_command(url, table, out, port)
        else:
            out = work / f"{name}.jsonl"
            command = [
                sys.executable, str(CONTENDERS_SCRIPT), name,
                "--url", url, "--table", str(table), "--out", str(out),
            ]  # fmt: skip
        busy0 = machine_busy_s() or 0.0
        emu0, self0 = process_cpu_s(emulator_pid) or 0.0, sum(os.times()[:2])
        result.wall_s, result.cpu_s, result.exit = run_child(command, env, timeout, log)
        emulator_s = (process_cpu_s(emulator_pid) or 0.0) - emu0
        mine = result.cpu_s + emulator_s + sum(os.times()[:2]) - self0
        result.emulator_cores = emulator_s / result.wall_s
        result.others_cores = max(0.0, (machine_busy_s() or 0.0) - busy0 - mine) / result.wall_s
        # Requests still open when a child is killed are counted once they land.
        time.sleep(0.5)
        result.stats = _get_json(url + "/_stats")
    answers = read_capbatch_answers(out) if ours else read_sdk_answers(out)
    score(result, answers, labels)
    result.requests = int(result.stats.get("requests_total", 0))
    result.rate_limited = int(result.stats.get("errors_by_code", {}).get("ERROR_RATE_LIMIT", 0))
    if result.exit != "ok":
        text = log.read_text(encoding="utf-8", errors="replace")
        result.stderr_tail = "\n".join(text.splitlines()[-15:])
    return result


# --- output ---------------------------------------------------------------------------


def ratio(value: float, base: float) -> str:
    if math.isinf(value) or math.isinf(base):
        return "—"
    if base == 0:
        return "1×" if value == 0 else "—"
    r = value / base
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def table(results: list[Result]) -> str:
    base = next((r for r in results if r.name == "capbatch"), None)
    header = (
        "| contender | wall s | solved/s | req/task | req/solved row | 429s received "
        "| solved | failed | lost | wrong | CPU ms/task | exit |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    )
    lines = [header]
    for r in results:
        figures = figures_of(r)
        cells = []
        for key, fmt in (
            ("wall_s", "{:.1f}"),
            ("solved_per_s", "{:.1f}"),
            ("req_per_task", "{:.2f}"),
            ("req_per_solved", "{:.2f}"),
            ("rate_limited", "{:,.0f}"),
            ("solved", "{:,.0f}"),
            ("failed", "{:,.0f}"),
            ("lost", "{:,.0f}"),
            ("wrong", "{:,.0f}"),
            ("cpu_ms_per_task", "{:.2f}"),
        ):
            text = fmt.format(figures[key])
            if base is not None and r is not base:
                text += f" ({ratio(figures[key], figures_of(base)[key])})"
            cells.append(text)
        label = CONTENDERS[r.name][0]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r.exit} |")
    return "\n".join(lines)


def figures_of(r: Result) -> dict[str, float]:
    return {
        "wall_s": r.wall_s,
        "solved_per_s": r.solved / r.wall_s if r.wall_s else 0.0,
        "req_per_task": r.requests / r.rows if r.rows else 0.0,
        "req_per_solved": r.requests / r.solved if r.solved else float("inf"),
        "rate_limited": r.rate_limited,
        "solved": r.solved,
        "failed": r.failed,
        "lost": r.lost,
        "wrong": r.wrong,
        "cpu_ms_per_task": r.cpu_s / r.rows * 1e3 if r.rows else 0.0,
    }


def machine() -> dict[str, str]:
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        text = Path("/etc/os-release").read_text()
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        os_name = f"{fields.get('PRETTY_NAME', '').strip(chr(34))}, kernel {platform.release()}"
    packages = ("capbatch", "capsolver", "python3-capsolver", "requests", "aiohttp", "httpx")
    return {
        "cpu": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "ram": total_ram(),
        "os": os_name,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "packages": ", ".join(f"{p} {version(p)}" for p in packages),
    }


def report(results: list[Result], args: argparse.Namespace, info: dict[str, str]) -> str:
    settings = " ".join(EMULATOR_SETTINGS)
    lines = [
        f"rows: {args.rows} (the {len(list(SAMPLE.glob('images/*.png')))} sample images "
        f"repeated), emulator seed {args.seed}",
        f"emulator: capbatch serve {settings} --labels sample_data/labels.csv",
        *(f"{key}: {value}" for key, value in info.items()),
        "",
        table(results),
        "",
    ]
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items(), key=lambda kv: -kv[1]))
        stats = r.stats
        lines.append(
            f"- {r.name}: {r.requests} requests ({stats.get('create_calls', 0)} createTask and "
            f"{stats.get('polls', 0)} getTaskResult let through, {r.rate_limited} turned away "
            f"with 429); "
            + (f"{stats['callbacks_sent']} callbacks sent; " if stats.get("callbacks_sent") else "")
            + f"bound {bound_s(stats):.1f} s (admitted / {SERVER_RATE:.0f} req/s + "
            f"{LONGEST_SOLVE_S:.0f} s), wall {r.wall_s / max(bound_s(stats), 1e-9):.2f}x it; "
            f"peak {stats.get('max_requests_per_second', 0)} req/s, "
            f"peak {stats.get('in_flight_max', 0)} in flight; CPU {r.cpu_s:.1f} s; "
            f"emulator {r.emulator_cores:.2f} cores, rest of the machine "
            f"{r.others_cores:.2f} cores "
            f"(load average before {r.load_before:.2f}); "
            f"errors recorded: {errors or 'none'}"
        )
        if r.stderr_tail:
            lines.append("  last output:\n    " + r.stderr_tail.replace("\n", "\n    "))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows in the table")
    parser.add_argument(
        "--contenders",
        default=",".join(RUN_ORDER),
        help=f"comma-separated, run in this order [default: {','.join(RUN_ORDER)}]",
    )
    parser.add_argument("--seed", type=int, default=1, help="the emulator's seed")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds per contender [default: 2700 for sdk-loop, 600 for the others]",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--render", type=Path, help="print the report of a --json file again; run nothing"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        results = [Result(**r) for r in saved["results"]]
        print(report(results, argparse.Namespace(**saved["args"]), saved["machine"]))
        return
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names or args.rows < 1:
        parser.error(f"unknown contender(s): {', '.join(unknown)}" if unknown else "nothing to run")

    # A plain ``kill`` still stops the emulator and removes the temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="capbatch-peers-"))
    results: list[Result] = []
    try:
        table_path, labels = make_table(args.rows, work)
        for name in names:
            timeout = args.timeout or CONTENDERS[name][1]
            print(f"running {name} (timeout {timeout:.0f} s) ...", flush=True)
            try:
                result = run_contender(name, labels, table_path, work, args.seed, timeout)
            except Exception as exc:  # report, do not stop the others
                result = Result(name=name, rows=args.rows, exit=f"FAILED: {exc}"[:200])
                result.lost = args.rows
            print(
                f"  {result.exit}: {result.wall_s:.1f} s, {result.solved} solved, "
                f"{result.requests} requests, {result.rate_limited} rate-limited",
                flush=True,
            )
            results.append(result)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    order = list(CONTENDERS)
    results.sort(key=lambda r: order.index(r.name))
    print()
    print(report(results, args, info))
    print(f"\nbench time: {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {"machine": info, "args": vars(args), "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
