"""The SDK contenders of ``bench/peers.py``, each used the way its own README teaches.

Run by ``peers.py`` as a child process (so its CPU can be measured and its crash cannot
kill the bench)::

    python bench/_peer_contenders.py {sdk-loop,sdk-threads,p3-async} \
        --url URL --table TABLE.parquet --out ANSWERS.jsonl

The API key comes from ``CAPSOLVER_API_KEY``. Each contender reads the same table (columns
``id``, ``image_b64``) with pandas, solves every row, and appends one JSON line per row
to ``--out`` as soon as the row is done: ``{"id": ..., "answer": ...}`` or
``{"id": ..., "error": ...}``. A row with no line is a lost row.

How each SDK is used (from its installed README / docstrings):

* ``sdk-loop``, ``sdk-threads``: the official ``capsolver`` SDK (1.0.7):
  ``capsolver.api_key = ...``, ``capsolver.api_base = URL``, then
  ``capsolver.solve({"type": "ImageToTextTask", "body": b64})`` -- in a plain ``for``
  loop, and under ``concurrent.futures.ThreadPoolExecutor(max_workers=50)``. ``solve``
  raises on any error reply; the row records it (no retries: the README shows none).
* ``p3-async``: ``python3-capsolver`` (1.2.2): ``ImageToText(api_key=...,
  request_url=URL)`` and ``await solver.aio_captcha_handler(task_payload={"body": b64})``
  with the library's defaults (``sleep_time=5``), one solver object per task as its
  docstring examples do, all tasks under ``asyncio.gather`` with an
  ``asyncio.Semaphore(50)``. A reply with ``errorId != 0`` or an exception (it raises
  ``ValueError`` on an HTTP status it does not expect, such as 429) is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from typing import IO, Any

API_KEY = os.environ.get("CAPSOLVER_API_KEY", "")


class Answers:
    """Append-only JSON lines, one per finished row; safe from many threads."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def record(self, row_id: str, *, answer: str | None = None, error: str | None = None) -> None:
        line: dict[str, Any] = {"id": row_id}
        if error is not None:
            line["error"] = error
        else:
            line["answer"] = answer
        text = json.dumps(line) + "\n"
        with self._lock:
            self._stream.write(text)
            self._stream.flush()


def read_table(path: str) -> list[tuple[str, str]]:
    import pandas as pd

    frame = pd.read_parquet(path, columns=["id", "image_b64"])
    return list(zip(frame["id"].tolist(), frame["image_b64"].tolist(), strict=True))


# --- the official capsolver SDK -------------------------------------------------------


def _sdk_error(exc: BaseException) -> str:
    body = getattr(exc, "json_body", None)
    code = body.get("errorCode") if isinstance(body, dict) else None
    return f"{type(exc).__name__}: {code or str(exc)[:120]}"


def _sdk_setup(url: str) -> Any:
    import capsolver

    capsolver.api_key = API_KEY
    capsolver.api_base = url
    return capsolver


def _sdk_one(capsolver: Any, answers: Answers, row_id: str, b64: str) -> None:
    try:
        solution = capsolver.solve({"type": "ImageToTextTask", "body": b64})
    except Exception as exc:  # a careful user records the row's error and goes on
        answers.record(row_id, error=_sdk_error(exc))
        return
    answers.record(row_id, answer=solution.get("text"))


def sdk_loop(url: str, rows: list[tuple[str, str]], answers: Answers) -> None:
    capsolver = _sdk_setup(url)
    for row_id, b64 in rows:
        _sdk_one(capsolver, answers, row_id, b64)


def sdk_threads(url: str, rows: list[tuple[str, str]], answers: Answers) -> None:
    from concurrent.futures import ThreadPoolExecutor

    capsolver = _sdk_setup(url)
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(_sdk_one, capsolver, answers, row_id, b64) for row_id, b64 in rows]
        for future in futures:
            future.result()


# --- python3-capsolver ----------------------------------------------------------------


def p3_async(url: str, rows: list[tuple[str, str]], answers: Answers) -> None:
    import asyncio

    from python3_capsolver.image_to_text import ImageToText

    async def one(semaphore: asyncio.Semaphore, row_id: str, b64: str) -> None:
        async with semaphore:
            try:
                solver = ImageToText(api_key=API_KEY, request_url=url)
                result = await solver.aio_captcha_handler(task_payload={"body": b64})
            except Exception as exc:
                answers.record(row_id, error=f"{type(exc).__name__}: {str(exc)[:120]}")
                return
        if result.get("errorId") == 0 and result.get("solution"):
            answers.record(row_id, answer=result["solution"].get("text"))
        else:
            answers.record(row_id, error=str(result.get("errorCode")))

    async def main() -> None:
        semaphore = asyncio.Semaphore(50)
        await asyncio.gather(*(one(semaphore, row_id, b64) for row_id, b64 in rows))

    asyncio.run(main())


CONTENDERS = {"sdk-loop": sdk_loop, "sdk-threads": sdk_threads, "p3-async": p3_async}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = read_table(args.table)
    with open(args.out, "w", encoding="utf-8") as stream:
        CONTENDERS[args.contender](args.url.rstrip("/"), rows, Answers(stream))


if __name__ == "__main__":
    main()
