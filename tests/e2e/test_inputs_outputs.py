"""End to end, offline (the local solver): what goes in and what comes out, as a pandas
user expects it (issue 14, items 1, 2, 3, 14, 15). The real CLI, or the public API."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

import capbatch
from tests.e2e.runner_helpers import SAMPLE, run_cli, sample_frame, write_table


def test_a_dataframe_keeps_its_index(tmp_path: Path) -> None:
    """Item 1: as ``df.assign`` would, in memory and through a Parquet output."""
    frame = sample_frame(4).set_index("id")
    result = capbatch.run(frame, provider="local", quiet=True)
    assert result.index.equals(frame.index) and result.index.name == "id"
    assert list(result.columns[: len(frame.columns)]) == list(frame.columns)
    assert (result["status"] == "solved").all()
    multi = sample_frame(4).set_index(["style", "id"])
    out = tmp_path / "multi.parquet"
    again = capbatch.run(multi, provider="local", quiet=True, output=out)
    assert again.index.equals(multi.index) and list(again.index.names) == ["style", "id"]
    assert pd.read_parquet(out).index.equals(multi.index)  # as DataFrame.to_parquet keeps it
    # A CSV output holds the levels as columns, and the returned frame has them as index.
    csv = capbatch.run(frame, provider="local", quiet=True, output=tmp_path / "named.csv")
    assert csv.index.equals(frame.index) and csv.index.name == "id"
    assert pd.read_csv(tmp_path / "named.csv", dtype=str)["id"].tolist() == list(frame.index)


def test_run_metadata_where_pandas_and_pyarrow_look(tmp_path: Path) -> None:
    """Items 2 and 14 through the public API: Parquet keeps full values and the metadata
    as one typed object; CSV rounds and puts the object in a sidecar."""
    table = write_table(sample_frame(4), tmp_path / "in.csv")
    parquet, csv = tmp_path / "out.parquet", tmp_path / "out.csv"
    for out in (parquet, csv):
        capbatch.run(str(table), output=out, provider="local", quiet=True)
    info = pd.read_parquet(parquet).attrs["capbatch"]
    assert info == capbatch.read_results(parquet).attrs["capbatch"]
    assert info == json.loads(pq.read_schema(parquet).metadata[b"capbatch"])
    assert (info["provider"], info["complete"], info["input"]) == ("local", True, str(table))
    assert info["spend_usd"] == 0.0 and info["balance_before"] is None  # typed, null
    assert info["run"]["rows"] == 4 and info["settings"]["provider"] == "local"
    assert capbatch.run_metadata(parquet)["capbatch.provider"] == "local"
    sidecar = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert capbatch.read_results(csv).attrs["capbatch"] == sidecar
    assert sidecar["run"]["rows"] == 4 and sidecar["input"] == str(table)
    # CSV: 0.1 ms of a duration; Parquet: the values as measured.
    text = pd.read_csv(csv, dtype=str)["latency_ms"]
    assert all(re.fullmatch(r"\d+(\.\d)?", v) for v in text), text.tolist()
    full = pd.read_parquet(parquet)["latency_ms"]
    assert any(round(v, 1) != v for v in full)


def test_outputs_of_different_inputs_stay_apart(tmp_path: Path) -> None:
    """Item 3: two inputs with one stem get their own results; a different input on an
    output made from another stops (the CLI: one line naming -o); the same input resumes."""
    parquet = write_table(sample_frame(3), tmp_path / "captchas.parquet")
    csv = write_table(sample_frame(3, start=3), tmp_path / "captchas.csv")
    for table in (parquet, csv):
        capbatch.run(str(table), provider="local", quiet=True)
    ids = {
        name: pd.read_parquet(tmp_path / f"{name}.results.parquet")["id"].tolist()
        for name in ("captchas.parquet", "captchas.csv")
    }
    assert ids == {
        "captchas.parquet": ["row-00000", "row-00001", "row-00002"],
        "captchas.csv": ["row-00003", "row-00004", "row-00005"],
    }
    taken = tmp_path / "captchas.parquet.results.parquet"
    refused = run_cli("run", csv, "-o", taken, "--provider", "local", "--quiet", key=None)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.output
    assert f"belongs to the input {parquet}" in refused.stderr and "-o" in refused.stderr
    assert pd.read_parquet(taken)["id"].tolist() == ids["captchas.parquet"]  # untouched
    again = capbatch.run(str(parquet), provider="local", quiet=True)
    assert again.attrs["capbatch"]["resumed"] == 3
    assert capbatch.read_results(taken).attrs["capbatch"]["run"]["resumed"] == 3


def test_a_folder_of_images(tmp_path: Path) -> None:
    """Item 15: ``capbatch run images/``: a row per image file, sorted by name, labels
    from the folder's labels.csv, results beside the folder."""
    folder = tmp_path / "shots"
    folder.mkdir()
    sample = pd.read_csv(SAMPLE / "captchas.csv", dtype=str).head(3)
    for path in sample["image_path"]:
        shutil.copy(SAMPLE / path, folder / Path(path).name)
    names = [Path(p).name for p in sample["image_path"]]
    rows = zip(names, sample["label"], strict=True)
    (folder / "labels.csv").write_text("file,label\n" + "".join(f"{n},{x}\n" for n, x in rows))
    (folder / "readme.txt").write_text("not an image")
    done = run_cli("run", f"{folder}/", "--provider", "local", "--quiet", key=None)
    assert done.returncode == 0, done.output
    out = tmp_path / "shots.results.parquet"
    assert done.stdout.strip().endswith(str(out))
    result = pd.read_parquet(out)
    assert result["id"].tolist() == sorted(Path(n).stem for n in names)
    assert result["image_path"].tolist() == [f"shots/{n}" for n in sorted(names)]
    assert result["label"].tolist() == sample.sort_values("image_path")["label"].tolist()
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
