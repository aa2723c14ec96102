"""Checks on the committed sample data in ``sample_data/`` and on its generator script."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data"
SCRIPT = REPO / "scripts" / "make_sample_data.py"
STYLES = {"plain", "noisy", "classic"}
COLUMNS = ["id", "image_path", "label", "style"]
B64_COLUMNS = ["id", "image_b64", "label", "style"]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.read_parquet(DATA / "captchas.parquet")


def test_table_shape_and_order(table: pd.DataFrame) -> None:
    assert list(table.columns) == COLUMNS
    assert len(table) == 240
    assert list(table["id"]) == [f"cap-{i:04d}" for i in range(1, 241)]
    assert set(table["style"]) == STYLES
    assert table["style"].value_counts().to_dict() == {s: 80 for s in STYLES}
    assert set(table["style"].head(3)) == STYLES  # interleaved
    assert table["label"].str.fullmatch(r"[a-z0-9]{4,6}").all()


def test_csv_matches_parquet(table: pd.DataFrame) -> None:
    csv_table = pd.read_csv(DATA / "captchas.csv", dtype=str, keep_default_na=False)
    assert list(csv_table.columns) == COLUMNS
    assert csv_table.astype(object).equals(table.astype(object))


def test_images_exist_and_are_png(table: pd.DataFrame) -> None:
    for rel in table["image_path"]:
        path = DATA / rel
        assert path.is_file(), rel
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.size == (160, 60)
            im.load()


def test_labels_csv_matches_by_sha256(table: pd.DataFrame) -> None:
    with (DATA / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == ["sha256", "label"]
    oracle = {r["sha256"]: r["label"] for r in rows}
    assert len(oracle) == 240
    for rel, label in zip(table["image_path"], table["label"], strict=True):
        digest = hashlib.sha256((DATA / rel).read_bytes()).hexdigest()
        assert oracle[digest] == label, rel


def test_b64_parquet_decodes_to_files(table: pd.DataFrame) -> None:
    b64 = pd.read_parquet(DATA / "captchas_b64.parquet")
    assert list(b64.columns) == B64_COLUMNS
    assert list(b64["id"]) == list(table["id"])
    assert list(b64["label"]) == list(table["label"])
    assert list(b64["style"]) == list(table["style"])
    for encoded, rel in zip(b64["image_b64"], table["image_path"], strict=True):
        assert "\n" not in encoded and not encoded.startswith("data:")
        assert base64.b64decode(encoded, validate=True) == (DATA / rel).read_bytes()


def test_generator_reproduces_committed_images(tmp_path: Path, table: pd.DataFrame) -> None:
    """Byte-identical for the default seed (requires the same Pillow/FreeType/captcha)."""
    script = _load_script()
    samples = script.generate(tmp_path, script.DEFAULT_SEED, 6)
    assert [s.id for s in samples] == list(table["id"].head(6))
    assert {s.style for s in samples} == STYLES
    for rel in table["image_path"].head(6):
        fresh = (tmp_path / rel).read_bytes()
        assert fresh == (DATA / rel).read_bytes(), f"{rel} differs from the committed file"
        assert Image.open(io.BytesIO(fresh)).size == (160, 60)
    assert list(pd.read_parquet(tmp_path / "captchas.parquet")["label"]) == list(
        table["label"].head(6)
    )
    assert [s.label for s in samples] == list(table["label"].head(6))
