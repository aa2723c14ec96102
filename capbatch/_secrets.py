"""The account key, wrapped so it cannot leak by accident.

A ``Secret`` prints as ``Secret('****')`` in ``repr``, ``str``, f-strings, logs and
tracebacks, refuses to be pickled, and gives its value only through ``reveal()``,
which the client calls when it builds a request body and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from ._exceptions import ConfigError

_MASK = "****"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def as_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def load_key(
    *, env_var: str | None, key_file: str | os.PathLike[str] | None = None
) -> Secret | None:
    """The key from ``key_file`` (first line, stripped) or else from ``env_var``."""
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise ConfigError(f"the API key file {path} is empty")
        return Secret(key)
    if env_var:
        value = os.environ.get(env_var, "").strip()
        if value:
            return Secret(value)
    return None


def redact(text: str, *secrets: Secret | None) -> str:
    """``text`` with every secret's value replaced by a mask (last line of defence)."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), _MASK)
    return text
