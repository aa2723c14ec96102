"""Tests for capbatch._io.images, .image_column and .keys: one cell of the image column ->
validated image bytes, the column as a whole, and content keys."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import random
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from capbatch._exceptions import RowInputError
from capbatch._io import images as _images
from capbatch._io.image_column import (
    guess_image_column,
    is_base64_column,
    is_image_type,
    looks_like_image_value,
    resolve_column,
)
from capbatch._io.images import image_format, resolve_image
from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope, image_hash, task_key, task_key_from_hash
from capbatch._io.pillow_checks import pillow_guard
from capbatch._providers.profiles import (
    ANTICAPTCHA,
    CAPMONSTER,
    CAPSOLVER,
    TWOCAPTCHA,
    ProviderProfile,
)
from capbatch._run.plan import TaskKeys, plan_batch


def make_image(fmt: str = "PNG", size: tuple[int, int] = (120, 40), seed: int = 0) -> bytes:
    """A noisy image (noise keeps it from compressing to almost nothing)."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, (240, 240, 240))
    px = im.load()
    assert px is not None
    for _ in range(size[0] * size[1] // 3):
        px[rng.randrange(size[0]), rng.randrange(size[1])] = (rng.randrange(256),) * 3
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def png() -> bytes:
    return make_image()


def resolve(value: object, base_dir: Path | None = None, **limits: int) -> bytes:
    return resolve_image(value, base_dir=base_dir or Path("/nonexistent-base"), **limits)


def error_of(value: object, base_dir: Path | None = None, **limits: int) -> RowInputError:
    with pytest.raises(RowInputError) as info:
        resolve(value, base_dir, **limits)
    err = info.value
    assert "\n" not in err.message and "\r" not in err.message
    return err


# --- values that resolve ------------------------------------------------------------


def test_relative_path_resolves_against_base_dir(tmp_path: Path, png: bytes) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png)
    assert resolve("images/a.png", tmp_path) == png
    assert resolve("  images/a.png\n", tmp_path) == png  # surrounding whitespace ignored


def test_absolute_path_and_pathlike(tmp_path: Path, png: bytes) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(png)
    assert resolve(str(target)) == png
    assert resolve(target) == png


def test_paths_with_spaces_and_unicode(tmp_path: Path, png: bytes) -> None:
    folder = tmp_path / "my captchas ünï"
    folder.mkdir()
    (folder / "漢字 image 1.png").write_bytes(png)
    assert resolve("my captchas ünï/漢字 image 1.png", tmp_path) == png


def test_tilde_is_expanded(tmp_path: Path, png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cap.png").write_bytes(png)
    assert resolve("~/cap.png") == png


def test_base64_forms(png: bytes) -> None:
    std = base64.b64encode(png).decode()
    assert resolve(std) == png
    assert resolve(std.rstrip("=")) == png  # missing padding
    assert resolve(base64.encodebytes(png).decode()) == png  # MIME line breaks
    urlsafe = base64.urlsafe_b64encode(png).decode().rstrip("=")
    assert "-" in urlsafe or "_" in urlsafe
    assert resolve(urlsafe) == png


def test_base64_containing_slash_is_not_taken_for_a_path(tmp_path: Path) -> None:
    image = next(
        img for seed in range(50) if "/" in base64.b64encode(img := make_image(seed=seed)).decode()
    )
    text = base64.b64encode(image).decode()
    assert resolve(text, tmp_path) == image


def test_existing_file_wins_over_base64_reading(tmp_path: Path, png: bytes) -> None:
    # "abcd" is valid base64 too, but a file of that name is what the user meant.
    (tmp_path / "abcd").write_bytes(png)
    assert resolve("abcd", tmp_path) == png


def test_data_uri(png: bytes) -> None:
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert resolve(uri) == png
    assert resolve("DATA:image/PNG;BASE64," + base64.b64encode(png).decode()) == png


def test_raw_bytes_in_every_container(png: bytes) -> None:
    assert resolve(png) == png
    assert resolve(bytearray(png)) == png
    assert resolve(memoryview(png)) == png
    assert resolve(pa.scalar(png, type=pa.binary())) == png


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "ICO"])
def test_every_supported_format(fmt: str) -> None:
    data = make_image(fmt, size=(64, 32))
    assert image_format(data) == fmt
    assert resolve(data) == data


