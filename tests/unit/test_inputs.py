"""Tests for capbatch._io.inputs.TableSource: every format, streamed, one schema, clear errors."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from capbatch._exceptions import ConfigError, RowInputError, TableError
from capbatch._io import images as _images
from capbatch._io import readers as _readers
from capbatch._io.image_column import resolve_column
from capbatch._io.inputs import TableSource


def make_png(seed: int = 0, size: tuple[int, int] = (60, 20)) -> bytes:
    rng = random.Random(seed)
    im = Image.new("L", size, 230)
    px = im.load()
    assert px is not None
    for _ in range(size[0] * size[1] // 4):
        px[rng.randrange(size[0]), rng.randrange(size[1])] = rng.randrange(256)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def png() -> bytes:
    return make_png()


def all_rows(source: TableSource) -> pa.Table:
    return pa.Table.from_batches(list(source.batches()), schema=source.schema)


def check_batches(source: TableSource) -> list[pa.RecordBatch]:
    """Every batch has exactly the schema, is non-empty and at most batch_rows long."""
    batches = list(source.batches())
    for batch in batches:
        assert batch.schema.equals(source.schema, check_metadata=True)
        assert 0 < batch.num_rows <= source.batch_rows
    return batches


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- Parquet -------------------------------------------------------------------------


def test_parquet_row_groups_streamed_in_order_and_reiterable(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table(
        {"id": [f"r{i:03d}" for i in range(100)], "image": [f"{i}.png" for i in range(100)]}
    )
    pq.write_table(table, path, row_group_size=30)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4

    source = TableSource(path, batch_rows=16)
    assert (source.format, source.path, source.base_dir) == ("parquet", path, tmp_path)
    assert source.num_rows == 100 and source.count_rows() == 100
    assert (source.image_column, source.id_column) == ("image", "id")
    batches = check_batches(source)
    assert [b.num_rows for b in batches] == [16] * 6 + [4]
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert ids == table.column("id").to_pylist()
    again = list(source.batches())
    assert pa.Table.from_batches(again).equals(pa.Table.from_batches(batches))


def test_parquet_written_by_pandas_drops_the_index(tmp_path: Path) -> None:
    path = tmp_path / "p.pq"
    frame = pd.DataFrame({"image": ["a.png", "b.png"], "n": [1, 2]}, index=[7, 9])
    frame.to_parquet(path)
    source = TableSource(path)
    assert source.schema.names == ["image", "n"]
    assert all_rows(source).to_pydict() == {"image": ["a.png", "b.png"], "n": [1, 2]}


def test_sample_data_tables_resolve() -> None:
    data = Path(__file__).resolve().parents[2] / "sample_data"
    for name, column in [
        ("captchas.parquet", "image_path"),
        ("captchas.csv", "image_path"),
        ("captchas_b64.parquet", "image_b64"),
    ]:
        source = TableSource(data / name, batch_rows=100)
        assert (source.image_column, source.id_column) == (column, "id")
        first = next(source.batches())
        images = resolve_column(first, column, base_dir=source.base_dir)
        assert all(isinstance(i, bytes) for i in images)


# --- CSV -----------------------------------------------------------------------------


def test_csv_quotes_newlines_unicode_and_nulls(tmp_path: Path) -> None:
    rows = [
        ["1", "a.png", 'say "hi", twice'],
        ["2", "dir with space/ü.png", "line one\nline two\r\nline three"],
        ["3", "", "漢字 ünïcødé 🙂"],
        ["4", "d.png", "NA"],
        ["5", "e.png", ""],
    ]
    source = TableSource(write_csv(tmp_path / "t.csv", ["id", "image", "label"], rows))
    assert source.schema == pa.schema(
        [("id", pa.string()), ("image", pa.string()), ("label", pa.string())]
    )
    before = source.num_rows  # CSV has no cheap count ...
    assert (before, source.count_rows(), source.num_rows) == (None, 5, 5)  # ... until counted
    got = all_rows(source).to_pydict()
    assert got["id"] == ["1", "2", "3", "4", "5"]  # numbers stay text: no type drift
    assert got["image"] == ["a.png", "dir with space/ü.png", None, "d.png", "e.png"]
    assert got["label"] == [
        'say "hi", twice',
        "line one\nline two\r\nline three",
        "漢字 ünïcødé 🙂",
        "NA",
        None,
    ]


def test_csv_many_blocks_keep_one_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_readers, "_CSV_BLOCK", 1024)
    # The "value" column is numeric for hundreds of rows, then text: per-block type
    # inference would change its type between blocks.
    rows = [[str(i), f"{i}.png", str(i) if i < 800 else f"text {i}"] for i in range(1000)]
    source = TableSource(
        write_csv(tmp_path / "t.csv", ["id", "image", "value"], rows), batch_rows=64
    )
    batches = check_batches(source)
    assert [b.num_rows for b in batches] == [64] * 15 + [40]
    assert [v for b in batches for v in b.column("value").to_pylist()] == [r[2] for r in rows]


def test_csv_row_longer_than_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_readers, "_CSV_BLOCK", 2048)
    big = base64.b64encode(make_png(size=(200, 80))).decode()
    assert len(big) > 4 * 2048
    rows = [[str(i), big if i == 700 else f"{i}.png"] for i in range(1000)]
    source = TableSource(write_csv(tmp_path / "t.csv", ["id", "image"], rows), batch_rows=100)
    ids = [i for b in check_batches(source) for i in b.column("id").to_pylist()]
    assert ids == [str(i) for i in range(1000)]  # nothing lost or repeated by the restart
    assert source.count_rows() == 1000


def test_csv_streaming_batch_count(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as fh:
        fh.write("id,image\n")
        fh.writelines(f"{i},images/{i}.png\n" for i in range(50_000))
    source = TableSource(path, batch_rows=1000)
    sizes = [b.num_rows for b in check_batches(source)]
    assert sizes == [1000] * 50


def peak_memory_while_streaming(path: Path) -> tuple[int, int, int]:
    """Rows, peak Arrow pool bytes and peak Python bytes while streaming ``path``.

    Run in a fresh interpreter: pyarrow's pool peak cannot be reset in this one.
    """
    script = textwrap.dedent(f"""
        import tracemalloc, pyarrow as pa
        import pandas  # pyarrow loads it on its first list conversion: not streaming memory
        from capbatch._io.inputs import TableSource
        tracemalloc.start()
        source = TableSource({str(path)!r}, image_column="image", batch_rows=1000)
        rows = sum(b.num_rows for b in source.batches())
        print(rows, pa.default_memory_pool().max_memory(), tracemalloc.get_traced_memory()[1])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    rows, arrow_peak, python_peak = map(int, out.stdout.split())
    return rows, arrow_peak, python_peak


