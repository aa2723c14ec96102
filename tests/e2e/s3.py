"""An S3-compatible object store on loopback for the tests: moto's server on 127.0.0.1,
reached by pyarrow like any S3 endpoint (``AWS_ENDPOINT_URL``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

BUCKET = "capbatch-tests"
#: moto accepts any credentials; these are checked for leaks like a real secret.
ACCESS_KEY = "AKIATESTACCESS01"
SECRET_KEY = "s3-SECRET-d41d8cd98f"


@dataclass
class S3Store:
    """A bucket on a loopback S3 server: ``env`` points a process at it."""

    endpoint: str
    fs: pafs.S3FileSystem

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": f"http://{self.endpoint}",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def uri(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def put(self, local: Path, key: str) -> str:
        self.fs.create_dir(f"{BUCKET}/{key.rpartition('/')[0]}", recursive=True)
        with open(local, "rb") as data, self.fs.open_output_stream(f"{BUCKET}/{key}") as out:
            out.write(data.read())
        return self.uri(key)

    def get(self, key: str) -> bytes | None:
        path = f"{BUCKET}/{key}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as stream:
            return bytes(stream.read())

    def keys(self) -> list[str]:
        selector = pafs.FileSelector(BUCKET, recursive=True)
        return sorted(
            info.path.removeprefix(f"{BUCKET}/")
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )


@contextlib.contextmanager
def s3_store() -> Iterator[S3Store]:
    """A fresh loopback S3 server with one empty bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        fs = pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=f"{host}:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        yield S3Store(f"{host}:{port}", fs)
    finally:
        server.stop()