def test_provider_limits_pass_for_a_normal_captcha(png: bytes) -> None:
    assert resolve(png, min_bytes=ANTICAPTCHA.min_image_bytes, max_bytes=CAPMONSTER.max_image_bytes)


# --- every error code --------------------------------------------------------------


@pytest.mark.parametrize("value", [None, math.nan, float("nan"), pd.NA, "", "   ", "\n\t"])
def test_null_values(value: object) -> None:
    assert error_of(value).error_code == "INPUT_NULL"


@pytest.mark.parametrize("value", [1, 2.5, True, {"a": 1}, [1, 2], object()])
def test_unsupported_values(value: object) -> None:
    err = error_of(value)
    assert err.error_code == "INPUT_UNSUPPORTED_VALUE"
    assert type(value).__name__ in err.message


@pytest.mark.parametrize("text", ["missing.png", "images/cap-9999.png", "cap0001", "a b/c d"])
def test_file_not_found_names_the_path(tmp_path: Path, text: str) -> None:
    err = error_of(text, tmp_path)
    assert err.error_code == "INPUT_FILE_NOT_FOUND"
    assert str(tmp_path / text) in err.message


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    err = error_of("folder.png", tmp_path)
    assert err.error_code == "INPUT_IS_DIRECTORY"
    assert "folder.png" in err.message


def test_unreadable_file(tmp_path: Path, png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads files whatever their mode, so simulate the permission error instead.
    (tmp_path / "secret.png").write_bytes(png)

    def deny(path: Path, limit: int | None) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_images, "_read_regular", deny)
    err = error_of("secret.png", tmp_path)
    assert err.error_code == "INPUT_FILE_UNREADABLE"
    assert "secret.png" in err.message and "Permission denied" in err.message


def test_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert error_of("empty.png", tmp_path).error_code == "INPUT_EMPTY"
    assert error_of(b"").error_code == "INPUT_EMPTY"
    assert error_of("data:image/png;base64,").error_code == "INPUT_EMPTY"
    assert error_of("A" * 40 + "==").error_code != "INPUT_EMPTY"  # decodes to zeros, not empty


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello, I am text\n")
    err = error_of("notes.png", tmp_path)
    assert err.error_code == "INPUT_NOT_AN_IMAGE"
    assert "notes.png" in err.message
    assert error_of(b"hello world").error_code == "INPUT_NOT_AN_IMAGE"
    text_b64 = base64.b64encode(b"just some text, long enough to be base64 " * 3).decode()
    err = error_of(text_b64)
    assert err.error_code == "INPUT_NOT_AN_IMAGE"
    assert text_b64 not in err.message and str(len(text_b64)) in err.message


def test_data_uri_of_text_is_not_an_image() -> None:
    err = error_of("data:text/plain;base64," + base64.b64encode(b"hello").decode())
    assert err.error_code == "INPUT_NOT_AN_IMAGE"
    assert "text/plain" in err.message
    assert error_of("data:,hello%20world").error_code == "INPUT_NOT_AN_IMAGE"


