"""What machine a bench ran on, and how busy it was (Linux ``/proc``; "?" or None elsewhere)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_model() -> str:
    model = platform.processor() or platform.machine() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return model


def total_ram() -> str:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    return "?"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


BENCH_PACKAGES = ("capbatch", "aiohttp", "httpx", "pyarrow")


def machine_info(packages: tuple[str, ...] = BENCH_PACKAGES) -> list[str]:
    """Two lines for a bench's header: the machine and its load; Python and packages."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    return [
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"{total_ram()} RAM, load average {' '.join(f'{x:.2f}' for x in load) or '?'}",
        f"python {platform.python_version()} ({sys.executable}); {versions}",
    ]


def machine_busy_s() -> float | None:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``), None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def process_cpu_s(pid: int) -> float | None:
    """User+sys CPU seconds of a live process (``/proc/PID/stat``), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reap(proc: subprocess.Popen[bytes], deadline: float, *, poll: float = 0.02) -> tuple[int, Any]:
    """Wait for ``proc`` until ``deadline`` (a ``time.perf_counter`` time), killing it
    then; its exit status and its own rusage from ``os.wait4`` (its children included).
    Sets ``proc.returncode`` so that Popen does not wait for it again."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(poll)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage
