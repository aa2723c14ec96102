"""Task fields from columns: per-type defaults, --field, list columns, nulls, keys."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from capbatch._exceptions import ConfigError, RowInputError
from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope, task_key
from capbatch._io.task_fields import plan_fields
from capbatch._io.task_rows import RowTask, task_body
from capbatch._providers.profiles import CAPSOLVER
from capbatch._run.plan import BatchPlan, TaskKeys, plan_batch, table_fields

SCOPE = KeyScope("capsolver")


def png(seed: int, size: tuple[int, int] = (60, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120)).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plan(
    frame: pd.DataFrame | pa.Table,
    task_type: str,
    fields: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    image_column: str | None = "image",
) -> BatchPlan:
    source = TableSource(frame, image_column=image_column)
    field_plan = table_fields(task_type, fields or {}, params or {}, source)
    keys = TaskKeys(task_type, field_plan.params, SCOPE, True, field_plan)
    return plan_batch(next(iter(source.batches())), 0, source, CAPSOLVER, keys)


# --- defaults per type -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "columns", "expected", "params"),
    [
        ("ImageToTextTask", ["image"], {"body": "image"}, {}),
        (
            "ReCaptchaV2Classification",
            ["image", "question"],
            {"image": "image", "question": "question"},
            {},
        ),
        (
            "AwsWafClassification",
            ["image", "question"],
            {"images": "image", "question": "question"},
            {},
        ),
        (
            "VisionEngine",
            ["image", "background", "question"],
            {"image": "image", "imageBackground": "background", "question": "question"},
            {"module": "slider_1"},
        ),
        # The first existing of the background columns, and an optional question left out.
        (
            "VisionEngine",
            ["image", "background", "image_background"],
            {"image": "image", "imageBackground": "image_background"},
            {"module": "slider_1"},
        ),
        ("SomeOtherTask", ["image"], {"body": "image"}, {}),
    ],
)
def test_each_type_fills_its_fields_from_default_columns(
    task_type: str, columns: list[str], expected: dict[str, str], params: dict[str, Any]
) -> None:
    fields = plan_fields(task_type, {}, {}, columns, "image")
    assert dict(fields.columns) == expected
    assert dict(fields.params) == params


def test_a_task_param_overrides_a_default_param_and_an_explicit_field_a_default_column() -> None:
    fields = plan_fields(
        "VisionEngine",
        {"imageBackground": "bg2"},
        {"module": "rotate_1"},
        ["image", "background", "bg2"],
        "image",
    )
    assert fields.columns["imageBackground"] == "bg2"
    assert fields.params == {"module": "rotate_1"}


def test_mapping_images_for_image_to_text_drops_the_default_body() -> None:
    fields = plan_fields(
        "ImageToTextTask", {"images": "digits"}, {"module": "number"}, ["image", "digits"], "image"
    )
    assert dict(fields.columns) == {"images": "digits"}


@pytest.mark.parametrize(
    ("task_type", "fields", "params", "needle"),
    [
        ("ReCaptchaV2Classification", {}, {}, "'question' (no column 'question' in the table)"),
        ("AwsWafClassification", {}, {}, "--field question=COLUMN"),
        ("VisionEngine", {}, {}, "imageBackground"),
        ("ImageToTextTask", {"body": "nope"}, {}, "no column 'nope'"),
        ("ReCaptchaV2Classification", {"question": "image"}, {"question": "x"}, "set twice"),
    ],
)
def test_a_missing_required_field_is_a_usage_error_before_anything_is_sent(
    task_type: str, fields: dict[str, str], params: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_fields(task_type, fields, params, ["image"], "image")
    assert needle in str(caught.value)


def test_a_question_given_as_a_task_param_satisfies_the_type() -> None:
    fields = plan_fields(
        "ReCaptchaV2Classification", {}, {"question": "/m/0k4j"}, ["image"], "image"
    )
    assert dict(fields.columns) == {"image": "image"}


# --- rows -----------------------------------------------------------------------------


def test_recaptcha_rows_carry_the_grid_and_their_own_question() -> None:
    grid = png(1)
    frame = pd.DataFrame({"image": [b64(grid), b64(grid)], "question": ["/m/0k4j", "/m/015qff"]})
    result = plan(frame, "ReCaptchaV2Classification")
    assert not result.errors
    first = task_body("ReCaptchaV2Classification", {}, result.tasks[0])
    assert first == {"type": "ReCaptchaV2Classification", "image": b64(grid), "question": "/m/0k4j"}
    # Same grid, different questions: different paid tasks.
    assert result.keys[0] != result.keys[1]


def test_same_grid_same_question_share_one_key_and_the_cache() -> None:
    grid = png(2)
    frame = pd.DataFrame({"image": [b64(grid)] * 2, "question": ["/m/0k4j"] * 2})
    result = plan(frame, "ReCaptchaV2Classification")
    assert result.keys[0] == result.keys[1] is not None


def test_plain_text_tasks_keep_the_keys_of_older_journals() -> None:
    image = png(3)
    frame = pd.DataFrame({"image": [b64(image)]})
    result = plan(frame, "ImageToTextTask", params={"module": "common"})
    assert result.keys[0] == task_key(image, "ImageToTextTask", {"module": "common"}, SCOPE)
    assert task_body("ImageToTextTask", {"module": "common"}, result.tasks[0]) == {
        "type": "ImageToTextTask",
        "module": "common",
        "body": b64(image),
    }


def test_a_parquet_list_column_fills_images_and_a_single_image_becomes_a_list() -> None:
    tiles = [png(10 + i) for i in range(9)]
    table = pa.table(
        {
            "tiles": pa.array([[b64(t) for t in tiles], [b64(tiles[0])]], pa.list_(pa.string())),
            "single": [b64(tiles[1]), b64(tiles[2])],
            "question": ["aws:grid:bed", "aws:grid:bed"],
        }
    )
    result = plan(table, "AwsWafClassification", image_column="tiles")
    assert result.tasks[0].images["images"] == tuple(tiles)
    # A list column is found as the image column when it comes first, like any other.
    found = plan(table.select(["tiles", "question"]), "AwsWafClassification", image_column=None)
    assert found.tasks[0].images["images"] == tuple(tiles)
    assert result.tasks[1].images["images"] == (tiles[0],)
    single = plan(table, "AwsWafClassification", image_column="single")
    assert task_body("AwsWafClassification", {}, single.tasks[0])["images"] == [b64(tiles[1])]


def test_a_json_list_in_a_csv_column_fills_images(tmp_path: Path) -> None:
    tiles = [png(20 + i) for i in range(3)]
    paths = []
    for i, tile in enumerate(tiles):
        (tmp_path / f"t{i}.png").write_bytes(tile)
        paths.append(f"t{i}.png")
    csv = tmp_path / "grid.csv"
    pd.DataFrame(
        {"image": ["t0.png"], "tiles": [json.dumps(paths)], "question": ["aws:grid:hat"]}
    ).to_csv(csv, index=False)
    result = plan(csv, "AwsWafClassification", fields={"images": "tiles"})  # type: ignore[arg-type]
    assert result.tasks[0].images["images"] == tuple(tiles)


def test_a_null_in_a_required_column_is_that_rows_error_and_the_rest_go_on() -> None:
    grid = png(4)
    frame = pd.DataFrame({"image": [b64(grid)] * 3, "question": ["/m/0k4j", None, "/m/01bjv"]})
    result = plan(frame, "ReCaptchaV2Classification")
    assert set(result.tasks) == {0, 2}
    error = result.errors[1]
    assert error.error_code == "INPUT_NULL" and error.row == 1
    assert "column 'question' (task field question) is null" in error.message


def test_a_null_optional_field_is_left_out() -> None:
    frame = pd.DataFrame({"image": [b64(png(5))], "background": [b64(png(6))], "question": [None]})
    result = plan(frame, "VisionEngine")
    body = task_body("VisionEngine", {"module": "slider_1"}, result.tasks[0])
    assert "question" not in body and body["module"] == "slider_1"


def test_each_image_field_keeps_the_per_image_checks_and_names_the_field() -> None:
    frame = pd.DataFrame(
        {"image": [b64(png(7)), b64(png(7))], "background": ["not-base64!!!", b64(png(6)[:30])]}
    )
    result = plan(frame, "VisionEngine")
    # One base64 image beside a bad value: a base64 column, the bad value invalid base64.
    assert result.errors[0].error_code == "INPUT_INVALID_BASE64"
    assert result.errors[0].message.startswith("imageBackground: ")
    assert result.errors[1].error_code == "INPUT_TRUNCATED_IMAGE"
    assert all(isinstance(e, RowInputError) for e in result.errors.values())


def test_a_list_in_a_single_image_field_is_the_rows_error() -> None:
    table = pa.table(
        {"image": pa.array([[b64(png(8)), b64(png(9))]], pa.list_(pa.string())), "question": ["q"]}
    )
    result = plan(table, "ReCaptchaV2Classification")
    assert result.errors[0].error_code == "INPUT_UNSUPPORTED_VALUE"
    assert "takes one image" in result.errors[0].message


def test_list_items_errors_name_their_position() -> None:
    table = pa.table(
        {
            "tiles": pa.array([[b64(png(8)), "not-base64!!!"]], pa.list_(pa.string())),
            "question": ["aws:grid:bed"],
        }
    )
    result = plan(table, "AwsWafClassification", image_column="tiles")
    assert result.errors[0].message.startswith("images[1]: ")


def test_a_base64_column_stays_one_for_the_run_even_when_a_late_batch_is_all_bad() -> None:
    good = b64(png(11))
    frame = pd.DataFrame({"image": [good] * 4 + ["not-base64!!!"] * 2})
    source = TableSource(frame, image_column="image", batch_rows=4)
    keys = TaskKeys("ImageToTextTask", {}, SCOPE)
    batches = list(source.batches())
    plan_batch(batches[0], 0, source, CAPSOLVER, keys)
    last = plan_batch(batches[1], 4, source, CAPSOLVER, keys)
    assert {e.error_code for e in last.errors.values()} == {"INPUT_INVALID_BASE64"}


def test_whole_task_keys_cover_every_field_and_image() -> None:
    a, b = png(12), png(13)
    base = RowTask({"image": a, "imageBackground": b}, {"question": "q"})
    from capbatch._io.keys import whole_task_key

    def key(row: RowTask, params: dict[str, Any] | None = None) -> str:
        return whole_task_key(row.images, row.values, "VisionEngine", params or {}, SCOPE)

    assert key(base) == key(RowTask({"image": a, "imageBackground": b}, {"question": "q"}))
    assert key(base) != key(RowTask({"image": b, "imageBackground": a}, {"question": "q"}))
    assert key(base) != key(RowTask({"image": a, "imageBackground": b}, {"question": "r"}))
    assert key(base) != key(base, {"module": "rotate_1"})
    assert key(RowTask({"body": a}, {})) != task_key(a, "VisionEngine", {}, SCOPE)
