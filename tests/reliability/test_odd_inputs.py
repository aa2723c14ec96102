"""Reliability: odd but legitimate inputs through the real CLI, and files that could
swamp or stall a run or a report.

Each test names the hardening finding it guards: the fix it checks made it pass.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from capbatch.emulator import EmulatorHandle
from tests.e2e.runner_helpers import KEY, REPO, SAMPLE, run_cli, sample_frame

Start = Callable[..., EmulatorHandle]
# A report of a few rows takes ~5 s (imports and charts); anything near this is a hang.
REPORT_TIMEOUT = 60
SPARSE_BYTES = 1_000_000_000


@pytest.fixture
def server(emulator: Start) -> EmulatorHandle:
    return emulator(api_key=KEY, solver="oracle", labels=str(SAMPLE / "labels.csv"))


def run(table: Path, out: Path, server: EmulatorHandle) -> pd.DataFrame:
    done = run_cli("run", table, "-o", out, "--base-url", server.url, "--quiet")
    assert done.returncode == 0, done.output
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    return pd.read_csv(out, keep_default_na=False, dtype=str)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --- finding 1: CSV separated by ";", tab or "|" -----------------------------------------


@pytest.mark.parametrize("sep", [";", "\t", "|"], ids=["semicolon", "tab", "pipe"])
def test_a_csv_with_another_separator_is_read(
    tmp_path: Path, server: EmulatorHandle, sep: str
) -> None:
    frame = sample_frame(3)
    frame["note"] = ["one, two", "x", "3,5"]  # commas in values, not in the header
    table = tmp_path / "in.csv"
    frame.to_csv(table, sep=sep, index=False)
    result = run(table, tmp_path / "out.csv", server)
    assert list(result.columns[: len(frame.columns)]) == list(frame.columns)
    assert (result["status"] == "solved").all(), result[["status", "error_message"]]
    assert list(result["answer"]) == list(frame["label"])
    assert list(result["note"]) == list(frame["note"])


# --- finding 2: Pillow's decompression-bomb warning and other raw warnings ---------------


def test_decompression_bombs_and_damaged_files_are_row_errors_not_stderr_noise(
    tmp_path: Path, server: EmulatorHandle
) -> None:
    # Bilevel PNGs of a blank page: tens of KB on disk, 90M and 182M pixels decoded
    # (Pillow warns above 89,478,485 pixels and refuses above twice that).
    (tmp_path / "warns.png").write_bytes(png_bytes(Image.new("1", (10_000, 9_000))))
    (tmp_path / "refused.png").write_bytes(png_bytes(Image.new("1", (14_000, 13_000))))
    tiff = io.BytesIO()
    Image.new("RGB", (64, 32)).save(tiff, "TIFF")
    (tmp_path / "cut.tif").write_bytes(tiff.getvalue()[:40])  # Pillow: "Corrupt EXIF data"
    good = sample_frame(1)
    rows = {
        "warns": str(tmp_path / "warns.png"),
        "refused": str(tmp_path / "refused.png"),
        "cut": str(tmp_path / "cut.tif"),
        "good": good["image_path"][0],
    }
    table = tmp_path / "in.csv"
    labels = {"good": good["label"][0]}
    pd.DataFrame(
        {
            "id": list(rows),
            "image_path": list(rows.values()),
            "label": [labels.get(r, "x") for r in rows],
        }
    ).to_csv(table, index=False)
    result = run(table, tmp_path / "out.csv", server).set_index("id")
    assert result.loc["warns", "error_code"] == "INPUT_TOO_LARGE"
    assert "90000000 pixels" in result.loc["warns", "error_message"]
    assert result.loc["refused", "error_code"] == "INPUT_TOO_LARGE"
    assert "182000000 pixels" in result.loc["refused", "error_message"]
    assert result.loc["cut", "error_code"] == "INPUT_TRUNCATED_IMAGE"
    assert "0x" not in result.loc["cut", "error_message"]  # no object address in it
    assert result.loc["good", "status"] == "solved"
    assert server.stats()["create_calls"] == 1  # the bombs were never sent


# --- finding 3: the report reads referenced files only up to a bound ---------------------

_MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout={timeout})
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(proc.returncode)
"""