def test_csv_reading_memory_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rng = random.Random(1)
    with path.open("w") as fh:
        fh.write("id,image,label\n")
        for i in range(48_000):
            payload = base64.b64encode(rng.randbytes(300)).decode()
            fh.write(f'{i},{payload},"multi\nline {i}"\n')
    size = path.stat().st_size
    assert size > 20_000_000
    rows, arrow_peak, python_peak = peak_memory_while_streaming(path)
    assert rows == 48_000
    assert 0 < arrow_peak < size / 4, (arrow_peak, size)  # measured: ~4 MB of ~20 MB
    assert python_peak < size / 10, (python_peak, size)  # measured: well under 1 MB


def test_parquet_reading_memory_is_bounded(tmp_path: Path) -> None:
    # One row group for the whole file, as pandas writes it: by default pyarrow would
    # load every column chunk of the row group at once.
    path = tmp_path / "big.parquet"
    rng = random.Random(2)
    n = 120_000
    table = pa.table(
        {"id": [str(i) for i in range(n)], "image": [rng.randbytes(300) for _ in range(n)]}
    )
    pq.write_table(table, path)
    del table
    size = path.stat().st_size
    assert size > 30_000_000 and pq.ParquetFile(path).metadata.num_row_groups == 1
    rows, arrow_peak, _ = peak_memory_while_streaming(path)
    assert rows == n
    assert 0 < arrow_peak < size / 3, (arrow_peak, size)  # measured: ~8 MB of ~37 MB


def test_csv_bad_row_mid_file_is_a_table_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_readers, "_CSV_BLOCK", 1024)
    path = tmp_path / "t.csv"
    good = "".join(f"{i},{i}.png\n" for i in range(1000))
    path.write_text("id,image\n" + good + "x,y,z," + "A" * 500 + "\n")
    source = TableSource(path)  # the header and first block are fine
    with pytest.raises(TableError) as info:
        list(source.batches())
    message = str(info.value)
    assert str(path) in message and "Expected 2 columns" in message
    assert "\n" not in message and len(message) < 500


def test_csv_gz(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("id,image\n1,a.png\n2,b.png\n")
    source = TableSource(path)
    assert source.format == "csv"
    assert all_rows(source).column("image").to_pylist() == ["a.png", "b.png"]


@pytest.mark.parametrize("sep", [";", "\t", "|"], ids=["semicolon", "tab", "pipe"])
def test_csv_separator_is_found_from_the_header(tmp_path: Path, sep: str) -> None:
    # Commas in the values (not in the header) must not make it look comma-separated.
    rows = [["1", "a.png", "x, y"], ["2", "b.png", "1,5"], ["3", "c.png", ""]]
    path = tmp_path / "t.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter=sep).writerows([["id", "image", "note"], *rows])
    source = TableSource(path, batch_rows=2)
    assert source.delimiter == sep
    assert source.schema.names == ["id", "image", "note"]
    assert (source.image_column, source.count_rows()) == ("image", 3)
    assert all_rows(source).column("note").to_pylist() == ["x, y", "1,5", None]
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert TableSource(gz).delimiter == sep


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id,image\n1,a.png\n", ","),
        ("image\na;b.png\n", ","),  # one column: nothing to split
        ("\ufeffid;image\n1;a.png\n", ";"),  # a byte order mark is not part of the name
        ("id;image;note\n1;a.png;x\n", ";"),
        # Both in the header: the one that splits every line alike wins...
        ('id;image;"note, free"\n1;a.png;x\n2;b.png;y\n', ";"),
        ("id,image,a|b\n1,a.png,x\n2,b.png,y|z\n", ","),
        ("id\timage|x\n1\ta.png|x\n", "\t"),
        # ...the most fields on a tie, and "," when no candidate is consistent.
        ("a;b,c;d\n1;2,3;4\n", ";"),
        ("a,b;c\n1,2;3\n", ","),
        ("a,b;c\n1\n2;3;4;5\n", ","),
    ],
)
def test_sniff_delimiter_rules(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    assert _readers.sniff_delimiter(path) == expected


def test_sniff_delimiter_reads_a_bounded_head(tmp_path: Path) -> None:
    # The first row holds a big image: the cut-off last line is not counted against ";".
    path = tmp_path / "t.csv"
    path.write_text("id;image\n1;" + "A" * 200_000 + "\n2;b.png\n", encoding="utf-8")
    assert _readers.sniff_delimiter(path) == ";"
    assert TableSource(path).count_rows() == 2


# --- JSON Lines ----------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def test_jsonl_column_null_in_first_chunk(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {"id": i, "image": f"{i}.png", "label": None if i < 25 else f"lab{i}"} for i in range(40)
    ]
    records[30]["extra"] = {"nested": [1, 2]}  # a key that appears late, holding an object
    source = TableSource(write_jsonl(tmp_path / "t.jsonl", records), batch_rows=10)
    fields = [(f.name, f.type) for f in source.schema]
    assert fields == [
        ("id", pa.int64()),
        ("image", pa.string()),
        ("label", pa.string()),
        ("extra", pa.string()),
    ]
    assert source.num_rows == 40
    got = all_rows(source).to_pydict()
    assert [b.num_rows for b in check_batches(source)] == [10] * 4
    assert got["label"] == [None] * 25 + [f"lab{i}" for i in range(25, 40)]
    assert got["extra"][30] == '{"nested": [1, 2]}' and got["extra"][0] is None


def test_jsonl_conflicting_types(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {"image": "a.png", "score": 1, "code": 7, "flag": True},
        {"image": "b.png", "score": 2.5, "code": "x7", "flag": None},
        {"image": "c.png", "score": None, "code": 8, "flag": False},
    ]
    path = tmp_path / "t.ndjson"
    path.write_text("\n" + "\n\n".join(json.dumps(r) for r in records) + "\n\n")  # blank lines
    source = TableSource(path, batch_rows=2)
    fields = {f.name: f.type for f in source.schema}
    assert fields == {
        "image": pa.string(),
        "score": pa.float64(),
        "code": pa.string(),
        "flag": pa.bool_(),
    }
    got = all_rows(source).to_pydict()
    assert got["score"] == [1.0, 2.5, None]
    assert got["code"] == ["7", "x7", "8"]
    assert got["flag"] == [True, None, False]


def test_json_extension_and_gz(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t.json", [{"image": "a.png"}])
    assert TableSource(tmp_path / "t.json").format == "jsonl"
    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as fh:
        fh.write('{"image": "a.png", "id": "k"}\n')
    source = TableSource(tmp_path / "t.jsonl.gz")
    assert all_rows(source).to_pydict() == {"image": ["a.png"], "id": ["k"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"image": "a.png"}]\n', "line 1 is a JSON array"),
        ('{"image": "a.png"}\n{"image": \n', "line 2"),
        ('{"image": "a.png"}\n42\n', "line 2 is not a JSON object"),
        ("\n\n  \n", "no JSON lines"),
    ],
)
def test_jsonl_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(TableError, match=expected):
        TableSource(path)


# --- in-memory tables ----------------------------------------------------------------


def test_dataframe_with_bytes_objects(png: bytes) -> None:
    frame = pd.DataFrame(
        {
            "blob": [png, None, png],
            "label": ["a", "b", None],
            "kind": pd.Categorical(["x", "y", "x"]),
        },
        index=[10, 20, 30],
    )
    source = TableSource(frame, batch_rows=2)
    assert (source.format, source.path, source.base_dir) == ("dataframe", None, Path.cwd())
    assert source.image_column == "blob"  # found by content: PNG signatures
    # The index comes along, last, for the results to get it back (frame_index).
    assert source.schema.names == ["blob", "label", "kind", "__index_level_0__"]
    assert source.schema.field("blob").type == pa.binary()
    batches = check_batches(source)
    assert [b.num_rows for b in batches] == [2, 1]
    got = all_rows(source).to_pydict()
    assert got["blob"] == [png, None, png] and got["label"] == ["a", "b", None]
    assert got["kind"] == ["x", "y", "x"]
    assert got["__index_level_0__"] == [10, 20, 30]
    out = resolve_column(batches[1], "blob", base_dir=source.base_dir, first_row=2)
    assert out == [png]


def test_pyarrow_table_with_chunks_is_rechunked() -> None:
    chunks = [
        pa.record_batch({"image": [f"{i}.png" for i in range(s, s + n)]})
        for s, n in [(0, 3), (3, 1), (4, 7), (11, 2)]
    ]
    source = TableSource(pa.Table.from_batches(chunks), batch_rows=5)
    assert source.format == "arrow" and source.num_rows == 13
    batches = check_batches(source)
    assert [b.num_rows for b in batches] == [5, 5, 3]
    assert [v for b in batches for v in b.column("image").to_pylist()] == [
        f"{i}.png" for i in range(13)
    ]


# --- empty tables and bad tables -----------------------------------------------------


def test_tables_with_no_rows_yield_no_batches(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("id,image\n")
    pq.write_table(pa.table({"image": pa.array([], pa.string())}), tmp_path / "e.parquet")
    for source in (
        TableSource(tmp_path / "h.csv"),
        TableSource(tmp_path / "e.parquet"),
        TableSource(pd.DataFrame({"image": pd.Series([], dtype=object)})),
    ):
        assert list(source.batches()) == []
        assert source.count_rows() == 0


def test_a_table_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    # (A FIFO, which must not even be opened, is tested through the CLI with a timeout:
    # here a regression would hang the test run.)
    device = tmp_path / "zero.csv"
    device.symlink_to("/dev/zero")
    with pytest.raises(TableError, match="not a regular file") as info:
        TableSource(device)
    assert str(device) in str(info.value)


def test_no_image_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["id", "label", "notes"], [["1", "abc", "hello"]])
    with pytest.raises(TableError) as info:
        TableSource(path)
    message = str(info.value)
    assert "no image column" in message and str(path) in message
    assert all(repr(c) in message for c in ["id", "label", "notes"])


