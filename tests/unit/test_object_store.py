"""Object-store URIs (``capbatch._io.object_store``): telling them from paths, showing
them without credentials, and an upload that is whole or absent. fsspec's in-process
``memory://`` store stands in for a real one here; tests/e2e/test_object_store_cli.py
runs against an S3 server on loopback."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capbatch._exceptions import ConfigError, OutputError, RowInputError
from capbatch._io import object_store as store
from capbatch._io.images import resolve_image
from capbatch._io.locations import location
from capbatch._run.remote_files import RemoteFiles

fsspec = pytest.importorskip("fsspec", reason="fsspec is in the dev extra")


@pytest.fixture
def memory() -> Iterator[Any]:
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    yield fs
    fs.store.clear()


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        ("s3://bucket/t.parquet", True),
        ("gs://b/x", True),
        ("abfss://c@acct.dfs.core.windows.net/x", True),
        ("file:///tmp/x.parquet", False),
        ("/tmp/x.parquet", False),
        ("C://Users/x.csv", False),  # a Windows drive, not a scheme
        ("relative/s3://x", False),
    ],
)
def test_uris_are_told_from_paths(text: str, uri: bool) -> None:
    assert store.is_uri(text) is uri
    assert isinstance(location(text), str if uri else Path)


def test_a_file_uri_is_the_local_path_it_names() -> None:
    assert location("file:///tmp/in.parquet") == Path("/tmp/in.parquet")


def test_credentials_are_never_shown() -> None:
    uri = "s3://AKIAXYZ123:very-secret-key@bucket/dir/t.parquet?session_token=tok-9876"
    assert store.shown(uri) == "s3://bucket/dir/t.parquet"
    said = store.message(uri, OSError(f"failed to open {uri} (very-secret-key, tok-9876)"))
    for secret in ("AKIAXYZ123", "very-secret-key", "tok-9876"):
        assert secret not in said
    assert "bucket/dir/t.parquet" in said


def test_uri_paths_are_joined_and_suffixed_inside_the_path() -> None:
    uri = "s3://b/dir/t.csv?region=eu-west-1"
    assert store.with_suffix(uri, ".results.parquet") == (
        "s3://b/dir/t.csv.results.parquet?region=eu-west-1"
    )
    assert store.join(store.folder_of(uri), "images/a.png") == (
        "s3://b/dir/images/a.png?region=eu-west-1"
    )
    assert store.name_of(uri) == "t.csv"


def test_an_upload_cut_short_leaves_the_old_object_and_no_temporary(
    memory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream to a store completes its upload when closed, even early: the copy
    must go to a temporary object, never to the one named."""
    memory.pipe("/results/out.parquet", b"the previous results")
    new = tmp_path / "out.parquet"
    new.write_bytes(b"x" * (3 << 20))

    def copy_then_break(source: Any, target: Any, length: int = 0) -> None:
        target.write(source.read(1 << 20))
        raise KeyboardInterrupt  # a Ctrl-C in the middle of the copy

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_break)
    with pytest.raises(KeyboardInterrupt):
        store.upload(new, "memory://results/out.parquet")

    assert memory.cat("/results/out.parquet") == b"the previous results"
    assert memory.ls("/results", detail=False) == ["/results/out.parquet"]


def test_an_upload_replaces_the_object_whole(memory: Any, tmp_path: Path) -> None:
    memory.pipe("/results/out.parquet", b"old")
    new = tmp_path / "out.parquet"
    new.write_bytes(b"new results " * 1000)
    store.upload(new, "memory://results/out.parquet")
    assert memory.cat("/results/out.parquet") == new.read_bytes()
    assert memory.ls("/results", detail=False) == ["/results/out.parquet"]


def test_an_unknown_scheme_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match=r"cannot open nosuch://b/x"):
        store.look_up("nosuch://b/x")


def test_an_image_uri_is_read_and_checked_like_a_file(memory: Any, png: bytes) -> None:
    memory.pipe("/imgs/a.png", png)
    memory.pipe("/imgs/big.png", png + b"\0" * 5000)
    assert resolve_image("memory://imgs/a.png", base_dir=Path.cwd()) == png
    # Relative to a table read from the store: its folder there.
    assert resolve_image("imgs/a.png", base_dir="memory://") == png
    assert resolve_image("a.png", base_dir=store.folder_of("memory://imgs/t.csv")) == png
    cases = {
        "memory://imgs/none.png": ("INPUT_FILE_NOT_FOUND", "memory://imgs/none.png"),
        "memory://imgs": ("INPUT_IS_DIRECTORY", "directory"),
    }
    for value, (code, words) in cases.items():
        with pytest.raises(RowInputError) as caught:
            resolve_image(value, base_dir=Path.cwd())
        assert caught.value.error_code == code and words in str(caught.value)
    with pytest.raises(RowInputError) as caught:
        resolve_image("memory://imgs/big.png", base_dir=Path.cwd(), max_bytes=len(png) + 10)
    assert caught.value.error_code == "INPUT_TOO_LARGE"
    assert f"is {len(png) + 5000} bytes" in str(caught.value)


def test_base64_in_a_table_from_a_store_is_not_looked_up_there(
    memory: Any, png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    looked: list[str] = []
    monkeypatch.setattr(store, "read_object", lambda uri, limit: looked.append(uri) or b"")
    text = base64.b64encode(png).decode()
    assert resolve_image(text, base_dir="memory://tables") == png
    assert looked == []


@pytest.fixture
def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_that_fails_names_the_local_copy_and_the_way_out(
    memory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results are paid for: a failed upload is an ``OutputError`` (exit 1, the CLI
    adds "run the same command to resume") naming where they are."""
    staged = tmp_path / "out.parquet"
    staged.write_bytes(b"results")

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError("Access Denied")

    memory.pipe("/r/out.parquet", b"old")
    monkeypatch.setattr(memory, "open", refuse)
    with pytest.raises(OutputError) as caught:
        RemoteFiles(None, "memory://r/out.parquet", staged).publish()
    said = str(caught.value)
    assert f"the results are written in {staged} but not uploaded" in said
    assert "cannot upload to memory://r/out.parquet: Access Denied" in said
    assert memory.cat("/r/out.parquet") == b"old"


def test_a_store_that_takes_no_writes_is_found_before_the_run(
    memory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(memory, "open", refuse)
    with pytest.raises(ConfigError, match=r"cannot write to memory://r/out.parquet: read-only"):
        store.check_writable("memory://r/out.parquet")
    store_files = memory.find("/r")
    assert store_files == []


def test_a_filesystem_is_made_once_per_bucket(
    memory: Any, png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every image of a table is read from the same few buckets: the filesystem (for
    S3 a region look-up each time it is made) is made once for all of them."""
    made: list[str] = []
    real = store._open_filesystem

    def counting(uri: str) -> Any:
        made.append(uri)
        return real(uri)

    monkeypatch.setattr(store, "_STORES", {})
    monkeypatch.setattr(store, "_open_filesystem", counting)
    for name in ("a", "b", "c"):
        memory.pipe(f"/imgs/{name}.png", png)
        assert store.read_object(f"memory://imgs/{name}.png", None) == png
    assert made == ["memory://imgs/a.png"]
