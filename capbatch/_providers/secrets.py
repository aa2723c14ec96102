"""The account key, wrapped so it cannot leak by accident.

A ``Secret`` prints as ``Secret('****')`` in ``repr``, ``str``, f-strings, logs and
tracebacks, refuses to be pickled, and gives its value only through ``reveal()``,
which the client calls when it builds a request body and nowhere else.

``Secret.mask(text)`` (and ``redact``) is what stands between a provider's reply and
the output, the journal and the terminal. A hostile or buggy server does not echo the
key verbatim only: it lower- or upper-cases it, JSON-escapes it (``\\u002d`` or every
character as ``\\uXXXX``), URL-escapes it (``%2D``), or shows a piece of it. So the
mask covers, case-insensitively, every run of ``MIN_FRAGMENT`` or more consecutive
characters of the key, in plain text and after decoding ``\\uXXXX``, ``\\xXX``,
``%XX`` and ``&#NN;`` escapes (the decoding happens in a copy, to find the spans; the
spans of the original text are replaced). Callers mask *before* they cut text short:
an excerpt cut mid-key would otherwise keep a piece shorter than the fragment length.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NoReturn

from capbatch._exceptions import ConfigError

_MASK = "****"

#: The shortest piece of the key that is masked where it appears. Shorter pieces are
#: too likely to occur by chance (a 6-character answer, a word); a key shorter than
#: this is masked whole only.
MIN_FRAGMENT = 6

#: Longest key a key file may hold: real keys are 32-64 characters; more means the
#: file is something else (a JSON document, a certificate, the wrong file).
MAX_KEY_LENGTH = 256
#: Largest key file read at all (comments included).
MAX_KEY_FILE_BYTES = 64 * 1024

# ASCII-only case folding keeps every index in place (str.lower() can lengthen some
# non-ASCII characters, which would shift the spans); keys are ASCII.
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Escapes that spell a character of the key in another form. Repeated backslashes and
# ``%25`` prefixes cover text escaped twice (a JSON string inside a JSON string).
_ESCAPE = re.compile(
    r"\\+u([0-9a-fA-F]{4})"
    r"|\\+x([0-9a-fA-F]{2})"
    r"|%(?:25)*([0-9a-fA-F]{2})"
    r"|&#[xX]([0-9a-fA-F]{1,6});"
    r"|&#([0-9]{1,7});"
)


def _unescaped(match: re.Match[str]) -> str:
    hex_digits = match.group(1) or match.group(2) or match.group(3) or match.group(4)
    code = int(hex_digits, 16) if hex_digits else int(match.group(5))
    return chr(code) if code <= 0x10FFFF else match.group(0)


def _decoded_with_positions(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` with its escapes decoded, and for each decoded character the start and
    end index in ``text`` of what it came from."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for match in _ESCAPE.finditer(text):
        begin, end = match.span()
        chars.append(text[pos:begin])
        starts.extend(range(pos, begin))
        ends.extend(range(pos + 1, begin + 1))
        decoded = _unescaped(match)
        chars.append(decoded)
        if len(decoded) == 1:
            starts.append(begin)
            ends.append(end)
        else:  # not a character after all (a code point out of range): kept literally
            starts.extend(range(begin, end))
            ends.extend(range(begin + 1, end + 1))
        pos = end
    chars.append(text[pos:])
    starts.extend(range(pos, len(text)))
    ends.extend(range(pos + 1, len(text) + 1))
    return "".join(chars), starts, ends


def _fold(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_FOLD)


class _Windows:
    """Every run of ``size`` consecutive characters of a folded key, and a quick test
    of whether any occurs in a text."""

    __slots__ = ("pattern", "pieces", "size")

    #: Up to this length a text is searched with one regex (fastest on short text);
    #: longer ones with one ``in`` scan per piece (linear, where the regex is not).
    SHORT = 512

    def __init__(self, value: str, min_fragment: int) -> None:
        folded = _fold(value)
        self.size = min(max(1, min_fragment), len(folded))
        self.pieces = frozenset(
            folded[i : i + self.size] for i in range(len(folded) - self.size + 1)
        )
        alternatives = "|".join(re.escape(piece) for piece in sorted(self.pieces))
        # ASCII case-insensitivity, like _fold.
        self.pattern = re.compile(alternatives or "(?!)", re.IGNORECASE | re.ASCII)

    def occur_in(self, text: str) -> bool:
        if len(text) <= self.SHORT:
            return self.pattern.search(text) is not None
        folded = _fold(text)
        return any(piece in folded for piece in self.pieces)


def _window_spans(folded: str, windows: frozenset[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for window in windows:
        index = folded.find(window)
        while index != -1:
            spans.append((index, index + len(window)))
            index = folded.find(window, index + 1)
    return spans


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class Secret:
    __slots__ = ("_value", "_windows")

    def __init__(self, value: str) -> None:
        self._value = value
        # Fragment length -> _Windows, built once per length: masking runs on every
        # string of every reply.
        self._windows: dict[int, _Windows] = {}

    def reveal(self) -> str:
        return self._value

    def spans(self, text: str, *, min_fragment: int = MIN_FRAGMENT) -> list[tuple[int, int]]:
        """Where in ``text`` the key or a piece of it (``min_fragment`` or more
        consecutive characters, any letter case, plain or escaped) appears: sorted,
        merged ``(start, end)`` index pairs."""
        windows = self._windows_for(min_fragment)
        if not windows.pieces or len(text) < windows.size:
            return []  # the cheap exit for short answers: no window fits
        found = windows.occur_in(text)
        escaped = "\\" in text or "%" in text or "&#" in text
        if not (found or escaped):
            return []  # the common case: one regex search, no copies
        spans = _window_spans(_fold(text), windows.pieces) if found else []
        if escaped:
            # Positions are tracked only when the decoded copy does hold a piece.
            decoded = _ESCAPE.sub(_unescaped, text)
            if decoded != text and windows.occur_in(decoded):
                decoded, starts, ends = _decoded_with_positions(text)
                found_decoded = _window_spans(_fold(decoded), windows.pieces)
                spans.extend((starts[a], ends[b - 1]) for a, b in found_decoded)
        return _merged(spans)

    def mask(self, text: str, *, min_fragment: int = MIN_FRAGMENT) -> str:
        """``text`` with every appearance of the key or a piece of it replaced by
        ``****`` (see the module docstring for what counts as an appearance)."""
        spans = self.spans(text, min_fragment=min_fragment)
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for start, end in spans:
            parts.append(text[pos:start])
            parts.append(_MASK)
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def _windows_for(self, min_fragment: int) -> _Windows:
        cached = self._windows.get(min_fragment)
        if cached is None:
            cached = self._windows[min_fragment] = _Windows(self._value, min_fragment)
        return cached

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


# --- loading the key ------------------------------------------------------------------

# Byte-order marks, longest first (the UTF-32 LE mark begins with the UTF-16 LE one).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xef\xbb\xbf", "utf-8", "UTF-8"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
)


def _decode_key_file(path: Path, data: bytes) -> str:
    """The text of a key file in the encodings editors and shells write: UTF-8 (with or
    without a BOM), UTF-16 and UTF-32 with a BOM (PowerShell's ``>`` writes UTF-16 LE),
    and UTF-16 without one when its zero bytes give it away."""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                raise ConfigError(
                    f"the API key file {path} starts with a {name} byte-order mark but is "
                    f"not valid {name} text"
                ) from None
    if b"\x00" in data:
        # ASCII written as UTF-16 without a BOM: every other byte is zero.
        if len(data) % 2 == 0 and not any(data[1::2]) and all(data[0::2]):
            return data.decode("utf-16-le")
        if len(data) % 2 == 0 and not any(data[0::2]) and all(data[1::2]):
            return data.decode("utf-16-be")
        raise ConfigError(
            f"the API key file {path} holds NUL bytes: it is a binary file, not a text "
            "file with the key on one line"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"the API key file {path} is not text (not UTF-8, nor UTF-16/32 with a "
            "byte-order mark); save it as plain UTF-8 with the key on one line"
        ) from None


def _check_key(key: str, where: str) -> str:
    """``key`` if it can be a key; a ConfigError naming the problem (never the key)."""
    if len(key) > MAX_KEY_LENGTH:
        raise ConfigError(
            f"{where} holds a line of {len(key)} characters, longer than any API key "
            f"(at most {MAX_KEY_LENGTH}): is it the right file?"
        )
    if any(ch.isspace() for ch in key):
        raise ConfigError(
            f"{where}: the key contains spaces or tabs; a key is one word on its own line"
        )
    if not (key.isascii() and key.isprintable()):
        raise ConfigError(
            f"{where}: the key contains non-printable or non-ASCII characters; "
            "re-copy it from the provider's dashboard"
        )
    return key


def load_key(
    *, env_var: str | None, key_file: str | os.PathLike[str] | None = None
) -> Secret | None:
    """The key from ``key_file`` or else from ``env_var``.

    In a key file, blank lines and lines starting with ``#`` are skipped; the first
    other line, with surrounding whitespace stripped, is the key, and later lines are
    ignored. Errors say what is wrong with the file and never show its text."""
    if key_file is not None:
        path = Path(key_file)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise ConfigError(
                f"the API key file {path} is larger than {MAX_KEY_FILE_BYTES // 1024} KB: "
                "it is not a key file"
            )
        text = _decode_key_file(path, data)
        lines = [line.strip() for line in text.splitlines()]
        if not any(lines):
            raise ConfigError(f"the API key file {path} is empty")
        keys = [line for line in lines if line and not line.startswith("#")]
        if not keys:
            raise ConfigError(
                f"the API key file {path} holds only comment lines (starting with #), no key"
            )
        return Secret(_check_key(keys[0], f"the API key file {path}"))
    if env_var:
        value = os.environ.get(env_var, "").strip()
        if value:
            return Secret(_check_key(value, f"the environment variable {env_var}"))
    return None


def redact(text: str, *secrets: Secret | None) -> str:
    """``text`` with every secret masked, as ``Secret.mask`` does (any letter case,
    escaped forms, pieces of ``MIN_FRAGMENT`` characters or more)."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = secret.mask(text)
    return text
