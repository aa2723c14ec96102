"""The emulator as a separate process, for benches (its CPU must not count as ours).

``emulator(extra)`` starts ``python -m capbatch serve`` on a free loopback port and
yields ``(base URL, pid)``; ``emu_call`` reads or resets its counters (a reset sends
the key, as the emulator's controls require).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections import deque
from collections.abc import Iterator
from typing import Any

API_KEY = "bench-key"
READY_LINE = re.compile(r"listening on (http://\S+)")


@contextlib.contextmanager
def emulator(
    extra: list[str], *, api_key: str = API_KEY, solver: str | None = "constant"
) -> Iterator[tuple[str, int]]:
    """Start ``python -m capbatch serve`` in its own process; yield (base URL, pid).

    ``solver=None`` when ``extra`` names the solver itself."""
    command = [
        sys.executable, "-m", "capbatch", "serve",
        *(["--solver", solver] if solver else []),
        "--host", "127.0.0.1", "--port", "0", "--api-key", api_key, *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    tail: deque[str] = deque(maxlen=20)

    def drain(stream: Any, keep: deque[str] | None) -> None:
        for line in stream:  # keep reading so the server never blocks on a full pipe
            if keep is not None:
                keep.append(line)

    threading.Thread(target=drain, args=(proc.stderr, tail), daemon=True).start()
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=60)
    try:
        match = READY_LINE.search(first[0]) if first else None
        if match is None:
            raise SystemExit(f"the emulator did not start: {first[:1]} {''.join(tail)}")
        threading.Thread(target=drain, args=(proc.stdout, None), daemon=True).start()
        yield match.group(1).rstrip("/"), proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def emu_call(url: str, path: str, *, post: bool = False, api_key: str = API_KEY) -> dict[str, Any]:
    """GET one of the emulator's endpoints, or POST to one of its controls (which need
    the key as ``clientKey`` in a JSON body sent as application/json)."""
    body = json.dumps({"clientKey": api_key}).encode() if post else None
    headers = {"Content-Type": "application/json"} if post else {}
    request = urllib.request.Request(url + path, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        data: dict[str, Any] = json.load(reply)
        return data