def test_truncated_png(tmp_path: Path, png: bytes) -> None:
    cut = png[: len(png) // 2]
    (tmp_path / "cut.png").write_bytes(cut)
    for value in (cut, "cut.png", base64.b64encode(cut).decode(), png[:-10]):
        err = error_of(value, tmp_path)
        assert err.error_code == "INPUT_TRUNCATED_IMAGE", value if isinstance(value, str) else ""
        assert "PNG" in err.message


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_truncated_other_formats(fmt: str) -> None:
    data = make_image(fmt, size=(64, 32))
    assert error_of(data[: len(data) // 2]).error_code == "INPUT_TRUNCATED_IMAGE"


def test_invalid_base64() -> None:
    for text in ["QUJD" * 20 + "Q", "data:image/png;base64,@@@@", "data:image/png;base64"]:
        err = error_of(text)
        assert err.error_code == "INPUT_INVALID_BASE64", text
        assert text not in err.message


def test_too_large_against_provider_limit(tmp_path: Path) -> None:
    big = make_image(size=(400, 200))
    limit = CAPMONSTER.max_image_bytes
    assert len(big) > limit
    (tmp_path / "big.png").write_bytes(big)
    for value in (big, "big.png", base64.b64encode(big).decode()):
        err = error_of(value, tmp_path, max_bytes=limit)
        assert err.error_code == "INPUT_TOO_LARGE"
        assert str(len(big)) in err.message and str(limit) in err.message


def test_too_small_against_provider_limit() -> None:
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "GIF")
    tiny = buf.getvalue()
    assert len(tiny) < ANTICAPTCHA.min_image_bytes
    err = error_of(tiny, min_bytes=ANTICAPTCHA.min_image_bytes)
    assert err.error_code == "INPUT_TOO_SMALL"
    assert str(len(tiny)) in err.message and "100" in err.message
    assert resolve(tiny) == tiny  # the default floor is one byte


def test_too_many_pixels_on_a_side_against_provider_limit(tmp_path: Path) -> None:
    # 2Captcha: at most 1000 px on any side (TC-image); checked on the decoded size.
    side = TWOCAPTCHA.max_image_side
    assert side == 1000
    for fmt in ("PNG", "JPEG", "GIF"):
        wide, tall = make_image(fmt, size=(side + 1, 20)), make_image(fmt, size=(20, side + 1))
        for data in (wide, tall):
            err = error_of(data, max_side=side)
            assert err.error_code == "INPUT_TOO_LARGE", fmt
            assert "1000" in err.message and "pixels" in err.message
        assert resolve(make_image(fmt, size=(side, side // 10)), max_side=side)
        assert resolve(wide) == wide  # no limit: no check
    (tmp_path / "wide.png").write_bytes(make_image(size=(side + 1, 20)))
    encoded = base64.b64encode(make_image(size=(side + 1, 20))).decode()
    for value in ("wide.png", encoded, "data:image/png;base64," + encoded):
        assert error_of(value, tmp_path, max_side=side).error_code == "INPUT_TOO_LARGE"


def _tiny_gif() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "GIF")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("profile", "tiny", "wide", "heavy"),
    [
        # (profile, a 35-byte GIF, 1001 px wide, 60 KB): the outcome of each, None = sent
        (CAPSOLVER, None, None, None),
        (ANTICAPTCHA, "INPUT_TOO_SMALL", None, None),
        (CAPMONSTER, "INPUT_TOO_SMALL", None, "INPUT_TOO_LARGE"),
        (TWOCAPTCHA, "INPUT_TOO_SMALL", "INPUT_TOO_LARGE", None),
    ],
    ids=lambda v: getattr(v, "name", repr(v)),
)
def test_each_providers_image_limits_fail_the_row_before_anything_is_sent(
    profile: ProviderProfile, tiny: str | None, wide: str | None, heavy: str | None
) -> None:
    heavy_image = make_image(size=(400, 200), seed=3)
    assert 50_000 < len(heavy_image) < 100_000
    frame = pd.DataFrame(
        {"image": [_tiny_gif(), make_image(size=(1001, 24)), heavy_image, make_image()]}
    )
    source = TableSource(frame, image_column="image")
    batch = next(iter(source.batches()))
    keys = TaskKeys("ImageToTextTask", {}, KeyScope(profile.name))
    plan = plan_batch(batch, 0, source, profile, keys)
    outcomes = [plan.errors[i].error_code if i in plan.errors else None for i in range(4)]
    assert outcomes == [tiny, wide, heavy, None]
    assert [k is None for k in plan.keys] == [o is not None for o in outcomes]


def test_messages_never_carry_payloads(png: bytes) -> None:
    huge = base64.b64encode(png[: len(png) // 2]).decode()
    err = error_of(huge)
    assert huge[:40] not in err.message and len(err.message) < 300
    err = error_of(png[:-10])
    assert len(err.message) < 300


def test_decompression_bombs_are_row_errors_with_the_pixel_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; lowered here so
    # that small images stand in for the 90-million-pixel ones.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for fmt in ("PNG", "GIF", "JPEG"):
        warns, refused = make_image(fmt, size=(40, 30)), make_image(fmt, size=(50, 50))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            err_warns, err_refused = error_of(warns), error_of(refused)
        assert caught == [], [str(w.message) for w in caught]
        assert err_warns.error_code == err_refused.error_code == "INPUT_TOO_LARGE", fmt
        assert "1200 pixels" in err_warns.message and "1000 pixels" in err_warns.message
        assert "2500 pixels" in err_refused.message
        assert "DOS attack" not in err_warns.message


def test_pillow_warnings_about_damaged_files_are_not_printed() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 32)).save(buf, "TIFF")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        err = error_of(buf.getvalue()[:40])  # Pillow warns "Corrupt EXIF data"
    assert caught == [], [str(w.message) for w in caught]
    assert err.error_code == "INPUT_TRUNCATED_IMAGE"
    assert "BytesIO" not in err.message and "0x" not in err.message


def test_pillow_guard_leaves_the_warning_filters_as_they_were() -> None:
    before = list(warnings.filters)
    with pytest.raises(Image.DecompressionBombWarning), pillow_guard():
        warnings.warn("bomb", Image.DecompressionBombWarning, stacklevel=1)
    with pillow_guard():
        warnings.warn("ignored", UserWarning, stacklevel=1)
    assert warnings.filters == before


def test_a_fifo_swapped_in_after_the_stat_is_not_read(tmp_path: Path, png: bytes) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # no writer: a blocking open would wait for ever
    assert _images._read_regular(fifo, 100) is None
    (tmp_path / "ok.png").write_bytes(png)
    # Reads stop one byte past the limit, however big the file has grown.
    assert _images._read_regular(tmp_path / "ok.png", 10) == png[:11]
    assert _images._read_regular(tmp_path / "ok.png", None) == png


def test_base64_over_the_limit_is_refused_before_decoding(
    png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    mime = base64.encodebytes(png).decode()  # line breaks do not count towards the size
    assert resolve(mime, max_bytes=len(png)) == png
    assert resolve("data:image/png;base64," + mime, max_bytes=len(png)) == png
    huge = base64.b64encode(png + b"\0" * 3_000_000).decode()

    def no_decoding(text: str) -> bytes | None:
        raise AssertionError(f"decoded {len(text)} chars")

    monkeypatch.setattr(_images, "_decode_base64", no_decoding)
    for value in (huge, "data:image/png;base64," + huge):
        err = error_of(value, max_bytes=len(png))
        assert err.error_code == "INPUT_TOO_LARGE"
        assert str(len(png) + 3_000_000) in err.message and str(len(png)) in err.message
    assert error_of(mime, max_bytes=len(png) - 1).error_code == "INPUT_TOO_LARGE"


def test_in_a_base64_column_a_bad_value_is_invalid_base64(tmp_path: Path, png: bytes) -> None:
    b64 = base64.b64encode(png).decode()
    (tmp_path / "there.png").write_bytes(png)
    values = [b64, "not-base64!!!", "gone.png", "there.png", "bm90IGFuIGltYWdl", None]
    expected = [
        "ok",
        "INPUT_INVALID_BASE64",
        "INPUT_FILE_NOT_FOUND",  # an image file name is still a file name
        "ok",  # an existing file wins, as everywhere
        "INPUT_NOT_AN_IMAGE",  # base64 of text
        "INPUT_NULL",
    ]
    for name in ("image_b64", "IMAGE_BASE64", "b64"):
        out = resolve_column(pa.table({name: values}), name, base_dir=tmp_path)
        codes = [o.error_code if isinstance(o, RowInputError) else "ok" for o in out]
        assert codes == expected, name
    # By content: most values are base64 images, whatever the column's name.
    out = resolve_column(
        pa.table({"image": [b64, b64, "not-base64!!!"]}), "image", base_dir=tmp_path
    )
    assert isinstance(out[2], RowInputError) and out[2].error_code == "INPUT_INVALID_BASE64"
    # Outside a base64 column the same text reads as a file name.
    assert error_of("not-base64!!!", tmp_path).error_code == "INPUT_FILE_NOT_FOUND"
    out = resolve_column(pa.table({"image": ["not-base64!!!"]}), "image", base_dir=tmp_path)
    assert isinstance(out[0], RowInputError) and out[0].error_code == "INPUT_FILE_NOT_FOUND"


def test_is_base64_column(png: bytes) -> None:
    b64 = base64.b64encode(png).decode()
    assert is_base64_column("image_b64", [])
    assert is_base64_column("x", [None, "", b64, b64, "a.png"])
    assert not is_base64_column("x", [b64, "a.png", "b.png"])  # not more than half
    assert not is_base64_column("x", ["data:image/png;base64," + b64, png, None])
    assert not is_base64_column("image", [])


# --- resolve_column, keys and detection helpers ---------------------------------------


def test_resolve_column_sets_global_row_indices(tmp_path: Path, png: bytes) -> None:
    (tmp_path / "ok.png").write_bytes(png)
    batch = pa.RecordBatch.from_pydict(
        {"image": ["ok.png", None, "gone.png", base64.b64encode(png).decode(), "bm90IGFuIGltYWdl"]}
    )
    out = resolve_column(batch, "image", base_dir=tmp_path, first_row=1000)
    assert out[0] == png and out[3] == png
    errors = {i: o for i, o in enumerate(out) if isinstance(o, RowInputError)}
    assert {i: e.error_code for i, e in errors.items()} == {
        1: "INPUT_NULL",
        2: "INPUT_FILE_NOT_FOUND",
        4: "INPUT_FILE_NOT_FOUND",  # short and path-like: a missing file, not bad base64
    }
    assert {i: e.row for i, e in errors.items()} == {1: 1001, 2: 1002, 4: 1004}


def test_resolve_column_binary_and_limits(png: bytes) -> None:
    table = pa.table({"img": pa.array([png, b"", None], type=pa.large_binary())})
    out = resolve_column(table, "img", base_dir=Path("."), max_bytes=len(png) - 1)
    codes = [o.error_code if isinstance(o, RowInputError) else "ok" for o in out]
    assert codes == ["INPUT_TOO_LARGE", "INPUT_EMPTY", "INPUT_NULL"]
    assert [o.row for o in out if isinstance(o, RowInputError)] == [0, 1, 2]


def test_task_key_is_a_stable_content_key(png: bytes) -> None:
    params = {"module": "common", "case": True}
    key = task_key(png, "ImageToTextTask", params)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == task_key(bytes(png), "ImageToTextTask", {"case": True, "module": "common"})
    assert key == task_key_from_hash(image_hash(png), "ImageToTextTask", params)
    assert key != task_key(png, "ImageToTextTask", {"module": "common", "case": False})
    assert key != task_key(png, "VisionEngine", params)
    assert key != task_key(png + b"\0", "ImageToTextTask", params)
    assert image_hash(png) == hashlib.sha256(png).hexdigest()


def test_looks_like_image_value(png: bytes) -> None:
    assert looks_like_image_value(png)
    assert looks_like_image_value(base64.b64encode(png).decode())
    assert looks_like_image_value("data:image/png;base64,xxx")
    assert looks_like_image_value("dir/x.JPG")
    assert not looks_like_image_value("hello world")
    assert not looks_like_image_value(b"hello")
    assert not looks_like_image_value(42)


def test_guess_image_column_and_types(png: bytes) -> None:
    b64 = base64.b64encode(png).decode()
    batch = pa.RecordBatch.from_pydict(
        {"n": [1, 2], "label": ["ab", "cd"], "x": [b64, None], "y": [png, png]}
    )
    assert guess_image_column(batch) == "x"
    assert guess_image_column(batch.select(["n", "label"])) is None
    assert is_image_type(pa.dictionary(pa.int8(), pa.string()))
    assert not is_image_type(pa.int64())


def test_who_answers_is_part_of_the_key_exactly_as_journals_before_key_scope_hold_it(
    png: bytes,
) -> None:
    """Journals written before ``KeyScope`` keyed tasks by parameters with ``_provider``
    (and ``_base_url`` off the default URL) mixed in: their answers must still be found."""
    params = {"module": "common"}

    def old_key(extra: dict[str, str]) -> str:
        canonical = json.dumps(
            {**params, **extra}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        material = f"capbatch-task-v1\n{image_hash(png)}\nImageToTextTask\n{canonical}"
        return hashlib.sha256(material.encode()).hexdigest()

    default = KeyScope("capsolver")
    emulator = KeyScope("capsolver", "http://127.0.0.1:8080")
    assert task_key(png, "ImageToTextTask", params, default) == old_key({"_provider": "capsolver"})
    assert task_key(png, "ImageToTextTask", params, emulator) == old_key(
        {"_provider": "capsolver", "_base_url": "http://127.0.0.1:8080"}
    )
    assert task_key(png, "ImageToTextTask", params, KeyScope("anticaptcha")) != task_key(
        png, "ImageToTextTask", params, default
    )
