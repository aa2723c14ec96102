"""Soak: the reliability suite's long version. Faults and kill -9s on a big run.

Runs the real ``capbatch run`` CLI against the emulator (a separate process on
loopback) injecting HTTP 5xx, dropped connections, malformed JSON,
``ERROR_SERVICE_UNAVALIABLE``, unsolvable answers and a server-side rate limit, kills
the CLI with SIGKILL at random moments, resumes each time, and then checks:

- every row is final exactly once (solved, or failed with a terminal code);
- answers the emulator charged for beyond the rows solved (paid twice: replies it
  dropped after charging, sends in flight at a kill) never exceed what the run
  reports as possible double payments;
- the key appears in no file written and no output.

    python bench/soak.py --rows 20000 --kills 10 --rate 500

Loopback only; every wait is bounded; it cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
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


def emulator_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--solver", "oracle", "--labels", str(SAMPLE / "labels.csv"),
        "--deferred", "0.3", "--solve-time", "0.3-1.5", "--seed", str(args.seed),
        "--fail-5xx", "0.05", "--drop-rate", "0.02", "--malformed-rate", "0.01",
        "--unavailable-rate", "0.03", "--unsolvable-rate", "0.02",
        "--rate-limit", str(int(args.rate * 1.2)), "--balance", "1000",
    ]  # fmt: skip


def stats(url: str) -> dict[str, Any]:
    return emu_call(url, "/_stats")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=30.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_minutes * 60
    folder = Path(tempfile.mkdtemp(prefix="capbatch-soak-"))
    with emulator(emulator_flags(args), api_key=KEY, solver=None) as (url, _pid):
        try:
            return soak(args, url, folder, deadline)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def soak(args: argparse.Namespace, url: str, folder: Path, deadline: float) -> int:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["CAPSOLVER_API_KEY"] = KEY
    rng = random.Random(args.seed)
    logs: list[str] = []
    table = make_table(args.rows, folder)
    out = folder / "out.parquet"
    run_args = [
        "run",
        str(table),
        "-o",
        str(out),
        "--base-url",
        url,
        "--no-cache",
        "--rate",
        str(args.rate),
        "--max-in-flight",
        "64",
        "--max-attempts",
        "8",
    ]
    kills = 0
    started = time.monotonic()
    while kills < args.kills and time.monotonic() < deadline:
        proc = subprocess.Popen(
            cli([*run_args, "--quiet"]),
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(rng.uniform(1.0, 6.0))
        if proc.poll() is not None:
            logs.append(proc.communicate()[0])
            break
        proc.send_signal(signal.SIGKILL)
        logs.append(proc.communicate(timeout=30)[0])
        kills += 1
        print(f"kill {kills}: {stats(url)['create_calls']} createTask calls so far")
    final = subprocess.run(
        cli(run_args),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=max(60.0, deadline - time.monotonic()),
        check=False,
    )
    logs += [final.stdout, final.stderr]
    elapsed = time.monotonic() - started
    if final.returncode != 0:
        print(final.stderr)
        return 1
    result = pd.read_parquet(out)
    counters = stats(url)
    problems: list[str] = []
    if len(result) != args.rows or not result["id"].is_unique:
        problems.append(f"{len(result)} rows in the output for {args.rows} in the input")
    failed = result[result["status"] != "solved"]
    odd = set(failed["error_code"]) - TERMINAL
    if odd:
        problems.append(f"non-terminal failure codes: {sorted(odd)}")
    solved = result[result["status"] == "solved"]
    wrong = int((solved["answer"] != solved["label"]).sum())
    if wrong:
        problems.append(f"{wrong} answers differ from the oracle's")
    # Money is the measure: the emulator charges once per solved task. Answers it
    # charged for beyond the rows we solved were paid twice; each must have been
    # reported (a dropped reply or a send in flight at a kill).
    reported = int(final.stderr.split("possible double payments: ")[1].split()[0])
    paid_twice = int(counters["solved"]) - len(solved)
    if paid_twice > reported:
        problems.append(f"{paid_twice} answers paid twice, {reported} reported")
    leaked = [p for p in folder.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    leaked_text = any(KEY in text for text in logs)
    if leaked or leaked_text:
        problems.append(f"key found in {leaked or 'the CLI output'}")
    print(f"rows {args.rows}, kills {kills}, {elapsed:.0f} s")
    print(
        f"solved {len(solved)}, failed {len(failed)}: "
        f"{failed['error_code'].value_counts().to_dict()}"
    )
    print(
        f"createTask calls {counters['create_calls']}, charged answers "
        f"{counters['solved']}, paid twice {paid_twice}, reported possible double "
        f"payments {reported} (of which replies dropped by the emulator: "
        f"{counters['dropped_after_create']})"
    )
    print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
