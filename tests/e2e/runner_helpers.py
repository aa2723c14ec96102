"""Helpers for end-to-end runner tests: sample tables, the real CLI, result checks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from capbatch.emulator import EmulatorHandle

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
KEY = "sk-e2e-SECRET-7f3a9c"
CLI_TIMEOUT = 120
#: The emulator's price per task in these tests (CapSolver's table price too).
PRICE = 0.0004


def oracle(emulator: Callable[..., EmulatorHandle], **options: Any) -> EmulatorHandle:
    """An emulator answering from the sample labels, quickly, at ``PRICE`` a task."""
    options.setdefault("solver", "oracle")
    options.setdefault("labels", str(SAMPLE / "labels.csv"))
    options.setdefault("price", PRICE)
    options.setdefault("solve_time", (0.05, 0.2))
    return emulator(api_key=KEY, **options)


def run_args(
    server: EmulatorHandle, table: Path, out: Path, *extra: str | Path, quiet: bool = True
) -> list[str | Path]:
    """``capbatch run`` arguments against ``server`` (quiet: no bar, no summary)."""
    quiet_flag = ["--quiet"] if quiet else []
    return ["run", table, "-o", out, "--base-url", server.url, *quiet_flag, *extra]


def sample_frame(rows: int, *, start: int = 0) -> pd.DataFrame:
    """The first ``rows`` sample captchas (wrapping round), with absolute image paths."""
    table = pd.read_csv(SAMPLE / "captchas.csv", dtype=str)
    picked = [table.iloc[(start + i) % len(table)] for i in range(rows)]
    frame = pd.DataFrame(picked).reset_index(drop=True)
    frame["image_path"] = [str(SAMPLE / p) for p in frame["image_path"]]
    frame["id"] = [f"row-{start + i:05d}" for i in range(rows)]
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str | os.PathLike[str],
    key: str | None = KEY,
    env: dict[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> CliResult:
    """``capbatch ARGS`` as a real subprocess; the key through the environment."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k != "CAPBATCH_EMULATOR_KEY"
    }
    if key is not None:
        child_env["CAPSOLVER_API_KEY"] = key
    child_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "capbatch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
        cwd=REPO,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(
    *args: str | os.PathLike[str], key: str = KEY, log: Path | None = None, via: str = ""
) -> subprocess.Popen[bytes]:
    """Start ``capbatch ARGS`` without waiting (for kill -9 tests); ``via``: Python code
    (``python -c``) that runs the command it is given as its arguments."""
    child_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    child_env["CAPSOLVER_API_KEY"] = key
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    wrapper = [sys.executable, "-c", via] if via else []
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", "capbatch", *map(str, args)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=REPO,
    )


@contextlib.contextmanager
def running_cli(
    *args: str | os.PathLike[str], log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``start_cli`` whose process is killed (and reaped) if still running at the end."""
    proc = start_cli(*args, log=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def assert_key_absent(key: str, *texts: str, roots: tuple[Path, ...] = ()) -> None:
    """The key appears in no text and in no file written under ``roots``."""
    for text in texts:
        assert key not in text
    needle = key.encode()
    for path in files_under(*roots):
        assert needle not in path.read_bytes(), f"key found in {path}"
