r"""Provider text made safe to store, print and quote: the one cleaning rule.

Provider text is untrusted. The reply parser (``protocol.py``) and the error table
(``errors.py``) pass every string a reply carries through ``clean_text`` once, where it
is parsed, and the rule is, in this order:

1. ``sanitize_text``: a lone surrogate (valid JSON, but neither UTF-8 nor SQLite can
   store it) becomes U+FFFD; C0 and C1 control characters, DEL, the line and paragraph
   separators and the bidirectional overrides are written as visible escapes
   (``\x1b``, ``\u202e``) so no terminal acts on them and a reader sees what was sent.
   Nothing keeps a tab or newline: answers of image captchas never hold one, and error
   text is one line (tabs and newlines there become spaces). Printable ASCII passes
   through untouched at the cost of one ``isascii() and isprintable()`` check.
2. the caller's mask (``Secret.mask``: the account key in any case, escaped, or a piece
   of it), before anything is cut, so a cut cannot leave a piece of the key behind.
3. a length cap where the text is a message (``MAX_EXCERPT_CHARS`` here,
   ``MAX_DESCRIPTION_CHARS`` and friends where the text is parsed).
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: A function masking the account key in provider text (``Secret.mask``).
Mask = Callable[[str], str]

#: Longest excerpt of a reply that is not JSON, in a message.
MAX_EXCERPT_CHARS = 80

# Escapes for the characters no provider string may carry as they are: C0 and C1
# controls and DEL (terminal escape sequences), the line and paragraph separators, and
# the bidirectional overrides and isolates (text that displays other than it reads).
_UNSAFE_CODES = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_ESCAPES: dict[int, str] = {
    code: (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}") for code in _UNSAFE_CODES
}
# Lone surrogates (json.loads pairs the valid ones) cannot be encoded or stored.
_ESCAPES.update(dict.fromkeys(range(0xD800, 0xE000), "\ufffd"))
_ONE_LINE = {**_ESCAPES, 0x09: " ", 0x0A: " ", 0x0D: " "}


def sanitize_text(text: str, *, one_line: bool = False) -> str:
    """``text`` safe to store and print: see the module docstring for the rule.
    ``one_line`` turns tabs and line breaks into spaces (for messages) instead of
    escaping them."""
    if text.isascii() and text.isprintable():
        return text  # the common case: one cheap check, no copy
    return text.translate(_ONE_LINE if one_line else _ESCAPES)


def clean_text(
    text: str, mask: Mask | None = None, *, limit: int | None = None, one_line: bool = False
) -> str:
    """Provider text, sanitised, then masked, then cut to ``limit`` characters: the
    order matters (stripping could join the pieces of a key; cutting first could leave
    a piece too short to recognise)."""
    text = sanitize_text(text, one_line=one_line)
    if mask is not None:
        text = mask(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


# Our request's key field, should a page quote the request back: blanked whatever its
# value, so an excerpt holds no request text even in a form the mask does not know.
_CLIENT_KEY_FIELD = re.compile(r"""(?i)(client_?key["']?\s*[:=]\s*["']?)[^"'\s&,;}<>]*""")


def reply_excerpt(content: bytes, mask: Mask | None = None) -> str:
    """A short, one-line, masked excerpt of a reply body for an error message. The
    whole body is masked before it is cut (a cut mid-key would hide the key's piece
    from the mask); bodies are at most ``transport.MAX_REPLY_BYTES`` long."""
    text = clean_text(content.decode("utf-8", "replace"), mask, one_line=True)
    text = _CLIENT_KEY_FIELD.sub(r"\1****", text)
    return clean_text(text, limit=MAX_EXCERPT_CHARS)
