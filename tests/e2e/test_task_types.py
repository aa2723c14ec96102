"""Every image-recognition task type end to end: the emulator's checks and solution
shapes per type, its oracle keyed by the whole task, and ``capbatch run`` solving grid
and slider tables with no ``--field`` (small tables built here from generated images)."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from PIL import Image

from capbatch._run.batches import SYSTEMATIC_RUN
from capbatch.emulator import EmulatorHandle
from capbatch.emulator._solvers import oracle_key
from tests.e2e.runner_helpers import KEY, PRICE, run_args, run_cli, write_table

Start = Callable[..., EmulatorHandle]


def png(seed: int, size: tuple[int, int] = (90, 90)) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", size, (seed * 53 % 256, seed * 29 % 256, seed * 71 % 256))
    image.putpixel((seed % size[0], 0), (255, 255, 255))
    image.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def labels_file(path: Path, labels: dict[str, str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sha256", "label"])
        writer.writerows(labels.items())
    return path


def server_with(emulator: Start, labels: Path, **options: Any) -> EmulatorHandle:
    options.setdefault("solve_time", (0.01, 0.05))
    return emulator(api_key=KEY, solver="oracle", labels=str(labels), price=PRICE, **options)


def create(server: EmulatorHandle, task: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        reply = http.post("/createTask", json={"clientKey": KEY, "task": task})
        data: dict[str, Any] = reply.json()
        for _ in range(100):  # bounded: a deferred task is ready within a few seconds
            if data.get("status") != "processing" and data.get("status") != "idle":
                return data
            data = http.post(
                "/getTaskResult", json={"clientKey": KEY, "taskId": data["taskId"]}
            ).json()
        raise AssertionError("task never finished")


GRID, OTHER, PIECE, BACK = png(1), png(2), png(3), png(4)
TILES = [png(10 + i, (40, 40)) for i in range(9)]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return labels_file(
        tmp_path / "labels.csv",
        {
            oracle_key([GRID], "/m/0k4j"): "1,4,7",
            oracle_key([GRID], "/m/015qff"): "",
            oracle_key([OTHER], "/m/0k4j"): "true",
            oracle_key(TILES, "aws:grid:bed"): "0,8",
            oracle_key([GRID], "aws:toycarcity:carcity"): "116.7,164.1",
            oracle_key([PIECE, BACK], None): "123",
            oracle_key([GRID], None): "abc12",  # one image, no question: its sha256
            oracle_key(TILES[:2], None): '["12","7"]',  # ImageToTextTask, number module
        },
    )


@pytest.mark.parametrize(
    ("task", "solution"),
    [
        (
            {"type": "ReCaptchaV2Classification", "image": b64(GRID), "question": "/m/0k4j"},
            {"type": "multi", "objects": [1, 4, 7], "size": 3},
        ),
        (
            {"type": "ReCaptchaV2Classification", "image": b64(GRID), "question": "/m/015qff"},
            {"type": "multi", "objects": [], "size": 3},
        ),
        (
            {"type": "ReCaptchaV2Classification", "image": b64(OTHER), "question": "/m/0k4j"},
            {"type": "single", "hasObject": True, "size": 1},
        ),
        (
            {
                "type": "AwsWafClassification",
                "images": [b64(t) for t in TILES],
                "question": "aws:grid:bed",
            },
            {"objects": [0, 8]},
        ),
        (
            {
                "type": "AwsWafClassification",
                "images": [b64(GRID)],
                "question": "aws:toycarcity:carcity",
            },
            {"box": [116.7, 164.1]},
        ),
        (
            {
                "type": "VisionEngine",
                "module": "slider_1",
                "image": b64(PIECE),
                "imageBackground": b64(BACK),
            },
            {"distance": 123},
        ),
        (
            {
                "type": "VisionEngine",
                "module": "rotate_1",
                "image": b64(PIECE),
                "imageBackground": b64(BACK),
            },
            {"angle": 123},
        ),
        ({"type": "ImageToTextTask", "body": b64(GRID)}, {"text": "abc12"}),
        (
            {"type": "ImageToTextTask", "module": "number", "images": [b64(t) for t in TILES[:2]]},
            {"answers": ["12", "7"]},
        ),
    ],
)
def test_each_type_answers_in_its_shape_from_labels_keyed_by_the_whole_task(
    emulator: Start, labelled: Path, task: dict[str, Any], solution: dict[str, Any]
) -> None:
    server = server_with(emulator, labelled)
    reply = create(server, task)
    assert reply["errorId"] == 0, reply
    assert reply["solution"] == solution


@pytest.mark.parametrize(
    ("task", "code"),
    [
        ({"type": "ReCaptchaV2Classification", "image": b64(GRID)}, "ERROR_INVALID_TASK_DATA"),
        ({"type": "ReCaptchaV2Classification", "question": "/m/0k4j"}, "ERROR_INVALID_TASK_DATA"),
        (
            {"type": "AwsWafClassification", "images": [], "question": "q"},
            "ERROR_INVALID_TASK_DATA",
        ),
        (
            {
                "type": "AwsWafClassification",
                "images": [b64(GRID)] * 10,
                "question": "aws:grid:bed",
            },
            "ERROR_INVALID_TASK_DATA",
        ),
        (
            {"type": "VisionEngine", "module": "slider_1", "image": b64(PIECE)},
            "ERROR_INVALID_TASK_DATA",
        ),
        (
            {
                "type": "VisionEngine",
                "module": "no_such",
                "image": b64(PIECE),
                "imageBackground": b64(BACK),
            },
            "ERROR_INVALID_TASK_DATA",
        ),
        (
            {"type": "ReCaptchaV2Classification", "image": "not-base64!", "question": "q"},
            "ERROR_INVALID_IMAGE",
        ),
        ({"type": "HCaptchaClassificationX", "body": b64(GRID)}, "ERROR_TASK_NOT_SUPPORTED"),
        ({"type": "ImageToTextTask", "images": [b64(GRID)]}, "ERROR_INVALID_TASK_DATA"),
    ],
)
def test_missing_or_wrong_fields_are_refused_as_capsolver_refuses_them(
    emulator: Start, labelled: Path, task: dict[str, Any], code: str
) -> None:
    server = server_with(emulator, labelled)
    reply = create(server, task)
    assert reply["errorId"] != 0 and reply["errorCode"] == code, reply


def test_other_dialects_do_not_take_capsolvers_types(emulator: Start, labelled: Path) -> None:
    server = server_with(emulator, labelled, dialect="anticaptcha")
    reply = create(
        server, {"type": "ReCaptchaV2Classification", "image": b64(GRID), "question": "/m/0k4j"}
    )
    assert reply["errorId"] != 0 and reply["errorCode"] == "ERROR_TASK_NOT_SUPPORTED"


def test_the_error_rate_gives_wrong_answers_of_the_same_shape(
    emulator: Start, labelled: Path
) -> None:
    server = server_with(emulator, labelled, error_rate=1.0)
    grid = create(
        server, {"type": "ReCaptchaV2Classification", "image": b64(GRID), "question": "/m/0k4j"}
    )
    objects = grid["solution"]["objects"]
    assert len(set(objects) ^ {1, 4, 7}) == 1  # one tile toggled
    slider = create(
        server,
        {
            "type": "VisionEngine",
            "module": "slider_1",
            "image": b64(PIECE),
            "imageBackground": b64(BACK),
        },
    )
    assert 1 <= slider["solution"]["distance"] - 123 <= 20


# --- the real CLI ------------------------------------------------------------------------


def grid_table(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    """A grid table (image, question, label) and the labels the emulator answers from:
    every grid appears with two questions, so only a key on the whole task is right."""
    grids = [png(100 + i) for i in range((rows + 1) // 2)]
    records, labels = [], {}
    for i in range(rows):
        grid, question = grids[i // 2], ("/m/0k4j", "/m/015qff")[i % 2]
        label = ",".join(str(t) for t in sorted({i % 9, (i * 5) % 9}))
        labels[oracle_key([grid], question)] = label
        records.append({"image": b64(grid), "question": question, "label": label})
    table = write_table(pd.DataFrame(records), tmp_path / "grids.parquet")
    return table, labels_file(tmp_path / "labels.csv", labels)


def test_a_grid_table_is_solved_with_no_field_given(tmp_path: Path, emulator: Start) -> None:
    table, labels = grid_table(tmp_path, 12)
    server = server_with(emulator, labels)
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out, "--task-type", "ReCaptchaV2Classification"))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all(), result[["status", "error_message"]]
    assert list(result["answer"]) == list(result["label"])
    assert '"objects"' in result["solution"].iloc[0]
    assert server.stats()["create_calls"] == 12  # same grid, two questions: two tasks


def test_a_slider_table_is_solved_with_no_field_given(tmp_path: Path, emulator: Start) -> None:
    pieces = [png(200 + i, (30, 30)) for i in range(4)]
    backs = [png(300 + i) for i in range(4)]
    labels = {
        oracle_key([p, b], None): str(40 + i)
        for i, (p, b) in enumerate(zip(pieces, backs, strict=True))
    }
    frame = pd.DataFrame({"image": [b64(p) for p in pieces], "background": [b64(b) for b in backs]})
    table = write_table(frame, tmp_path / "slider.parquet")
    server = server_with(emulator, labels_file(tmp_path / "labels.csv", labels))
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out, "--task-type", "VisionEngine"))
    assert done.returncode == 0, done.output
    assert list(pd.read_parquet(out)["answer"]) == ["40", "41", "42", "43"]


def test_a_missing_question_column_is_one_usage_line_before_any_request(
    tmp_path: Path, emulator: Start
) -> None:
    table = write_table(pd.DataFrame({"image": [b64(GRID)]}), tmp_path / "in.parquet")
    server = server_with(emulator, labels_file(tmp_path / "labels.csv", {}))
    done = run_cli(
        *run_args(
            server, table, tmp_path / "out.parquet", "--task-type", "ReCaptchaV2Classification"
        )
    )
    assert done.returncode == 2, done.output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--field question=COLUMN" in lines[0], done.stderr
    assert server.stats()["create_calls"] == 0


def test_a_task_the_provider_refuses_for_every_row_stops_the_run_in_one_line(
    tmp_path: Path, emulator: Start
) -> None:
    # A module the provider does not know: every row ERROR_INVALID_TASK_DATA, from the
    # first rows on; the run stops after SYSTEMATIC_RUN of them, not at the table's end.
    rows = SYSTEMATIC_RUN + 15
    frame = pd.DataFrame(
        {"image": [b64(png(400 + i)) for i in range(rows)], "background": [b64(BACK)] * rows}
    )
    table = write_table(frame, tmp_path / "in.parquet")
    server = server_with(emulator, labels_file(tmp_path / "labels.csv", {}))
    args = run_args(server, table, tmp_path / "out.parquet", "--task-type", "VisionEngine")
    done = run_cli(*args, "--task-param", "module=slider_9", "--max-in-flight", "1")
    assert done.returncode == 1, done.output
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "ERROR_INVALID_TASK_DATA" in errors[0], done.stderr
    assert server.stats()["create_calls"] == SYSTEMATIC_RUN


def test_the_run_panel_takes_the_same_field_mapping(tmp_path: Path, emulator: Start) -> None:
    from capbatch.widgets import RunPanel

    table, labels = grid_table(tmp_path, 4)
    frame = pd.read_parquet(table).rename(columns={"question": "asked"})
    server = server_with(emulator, labels)
    panel = RunPanel(frame, task_type="ReCaptchaV2Classification", journal=tmp_path / "j.sqlite")
    try:
        panel.provider.value = "capsolver"
        panel.base_url.value = server.url
        panel.api_key.value = KEY
        panel.fields.value = "question=asked"
        panel.start_button.click()
        panel.wait(30)
        assert panel.state == "finished", panel.status.value
        results = panel.results
        assert (results["status"] == "solved").all(), results[["status", "error_message"]]
        assert list(results["answer"]) == list(results["label"])
    finally:
        if panel.running:  # a failed assertion must not leave the run going
            panel.STOP_GRACE_SECONDS = 0.0
            panel.stop()
            panel.wait(30)


def test_the_dry_run_counts_whole_tasks(tmp_path: Path, emulator: Start) -> None:
    table, labels = grid_table(tmp_path, 12)  # 6 grids, each with two questions
    server = server_with(emulator, labels)
    args = run_args(server, table, tmp_path / "out.parquet", "--task-type")
    done = run_cli(*args, "ReCaptchaV2Classification", "--dry-run")
    assert done.returncode == 0, done.output
    assert "12 rows, 12 unique" in done.stdout, done.stdout
    assert server.stats()["create_calls"] == 0


def test_image_to_text_number_takes_a_list_column_into_images(
    tmp_path: Path, emulator: Start
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    digits = [[b64(t) for t in TILES[:2]], [b64(t) for t in TILES[2:5]]]
    labels = {
        oracle_key(TILES[:2], None): '["12","7"]',
        oracle_key(TILES[2:5], None): '["1","2","3"]',
    }
    table = tmp_path / "digits.parquet"
    pq.write_table(pa.table({"image": [b64(GRID)] * 2, "digits": digits}), table)
    server = server_with(emulator, labels_file(tmp_path / "labels.csv", labels))
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--field", "images=digits", "--task-param", "module=number")
    done = run_cli(*args)
    assert done.returncode == 0, done.output
    assert list(pd.read_parquet(out)["answer"]) == ['["12","7"]', '["1","2","3"]']