def test_report_skips_huge_files_fifos_and_devices_quickly_in_bounded_memory(
    tmp_path: Path,
) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as fh:  # a PNG signature, then a sparse gigabyte: no disk used
        fh.write(png_bytes(Image.new("L", (60, 20))))
        fh.truncate(SPARSE_BYTES)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # nobody ever writes to it: opening it to read would block
    frame = pd.DataFrame(
        {
            "id": ["big", "fifo", "device"],
            "image_path": [str(big), str(fifo), "/dev/zero"],
            "label": ["abc", "def", "ghi"],
            "answer": ["abd", "dez", "ghj"],  # all wrong: all three are in the gallery
            "status": ["solved"] * 3,
        }
    )
    results = tmp_path / "r.parquet"
    frame.to_parquet(results, index=False)
    page = tmp_path / "r.html"
    cli = [sys.executable, "-m", "capbatch", "report", str(results), "-o", str(page)]
    started = time.monotonic()
    # A wrapper process, so that the peak RSS measured is this report's alone and not
    # that of some earlier child of the test process.
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE.format(timeout=REPORT_TIMEOUT), *cli],
        capture_output=True,
        text=True,
        timeout=REPORT_TIMEOUT + 10,
        cwd=REPO,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    peak_kib = int(proc.stdout.strip().splitlines()[-1])
    assert peak_kib * 1024 < SPARSE_BYTES / 2, f"report peaked at {peak_kib} KiB"
    assert elapsed < REPORT_TIMEOUT
    text = page.read_text(encoding="utf-8")
    assert text.count('class="noimg">image too large to show') == 1
    assert text.count('class="noimg">image not available') == 2


# --- finding 4: result-column collisions are renamed by one documented rule --------------


def test_colliding_columns_are_renamed_predictably_and_stay_so_on_a_rerun(
    tmp_path: Path, server: EmulatorHandle
) -> None:
    frame = sample_frame(2)
    frame["status"] = ["mine-1", "mine-2"]
    frame["input_status"] = ["older-1", "older-2"]
    table = tmp_path / "in.csv"
    frame.to_csv(table, index=False)
    first = run(table, tmp_path / "once.csv", server)
    assert list(first.columns[:6]) == [
        "id",
        "image_path",
        "label",
        "style",
        "input_status_2",
        "input_status",
    ]
    assert list(first["input_status_2"]) == ["mine-1", "mine-2"]
    assert list(first["input_status"]) == ["older-1", "older-2"]
    assert (first["status"] == "solved").all()

    again = run(tmp_path / "once.csv", tmp_path / "twice.csv", server)
    assert not [c for c in again.columns if c.startswith("input_input_")]
    # Earlier input columns keep their names; the first run's results get one prefix.
    assert list(again.columns[:6]) == list(first.columns[:6])
    assert list(again["input_status_3"]) == ["solved", "solved"]
    assert list(again["input_answer"]) == list(first["answer"])
    assert (again["status"] == "solved").all()


# --- finding 5: bad values in a base64 column are invalid base64 --------------------------


@pytest.mark.parametrize("column", ["image_b64", "image"], ids=["by name", "by content"])
def test_bad_values_in_a_base64_column_are_invalid_base64(
    tmp_path: Path, server: EmulatorHandle, column: str
) -> None:
    good = [(SAMPLE / p).read_bytes() for p in ["images/cap-0001.png", "images/cap-0002.png"]]
    values = [
        base64.b64encode(good[0]).decode(),
        "not-base64!!!",
        base64.b64encode(good[1]).decode(),
    ]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], column: values}), path)
    result = run(path, tmp_path / "out.csv", server).set_index("id")
    assert result.loc["b", "error_code"] == "INPUT_INVALID_BASE64"
    assert "base64" in result.loc["b", "error_message"]
    assert list(result.loc[["a", "c"], "status"]) == ["solved", "solved"]


# --- more of the same: nothing referenced may stall or swamp a run ------------------------


def test_image_paths_to_a_fifo_a_device_or_a_huge_file_are_refused_fast(
    tmp_path: Path, server: EmulatorHandle
) -> None:
    # Held before these fixes too: a guard that the bounded reader keeps it so.
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.truncate(SPARSE_BYTES)
    table = tmp_path / "in.csv"
    pd.DataFrame(
        {"id": ["fifo", "zero", "big"], "image_path": [str(fifo), "/dev/zero", str(big)]}
    ).to_csv(table, index=False)
    started = time.monotonic()
    result = run(table, tmp_path / "out.csv", server).set_index("id")
    assert time.monotonic() - started < 60
    assert result.loc["fifo", "error_code"] == "INPUT_FILE_UNREADABLE"
    assert result.loc["zero", "error_code"] == "INPUT_FILE_UNREADABLE"
    assert "not a regular file" in result.loc["zero", "error_message"]
    assert result.loc["big", "error_code"] == "INPUT_TOO_LARGE"
    assert str(SPARSE_BYTES) in result.loc["big", "error_message"]


def test_a_table_that_is_a_fifo_is_refused_at_once(tmp_path: Path, server: EmulatorHandle) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)  # opening it would wait for a writer that never comes
    done = run_cli("run", fifo, "--base-url", server.url, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("capbatch: error:") and "regular file" in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
