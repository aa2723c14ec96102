"""Pillow, kept quiet and bounded: its decompression-bomb warning raised as an error,
its other warnings dropped (``images`` and the report's gallery both open images)."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Final

from PIL import Image

__all__ = ["pillow_guard", "pixel_error"]

# warnings.catch_warnings swaps process-wide state: two threads inside it at once can
# leave the other's filters installed for good, so our own uses take turns.
_WARNINGS_LOCK: Final = threading.Lock()


@contextlib.contextmanager
def pillow_guard() -> Iterator[None]:
    """Run Pillow code with its decompression-bomb warning raised as an exception and its
    other warnings dropped, so nothing reaches the terminal raw.

    Pillow only *warns* between ``MAX_IMAGE_PIXELS`` and twice that and then decodes the
    whole image anyway; raised, the warning stops it like ``DecompressionBombError``.
    The others (``Corrupt EXIF data``, ``Tag data larger than file``...) are about files
    that then fail or decode fine; the caller reports the outcome instead.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def pixel_error(exc: Exception) -> str | None:
    """Pillow's pixel count message for a decompression bomb (warning or error), else None."""
    if not isinstance(exc, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
        return None
    # "Image size (N pixels) exceeds limit of M pixels, could be decompression bomb DOS
    # attack.": the counts are what the user needs; the alarm adds nothing.
    return str(exc).split(", could be")[0]
