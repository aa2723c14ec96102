"""A whole run of a grid table against a faked provider (httpx.MockTransport): the
createTask body carries each row's fields, and an unknown solution shape keeps the paid
solution, leaves the answer empty and is said once."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import pandas as pd
from PIL import Image

from capbatch._run.engine import execute
from capbatch._run.options import RunOptions


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (60, 60), (seed * 40 % 256, 90, 30)).save(buf, "PNG")
    return buf.getvalue()


class Provider:
    """CapSolver answering every createTask at once with ``solution``."""

    def __init__(self, solution: dict[str, Any]) -> None:
        self.solution = solution
        self.tasks: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path.endswith("/getBalance"):
            return httpx.Response(200, json={"errorId": 0, "balance": 10.0})
        self.tasks.append(body["task"])
        reply = {"errorId": 0, "taskId": f"t-{len(self.tasks)}", "status": "ready"}
        return httpx.Response(200, json={**reply, "solution": self.solution})


def run(frame: pd.DataFrame, provider: Provider, **options: Any) -> tuple[pd.DataFrame, list[str]]:
    said: list[str] = []

    async def go() -> pd.DataFrame:
        async with httpx.AsyncClient(transport=httpx.MockTransport(provider.handler)) as http:
            run_options = RunOptions(
                provider="capsolver",
                api_key="sk-unit-key",
                base_url="http://127.0.0.1:9",
                http_client=http,
                journal=":memory:",
                progress=False,
                notice=said.append,
                **options,
            )
            outcome = await execute(frame, run_options, want_frame=True)
            assert outcome.frame is not None
            return outcome.frame

    return asyncio.run(go()), said


GRIDS = [png(1), png(2)]
FRAME = pd.DataFrame(
    {
        "image": [base64.b64encode(g).decode() for g in (GRIDS[0], GRIDS[0], GRIDS[1])],
        "asked": ["/m/0k4j", "/m/015qff", "/m/0k4j"],
    }
)


def test_each_row_sends_its_own_fields_and_reads_a_typed_answer() -> None:
    provider = Provider({"type": "multi", "objects": [7, 1, 4], "size": 3})
    result, _ = run(
        FRAME,
        provider,
        task_type="ReCaptchaV2Classification",
        fields={"question": "asked"},
        task_params={"websiteURL": "https://example.invalid"},
    )
    assert [t["question"] for t in provider.tasks] == ["/m/0k4j", "/m/015qff", "/m/0k4j"]
    assert provider.tasks[0] == {
        "type": "ReCaptchaV2Classification",
        "websiteURL": "https://example.invalid",
        "image": FRAME["image"][0],
        "question": "/m/0k4j",
    }
    assert list(result["answer"]) == ["1,4,7"] * 3
    assert json.loads(result["solution"][0])["objects"] == [7, 1, 4]


def test_an_unknown_solution_shape_is_kept_and_said_once() -> None:
    provider = Provider({"clicks": [[12, 40]], "note": "x"})
    result, said = run(
        FRAME, provider, task_type="ReCaptchaV2Classification", fields={"question": "asked"}
    )
    assert list(result["status"]) == ["solved"] * 3
    assert result["answer"].isna().all()
    assert json.loads(result["solution"][2]) == {"clicks": [[12, 40]], "note": "x"}
    shapes = [line for line in said if "shape capbatch cannot read" in line]
    assert len(shapes) == 1 and "clicks, note" in shapes[0]