def test_named_columns_must_exist(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["ID", "Image", "label"], [["1", "a.png", "x"]])
    with pytest.raises(TableError, match=r"'image' is not in .*did you mean 'Image'.*'label'"):
        TableSource(path, image_column="image")
    with pytest.raises(TableError, match=r"id column 'uid' is not in"):
        TableSource(path, id_column="uid")
    source = TableSource(path, image_column="label", id_column="label")
    assert (source.image_column, source.id_column) == ("label", "label")
    with pytest.raises(TableError, match="holds int64 values"):
        TableSource(pa.table({"image": [1, 2]}), image_column="image")


def test_detection_by_name(png: bytes) -> None:
    table = pa.table({"Key": ["k"], "PATH": ["a.png"], "Image_B64": ["x"], "uuid": ["u"]})
    source = TableSource(table)
    assert source.image_column == "Image_B64"  # earlier in the name list than "path"
    assert source.id_column == "uuid"  # "uuid" is tried before "key"
    source = TableSource(pa.table({"file": ["a.png"], "note": ["n"]}))
    assert (source.image_column, source.id_column) == ("file", None)
    # A column named "image" that cannot hold images is passed over.
    table = pa.table({"image": [1], "x": [base64.b64encode(png).decode()]})
    assert TableSource(table).image_column == "x"


def test_detection_by_content_base64_and_paths(tmp_path: Path, png: bytes) -> None:
    b64 = base64.b64encode(png).decode()
    frame = pd.DataFrame({"label": ["abc"] * 30, "x": [b64] * 29 + ["junk"]})
    source = TableSource(frame)
    assert source.image_column == "x"
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "0.png").write_bytes(png)
    path = write_csv(tmp_path / "t.csv", ["n", "x"], [[str(i), f"imgs/{i}.png"] for i in range(5)])
    source = TableSource(path)
    assert source.image_column == "x"
    out = resolve_column(next(source.batches()), "x", base_dir=source.base_dir)
    assert out[0] == png
    assert isinstance(out[1], RowInputError) and out[1].error_code == "INPUT_FILE_NOT_FOUND"
    assert out[1].row == 1


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.csv", None, "not found"),
        ("t.txt", b"image\na.png\n", "unknown table file type '.txt'"),
        ("t", b"image\na.png\n", r"unknown table file type '\(no extension\)'"),
        ("t.parquet.gz", b"x", "unknown table file type"),
        ("empty.csv", b"", "empty"),
        ("empty.parquet", b"", "empty"),
        ("bad.parquet", b"this is not parquet at all" * 10, "not a valid PARQUET file"),
        ("dup.csv", b"image,image\na.png,b.png\n", "duplicate column names: image"),
    ],
)
def test_unreadable_tables(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TableError, match=expected) as info:
        TableSource(path)
    assert str(path) in str(info.value)


def test_directory_and_odd_sources(tmp_path: Path) -> None:
    with pytest.raises(TableError, match=r"no image files .* in the folder"):
        TableSource(tmp_path)  # a folder is an input (image_folder), but this one is empty
    with pytest.raises(TableError, match="cannot read a list"):
        TableSource([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_rows"):
        TableSource(pa.table({"image": ["a.png"]}), batch_rows=0)


def test_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [f"{i}.png" for i in range(1000)]}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TableError, match="not a valid PARQUET file"):
        TableSource(path)


def test_relative_table_path_and_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    write_csv(tmp_path / "sub" / "t.csv", ["image"], [["a.png"]])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "sub"))
    for given in ("sub/t.csv", "~/t.csv", os.path.join(".", "sub", "t.csv")):
        source = TableSource(given)
        assert source.base_dir == tmp_path / "sub" and source.path == tmp_path / "sub" / "t.csv"
    assert "t.csv" in repr(source)


