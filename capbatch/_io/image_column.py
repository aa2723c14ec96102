"""The image column as a whole: finding it, telling a base64 column, resolving every cell.

``is_image_type`` says whether a column's Arrow type can hold images at all;
``guess_image_column`` picks the image column of a table by its values when no name
says so, using ``looks_like_image_value`` (a cheap guess per cell, without I/O).
``is_base64_column`` decides whether text that is neither a file nor base64 is reported
as a missing file or as invalid base64, and ``resolve_column`` turns every cell of a
batch into image bytes or that row's error with ``capbatch._io.images.resolve_image``.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Final

import pyarrow as pa

from capbatch._exceptions import RowInputError

# The cell rules' own helpers: the column guesses must read a value exactly as a cell is.
from capbatch._io.images import _decode_base64, _has_image_extension, image_format, resolve_image


def resolve_column(
    batch: pa.RecordBatch | pa.Table,
    column: str,
    *,
    base_dir: Path | str,
    min_bytes: int = 1,
    max_bytes: int | None = None,
    first_row: int = 0,
    base64_column: bool | None = None,
    max_side: int | None = None,
) -> list[bytes | RowInputError]:
    """``resolve_image`` for every cell of ``column``: bytes, or the row's error.

    Errors are returned, not raised, with ``row`` set to the global 0-based row index
    (``first_row`` + position in the batch). ``base64_column`` None means
    ``is_base64_column`` decides from the column's name and this batch's values. The
    limits (``min_bytes``, ``max_bytes``, ``max_side``) are the provider's.
    """
    values = batch.column(column).to_pylist()
    if base64_column is None:
        base64_column = is_base64_column(column, values)
    out: list[bytes | RowInputError] = []
    for i, value in enumerate(values):
        try:
            out.append(
                resolve_image(
                    value,
                    base_dir=base_dir,
                    min_bytes=min_bytes,
                    max_bytes=max_bytes,
                    base64_column=base64_column,
                    max_side=max_side,
                )
            )
        except RowInputError as exc:
            exc.row = first_row + i
            out.append(exc)
    return out


def is_image_type(dtype: pa.DataType) -> bool:
    """Whether an Arrow column of ``dtype`` can hold paths, base64 or bytes (or nulls),
    or lists of them (several images a row: AwsWafClassification's ``images``)."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        dtype = dtype.value_type
    kinds = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_fixed_size_binary,
        pa.types.is_null,
    )
    return any(is_kind(dtype) for is_kind in kinds) or str(dtype) in {"string_view", "binary_view"}


def guess_image_column(batch: pa.RecordBatch, sample: int = 20) -> str | None:
    """The first string/binary column of ``batch`` whose values mostly look like images.

    Up to ``sample`` non-null values per column are looked at, without any I/O.
    """
    for field in batch.schema:
        if is_image_type(field.type) and not pa.types.is_null(field.type):
            values = batch.column(field.name).drop_null().slice(0, sample).to_pylist()
            if values and 2 * sum(map(looks_like_image_value, values)) > len(values):
                return str(field.name)
    return None


# Column names that declare base64 content (image_b64, image_base64, b64, ...).
_BASE64_NAME: Final = re.compile(r"b64|base64", re.IGNORECASE)


def is_base64_column(name: str, values: list[object], sample: int = 20) -> bool:
    """Whether a column holds base64 images: its name says so (``b64``, ``base64``), or
    at least half of its first ``sample`` non-null text values are base64 whose first
    bytes carry an image signature (no I/O). Data URIs and bytes do not count."""
    if _BASE64_NAME.search(name):
        return True
    # Only the start of a value is looked at: stripping a whole payload would copy it.
    heads = (v[:128].strip() for v in values if isinstance(v, str))
    texts = list(itertools.islice((h for h in heads if h), sample))
    # At least half: a path never decodes to an image signature, so one bad value beside
    # one good one is a base64 column with a bad value, not a missing file.
    return bool(texts) and 2 * sum(map(_starts_as_base64_image, texts)) >= len(texts)


def _starts_as_base64_image(text: str) -> bool:
    if text[:5].lower() == "data:":
        return False
    head = _decode_base64("".join(text[:64].split())[:24])
    return head is not None and image_format(head) is not None


def looks_like_image_value(value: object) -> bool:
    """A cheap guess, without I/O, that a cell holds an image (for column detection).

    True for bytes with an image signature, data URIs, base64 whose first bytes carry an
    image signature, strings ending in an image file extension, and lists whose first
    item is one of these.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return image_format(value) is not None
    if isinstance(value, list) and value:  # a list column: several images a row
        return looks_like_image_value(value[0])
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text[:11].lower() == "data:image/":
        return True
    if _has_image_extension(text):
        return True
    # 24 base64 characters decode to 18 bytes: enough for any signature above.
    return _starts_as_base64_image(text)
