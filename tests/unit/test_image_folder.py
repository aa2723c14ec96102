"""Tests for capbatch._io.image_folder: a folder of images as an input table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from capbatch._exceptions import TableError
from capbatch._io.image_column import resolve_column
from capbatch._io.inputs import TableSource
from tests.unit.test_inputs import make_png


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "shots"
    images.mkdir()
    for i, name in enumerate(["b.PNG", "a.jpg", "c.webp", "d.gif", "e.bmp", "f.jpeg"]):
        (images / name).write_bytes(make_png(i))
    (images / "notes.txt").write_text("not an image")
    (images / ".hidden.png").write_bytes(make_png(9))
    (images / "sub.png").mkdir()  # a folder named like an image is not one
    return images


def rows(source: TableSource) -> dict[str, list[object]]:
    return pa.Table.from_batches(list(source.batches()), schema=source.schema).to_pydict()


def test_a_row_per_image_file_sorted_by_name(folder: Path) -> None:
    source = TableSource(folder, batch_rows=4)
    assert (source.format, source.path, source.base_dir) == ("folder", folder, folder.parent)
    assert (source.image_column, source.id_column, source.num_rows) == ("image_path", "id", 6)
    got = rows(source)
    assert got["id"] == ["a", "b", "c", "d", "e", "f"]
    assert got["image_path"] == [
        "shots/a.jpg", "shots/b.PNG", "shots/c.webp", "shots/d.gif", "shots/e.bmp",
        "shots/f.jpeg",
    ]  # fmt: skip
    assert "label" not in got
    # The paths resolve against base_dir, as the run resolves them.
    first = next(source.batches())
    images = resolve_column(first, "image_path", base_dir=source.base_dir, first_row=0)
    assert images[1] == (folder / "b.PNG").read_bytes()


def test_labels_by_file_name(folder: Path) -> None:
    (folder / "labels.csv").write_text(
        "filename,label,style\nb.PNG,k7mq,wavy\nshots/a.jpg,0042,\nmissing.png,zzz,x\n",
        encoding="utf-8",
    )
    got = rows(TableSource(folder))
    assert list(got) == ["id", "image_path", "label", "style"]
    assert got["label"] == ["0042", "k7mq", None, None, None, None]  # text kept as text
    assert got["style"] == [None, "wavy", None, None, None, None]


def test_labels_by_id(folder: Path) -> None:
    (folder / "labels.csv").write_text("id,label\nc,abc\nf,xyz\n", encoding="utf-8-sig")
    got = rows(TableSource(folder))
    assert got["label"] == [None, None, "abc", None, None, "xyz"]
    assert list(got) == ["id", "image_path", "label"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name,answer\na.jpg,x\n", "needs a 'label' column and a key column"),
        ("file,label\na.jpg,x\nb.PNG,y\na.jpg,z\n", "line 4: 'a.jpg' has a row already"),
    ],
)
def test_bad_labels_file(folder: Path, text: str, expected: str) -> None:
    (folder / "labels.csv").write_text(text)
    with pytest.raises(TableError, match=expected) as info:
        TableSource(folder)
    assert "labels.csv" in str(info.value)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(TableError, match=r"no image files \(png, jpg, .*\) in the folder"):
        TableSource(tmp_path)
