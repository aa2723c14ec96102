"""Object-store locations (``s3://bucket/key``, ``gs://``, ``abfs://``, ``hdfs://``, and
any scheme an installed fsspec package knows): what a URI is, how it is shown, and the
few operations a run needs: look one up, download, upload, read an image.

pyarrow's own filesystems come first (``pyarrow.fs.FileSystem.from_uri``: S3, GCS,
Azure, HDFS, with their usual credentials: environment variables, config files,
instance roles; ``AWS_ENDPOINT_URL`` for S3-compatible stores). A scheme pyarrow does
not know goes to fsspec when it is installed (``http(s)://``, ``memory://``, or a
plugin such as ``s3fs``/``gcsfs``), through pyarrow's ``FSSpecHandler``.

A URI may carry credentials (``s3://KEY:SECRET@bucket/...``, or a query such as
``?secret_key=...``): ``shown`` drops the user part and the query, and every message
made here says the URI that way, so no credential reaches output, logs or errors.

An upload is whole or absent: it is written to a temporary object beside the target,
then moved into place (on S3 a server-side copy, visible only once complete), so a
reader never sees half a file and a failed upload leaves the previous object as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from capbatch._exceptions import ConfigError, OutputError
from capbatch._io.locations import is_uri, local_path

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["is_uri", "local_path"]  # with the operations below

#: Bytes per read and write when copying an object: a few MB, whatever its size.
_CHUNK: Final = 1 << 22
ERRORS: Final = (OSError, pa.ArrowException, ValueError, ImportError)


def shown(uri: str) -> str:
    """``uri`` without credentials: no user part, no query."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def name_of(uri: str) -> str:
    """The last part of the URI's path (``s3://b/x/t.parquet`` -> ``t.parquet``)."""
    return urlsplit(uri).path.rstrip("/").rpartition("/")[2]


def with_suffix(uri: str, suffix: str) -> str:
    """``uri`` with ``suffix`` added to its path (its query, if any, kept)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=parts.path + suffix))


def join(folder: str, relative: str) -> str:
    """``relative`` (a path with ``/``) inside the URI ``folder`` (its query kept)."""
    base, mark, query = folder.partition("?")
    path = relative.replace("\\", "/").lstrip("/")
    head = base if base.endswith("://") else base.rstrip("/") + "/"
    return f"{head}{path}{mark}{query}"


def folder_of(uri: str) -> str:
    """The URI of the folder holding ``uri`` (its query kept)."""
    base, mark, query = uri.partition("?")
    scheme, sep, rest = base.partition("://")
    return f"{scheme}{sep}{rest.rpartition('/')[0]}{mark}{query}"


def message(uri: str, exc: BaseException) -> str:
    """One short line for ``exc``, with ``uri``'s credentials kept out of it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    parts = urlsplit(uri)
    secrets = [parts.netloc.rpartition("@")[0], parts.query]
    secrets += [p for s in secrets for p in re.split(r"[:&=]", s) if len(p) >= 4]
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text if len(text) <= 300 else text[:297] + "..."


