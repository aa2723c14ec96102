"""Telling an object-store URI from a local path, without importing pyarrow (the CLI
parses its arguments with this before the run's machinery is loaded)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

# Two characters at least: ``C://x`` is a Windows path, not a URI.
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")


def is_uri(value: object) -> TypeGuard[str]:
    """True for an object-store URI (``s3://``, ``gs://``...: any scheme but ``file``)."""
    if not isinstance(value, str):
        return False
    match = _SCHEME.match(value)
    return match is not None and match.group(1).lower() != "file"


def local_path(value: Any) -> Any:
    """A ``file://`` URI as the local path it names; anything else as it is."""
    if isinstance(value, str) and value[:7].lower() == "file://":
        return Path(urlsplit(value).path)
    return value


def location(value: str) -> Path | str:
    """A command-line path: a URI stays text, anything else is a ``Path``."""
    return value if is_uri(value) else Path(local_path(value))