def test_csv_encoding(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfimage,id\na.png,1\n")
    assert TableSource(tmp_path / "bom.csv").image_column == "image"  # BOM not in the name
    (tmp_path / "latin1.csv").write_bytes(b"image,id\ncaf\xe9.png,1\n")
    with pytest.raises(TableError, match="invalid UTF8"):
        list(TableSource(tmp_path / "latin1.csv").batches())


def test_dataframes_pyarrow_cannot_type(png: bytes) -> None:
    with pytest.raises(TableError, match="'image' mixes str and bytes"):
        TableSource(pd.DataFrame({"image": ["a.png", png]}))
    with pytest.raises(TableError, match="cannot convert the input DataFrame"):
        TableSource(pd.DataFrame({"image": ["a.png", "b.png"], "id": [1, "x"]}))


def test_every_error_code_with_its_row_index(
    tmp_path: Path, png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table with one bad row per error code, streamed in batches of 4 rows."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "ok.png").write_bytes(png)
    (tmp_path / "imgs" / "locked.png").write_bytes(png)
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    (tmp_path / "imgs" / "notes.png").write_text("not an image")
    (tmp_path / "imgs" / "cut.png").write_bytes(png[: len(png) // 2])
    big = make_png(seed=3, size=(300, 200))
    tiny = io.BytesIO()
    Image.new("L", (1, 1)).save(tiny, "GIF")
    cells = [
        ("imgs/ok.png", None),
        (None, "INPUT_NULL"),
        ("   ", "INPUT_NULL"),
        ("imgs/nope.png", "INPUT_FILE_NOT_FOUND"),
        ("imgs", "INPUT_IS_DIRECTORY"),
        ("imgs/locked.png", "INPUT_FILE_UNREADABLE"),
        ("imgs/empty.png", "INPUT_EMPTY"),
        ("imgs/notes.png", "INPUT_NOT_AN_IMAGE"),
        ("data:text/plain;base64,aGVsbG8=", "INPUT_NOT_AN_IMAGE"),
        ("imgs/cut.png", "INPUT_TRUNCATED_IMAGE"),
        ("QUJD" * 20 + "Q", "INPUT_INVALID_BASE64"),
        (base64.b64encode(big).decode(), "INPUT_TOO_LARGE"),
        ("data:image/gif;base64," + base64.b64encode(tiny.getvalue()).decode(), "INPUT_TOO_SMALL"),
        (base64.urlsafe_b64encode(png).decode().rstrip("="), None),
    ]
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"id": [str(i) for i in range(len(cells))], "image": [c[0] for c in cells]}), path
    )
    real_read = _images._read_regular

    def read(path: Path, limit: int | None) -> bytes | None:
        if path.name == "locked.png":  # chmod does not stop root: fail the read itself
            raise PermissionError(13, "Permission denied")
        return real_read(path, limit)

    monkeypatch.setattr(_images, "_read_regular", read)
    source = TableSource(path, batch_rows=4)
    got: dict[int, str | None] = {}
    first_row = 0
    for batch in source.batches():
        out = resolve_column(
            batch,
            source.image_column,
            base_dir=source.base_dir,
            min_bytes=100,
            max_bytes=len(png) * 2,
            first_row=first_row,
        )
        for i, value in enumerate(out):
            if isinstance(value, RowInputError):
                got[value.row if value.row is not None else -1] = value.error_code
                assert "\n" not in value.message and len(value.message) < 300
            else:
                assert value == png
                got[first_row + i] = None
        first_row += batch.num_rows
    assert got == {i: code for i, (_, code) in enumerate(cells)}
    # A column holding values that are neither text nor bytes (resolve_column does not
    # check types; TableSource refuses such a column as the image column).
    out = resolve_column(pa.record_batch({"n": [1, None]}), "n", base_dir=tmp_path, first_row=7)
    assert [(e.error_code, e.row) for e in out if isinstance(e, RowInputError)] == [
        ("INPUT_UNSUPPORTED_VALUE", 7),
        ("INPUT_NULL", 8),
    ]