#: Filesystems already made, by what names them: the URI less its path, and the
#: environment they read their settings from. Making one is not free: pyarrow's S3
#: asks the bucket's region (a HeadBucket request) each time, and a run reads every
#: image of a table from the same few buckets.
_STORES: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[pafs.FileSystem, str]] = {}
_MAX_STORES: Final = 64
_SETTINGS_ENV: Final = ("AWS_", "GOOGLE_", "GCS_", "AZURE_", "HADOOP_", "ARROW_")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem that holds ``uri`` and the object's path in it (the filesystem
    made once per bucket or host, see ``_STORES``)."""
    parts = urlsplit(uri)
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_SETTINGS_ENV)))
    key = (urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")), env)
    relative = parts.path.lstrip("/")
    known = _STORES.get(key)
    if known is not None:
        return known[0], known[1] + relative
    store, path = _open_filesystem(uri)
    # The store's path is a prefix (the bucket, a folder) then the URI's path; when it
    # is not (an escaped character), this URI's store is simply not kept.
    if relative and path.endswith(relative) and len(_STORES) < _MAX_STORES:
        _STORES[key] = (store, path[: len(path) - len(relative)])
    return store, path


def _open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs  # here: its import costs every CLI start ~20 ms

    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" not in str(exc):
            raise ConfigError(f"cannot open {shown(uri)}: {message(uri, exc)}") from None
    try:
        import fsspec  # type: ignore[import-untyped]
        from fsspec.core import url_to_fs  # type: ignore[import-untyped]
    except ImportError:
        scheme = urlsplit(uri).scheme
        raise ConfigError(
            f"cannot open {shown(uri)}: pyarrow has no {scheme}:// filesystem; "
            "install fsspec and its plugin for it"
        ) from None
    try:
        store, path = url_to_fs(uri)
    except (ValueError, ImportError, fsspec.exceptions.FSTimeoutError) as exc:
        raise ConfigError(f"cannot open {shown(uri)}: {message(uri, exc)}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(store)), str(path)  # type: ignore[abstract]


class ObjectInfo(NamedTuple):
    """What is at a URI: ``kind`` is "file", "folder" or "missing"."""

    kind: str
    size: int | None = None
    mtime: str | None = None


def look_up(uri: str) -> ObjectInfo:
    """What is at ``uri``."""
    store, path = filesystem(uri)
    try:
        return _info(store, path)
    except ERRORS as exc:
        raise ConfigError(f"cannot look up {shown(uri)}: {message(uri, exc)}") from None


def _info(store: pafs.FileSystem, path: str) -> ObjectInfo:
    import pyarrow.fs as pafs

    info = store.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return ObjectInfo("missing")
    if info.type == pafs.FileType.Directory:
        return ObjectInfo("folder")
    return ObjectInfo("file", info.size, str(info.mtime))


def download(uri: str, dest: Path) -> None:
    """The object at ``uri`` into the file ``dest`` (written whole, then renamed)."""
    store, path = filesystem(uri)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with store.open_input_stream(path) as source, open(partial, "wb") as target:
            shutil.copyfileobj(source, target, _CHUNK)
        os.replace(partial, dest)
    except ERRORS as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot download {shown(uri)}: {message(uri, exc)}") from None


def upload(source: Path, uri: str) -> None:
    """The file ``source`` to ``uri``, whole or not at all (module docstring): written
    to a temporary object beside it, then moved into place. A stream to an object store
    that is closed early still completes its upload, with the bytes written so far, so
    an interrupted copy must never be the object named ``uri``."""
    store, path = filesystem(uri)
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        with open(source, "rb") as data, store.open_output_stream(temporary) as target:
            shutil.copyfileobj(data, target, _CHUNK)
        store.move(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(*ERRORS):
            store.delete_file(temporary)
        if isinstance(exc, ERRORS):
            raise OutputError(f"cannot upload to {shown(uri)}: {message(uri, exc)}") from None
        raise


def check_writable(uri: str) -> None:
    """``ConfigError`` unless an object can be written beside ``uri`` (a probe object,
    written and deleted): checked before a run sends anything, as a local output's
    folder is, rather than found when the paid results cannot be uploaded."""
    store, path = filesystem(uri)
    probe = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.probe"
    try:
        with store.open_output_stream(probe) as target:
            target.write(b"capbatch")
        store.delete_file(probe)
    except ERRORS as exc:
        raise ConfigError(f"cannot write to {shown(uri)}: {message(uri, exc)}") from None


class TooLarge(OSError):
    """An object over the size limit, refused before it is read."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def read_object(uri: str, limit: int | None) -> bytes:
    """The bytes of the object at ``uri``: ``TooLarge`` when it is over ``limit`` bytes
    (at most ``limit + 1`` are read, should it grow), ``FileNotFoundError`` when there
    is none, ``IsADirectoryError`` for a folder, ``OSError`` (with a short,
    credential-free reason) when it cannot be read."""
    store, path = filesystem(uri)
    try:
        info = _info(store, path)
        if info.kind == "missing":
            raise FileNotFoundError(shown(uri))
        if info.kind == "folder":
            raise IsADirectoryError(shown(uri))
        if limit is not None and info.size is not None and info.size > limit:
            raise TooLarge(info.size)
        with store.open_input_stream(path) as stream:
            data: Any = stream.read() if limit is None else stream.read(limit + 1)
    except (FileNotFoundError, IsADirectoryError, TooLarge):
        raise
    except ERRORS as exc:
        raise OSError(message(uri, exc)) from None
    return bytes(data)
