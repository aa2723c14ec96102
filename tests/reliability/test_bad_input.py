"""Reliability: a corpus of bad rows and bad tables through the real CLI.

Every bad row gets its own clear error (code and message naming the problem) and the
rest of the run completes; every bad table gets one clean line and exit status 2.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, SAMPLE, run_cli, sample_frame

Start = Callable[..., EmulatorHandle]


@pytest.fixture
def server(emulator: Start) -> EmulatorHandle:
    return emulator(api_key=KEY, solver="oracle", labels=str(SAMPLE / "labels.csv"))


def good_png(i: int = 0) -> bytes:
    return (SAMPLE / "images" / f"cap-{i + 1:04d}.png").read_bytes()


def bad_row_corpus(tmp_path: Path) -> dict[str, tuple[object, str, str]]:
    """name -> (image value, expected error code, a word the message must contain)."""
    png = good_png()
    (tmp_path / "a folder").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello, not an image\n")
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "huge.png").write_bytes(png + b"\0" * 700_000)
    return {
        "missing file": ("no/such/file.png", "INPUT_FILE_NOT_FOUND", "not found"),
        "directory": (str(tmp_path / "a folder"), "INPUT_IS_DIRECTORY", "folder"),
        "empty file": (str(tmp_path / "empty.png"), "INPUT_EMPTY", "empty"),
        "truncated png": (str(tmp_path / "cut.png"), "INPUT_TRUNCATED_IMAGE", "cut.png"),
        "text file": (str(tmp_path / "notes.txt"), "INPUT_NOT_AN_IMAGE", "notes.txt"),
        "invalid base64": (
            base64.b64encode(png).decode()[:40] + "!!" + base64.b64encode(png).decode()[40:],
            "INPUT_INVALID_BASE64",
            "base64",
        ),
        "data uri of text": (
            "data:text/plain;base64," + base64.b64encode(b"just some text").decode(),
            "INPUT_NOT_AN_IMAGE",
            "image",
        ),
        "oversized image": (str(tmp_path / "huge.png"), "INPUT_TOO_LARGE", "limit"),
        "null": (None, "INPUT_NULL", ""),
        "nan": (math.nan, "INPUT_NULL", ""),
    }


def test_bad_rows_in_csv_each_get_their_error_and_the_rest_completes(
    tmp_path: Path, server: EmulatorHandle
) -> None:
    corpus = bad_row_corpus(tmp_path)
    spaced = tmp_path / "spaced name, ünïcödé 画像.png"
    spaced.write_bytes(good_png(1))
    rows: list[dict[str, object]] = []
    for name, (value, _, _) in corpus.items():
        rows.append({"id": name, "image_path": value, "label": "x", "note": "plain"})
    good = sample_frame(4)
    for i, row in good.iterrows():
        # Duplicate ids and awkward CSV text must not confuse anything.
        note = 'line one\nline "two", with comma' if i % 2 else "ok"
        rows.append(
            {"id": "dup", "image_path": row["image_path"], "label": row["label"], "note": note}
        )
    rows.append({"id": "spaced", "image_path": str(spaced), "label": "s", "note": "ok"})
    rows.append({"id": "integer", "image_path": 12345, "label": "x", "note": "ok"})
    table = tmp_path / "in.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    done = run_cli("run", table, "-o", out, "--base-url", server.url, "--quiet")
    assert done.returncode == 0, done.output
    result = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert len(result) == len(rows)
    by_id = result.set_index("id")
    for name, (_, code, word) in corpus.items():
        row = by_id.loc[name]
        assert row["status"] == "failed" and row["error_code"] == code, (name, dict(row))
        assert word.lower() in row["error_message"].lower(), (name, row["error_message"])
        assert "\n" not in row["error_message"]
    dups = result[result["id"] == "dup"]
    assert (dups["status"] == "solved").all() and (dups["answer"] == dups["label"]).all()
    assert list(dups["note"]) == [r["note"] for r in rows if r["id"] == "dup"]
    assert by_id.loc["spaced", "status"] == "solved"
    assert by_id.loc["integer", "error_code"] == "INPUT_FILE_NOT_FOUND"  # "12345" in a CSV
    # Four distinct images: the spaced-name file holds the same bytes as a "dup" row, so
    # it is answered from the cache.
    assert server.stats()["create_calls"] == 4
    assert by_id.loc["spaced", "from_cache"] == "true"
    assert KEY not in done.output


def test_a_parquet_binary_column_with_bad_bytes(tmp_path: Path, server: EmulatorHandle) -> None:
    values = [good_png(0), b"", b"%PDF-1.4 not an image", good_png(2)[:100], None, good_png(3)]
    table = pa.table({"id": [f"r{i}" for i in range(6)], "img": pa.array(values, pa.binary())})
    path = tmp_path / "bin.parquet"
    pq.write_table(table, path)
    out = tmp_path / "out.parquet"
    done = run_cli("run", path, "-o", out, "--base-url", server.url, "--quiet")
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert list(result["error_code"].fillna("")) == [
        "",
        "INPUT_EMPTY",
        "INPUT_NOT_AN_IMAGE",
        "INPUT_TRUNCATED_IMAGE",
        "INPUT_NULL",
        "",
    ]
    assert result["img"].tolist() == values  # input bytes come back untouched


def test_jsonl_with_an_integer_in_the_image_column(tmp_path: Path, server: EmulatorHandle) -> None:
    good = sample_frame(2)
    lines = [
        {"id": "a", "image": good["image_path"][0]},
        {"id": "b", "image": 42},
        {"id": "c", "image": good["image_path"][1]},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out.parquet"
    done = run_cli("run", path, "-o", out, "--base-url", server.url, "--quiet")
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out).set_index("id")
    assert result.loc["b", "status"] == "failed"
    assert result.loc["b", "error_code"] in {"INPUT_FILE_NOT_FOUND", "INPUT_UNSUPPORTED_VALUE"}
    assert (result.loc[["a", "c"], "status"] == "solved").all()


def test_an_empty_table_gives_an_empty_result(tmp_path: Path, server: EmulatorHandle) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("id,image_path,label\n")
    out = tmp_path / "out.parquet"
    done = run_cli("run", path, "-o", out, "--base-url", server.url, "--quiet")
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert len(result) == 0 and "status" in result.columns
    assert server.stats()["create_calls"] == 0


@pytest.mark.parametrize(
    ("content", "word"),
    [
        ("id,label\n1,abc\n2,def\n", "image column"),
        ("", "empty"),
    ],
    ids=["no image column", "zero-byte file"],
)
def test_bad_tables_get_one_clean_line_and_exit_2(
    tmp_path: Path, server: EmulatorHandle, content: str, word: str
) -> None:
    path = tmp_path / "table.csv"
    path.write_text(content)
    done = run_cli("run", path, "--base-url", server.url)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("capbatch: error:") and word in done.stderr
    assert "Traceback" not in done.output


def test_a_corrupt_parquet_file_is_one_clean_line(tmp_path: Path, server: EmulatorHandle) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 50)
    done = run_cli("run", path, "--base-url", server.url)
    assert done.returncode == 2 and "broken.parquet" in done.stderr
    assert "Traceback" not in done.output
