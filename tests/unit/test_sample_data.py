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

import numpy as np
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
    sets = [pd.read_parquet(DATA / f"{name}.parquet") for name in ("grids", "slider")]
    assert len(oracle) == len(rows) == 240 + sum(len(t) for t in sets)
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


# --------------------------------------------------------------------------- task sets

GRID_QUESTIONS = {"/m/0k4j", "/m/01bjv", "/m/0cdl1", "/m/015qff", "/m/09d_r"}


def _oracle() -> dict[str, str]:
    with (DATA / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return {r["sha256"]: r["label"] for r in csv.DictReader(fh)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_grid_table_and_labels() -> None:
    grids = pd.read_parquet(DATA / "grids.parquet")
    assert list(grids.columns) == ["id", "image_path", "question", "label"]
    assert len(grids) >= 100
    assert list(grids["id"]) == [f"grid-{i:04d}" for i in range(1, len(grids) + 1)]
    assert set(grids["question"]) == GRID_QUESTIONS
    oracle = _oracle()
    for row in grids.itertuples():
        indexes = [int(i) for i in row.label.split(",")]
        assert indexes == sorted(set(indexes)) and 1 <= len(indexes) <= 4, row.id
        assert all(0 <= i <= 8 for i in indexes), row.id
        png = (DATA / row.image_path).read_bytes()
        with Image.open(io.BytesIO(png)) as im:
            assert (im.format, im.size, im.mode) == ("PNG", (300, 300), "P")
        # The key contract shared with the emulator's oracle: the images' hashes, "|", question.
        assert oracle[_sha(f"{_sha(png)}|{row.question}".encode())] == row.label, row.id


def test_slider_table_and_labels() -> None:
    sliders = pd.read_parquet(DATA / "slider.parquet")
    assert list(sliders.columns) == ["id", "image_path", "background_path", "label"]
    assert len(sliders) >= 100
    oracle = _oracle()
    for row in sliders.itertuples():
        piece = (DATA / row.image_path).read_bytes()
        background = (DATA / row.background_path).read_bytes()
        with Image.open(io.BytesIO(background)) as bg, Image.open(io.BytesIO(piece)) as pc:
            assert bg.size == (280, 160) and pc.size == (48, 48)
            assert 0 < int(row.label) <= bg.size[0] - pc.size[0]
        assert oracle[_sha(f"{_sha(piece)},{_sha(background)}|".encode())] == row.label


def _gap_mismatch(background: np.ndarray, piece: np.ndarray, x: int) -> float:
    """How far the best-placed darkened piece is from the background at column ``x``."""
    inner = piece[10:38, 4:30] * 0.45  # the gap is the scene blended 55 % toward black
    rows = background.shape[0] - piece.shape[0]
    return min(
        float(np.abs(background[y + 10 : y + 38, x + 4 : x + 30] - inner).mean())
        for y in range(rows + 1)
    )


def test_the_gap_is_where_the_label_says() -> None:
    """The darkened piece matches the background at the labelled x, and not 10 px away."""
    for row in pd.read_parquet(DATA / "slider.parquet").head(5).itertuples():
        x = int(row.label)
        with Image.open(DATA / row.background_path) as bg, Image.open(DATA / row.image_path) as pc:
            background = np.asarray(bg.convert("L"), dtype=float)
            piece = np.asarray(pc.convert("RGBA").convert("L"), dtype=float)
        here = _gap_mismatch(background, piece, x)
        assert here < 6, (row.id, here)
        assert _gap_mismatch(background, piece, x - 10) > here + 5, row.id


def test_generator_reproduces_committed_task_sets(tmp_path: Path) -> None:
    script = _load_script()
    script.generate(tmp_path, script.DEFAULT_SEED, 3, grid_count=4, slider_count=4)
    grids = pd.read_parquet(tmp_path / "grids.parquet")
    sliders = pd.read_parquet(tmp_path / "slider.parquet")
    committed_grids = pd.read_parquet(DATA / "grids.parquet").head(4)
    committed_sliders = pd.read_parquet(DATA / "slider.parquet").head(4)
    assert grids.equals(committed_grids)
    assert sliders.equals(committed_sliders)
    for rel in [*grids["image_path"], *sliders["image_path"], *sliders["background_path"]]:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), rel
    labels = (tmp_path / "labels.csv").read_text(encoding="utf-8").splitlines()
    committed = set((DATA / "labels.csv").read_text(encoding="utf-8").splitlines())
    assert len(labels) == 1 + 3 + 4 + 4 and set(labels) <= committed


def test_oracle_key_contract() -> None:
    script = _load_script()
    assert script.oracle_key([b"png"]) == _sha(b"png")
    assert script.oracle_key([b"png"], "/m/0k4j") == _sha(f"{_sha(b'png')}|/m/0k4j".encode())
    assert script.oracle_key([b"a", b"b"]) == _sha(f"{_sha(b'a')},{_sha(b'b')}|".encode())
    # The generator keeps its own copy (a script, no private imports); the emulator's
    # oracle must key every task the same way.
    from capbatch.emulator._solvers import oracle_key

    for images, question in [([b"png"], None), ([b"png"], "/m/0k4j"), ([b"a", b"b"], None)]:
        assert script.oracle_key(images, question) == oracle_key(images, question)
