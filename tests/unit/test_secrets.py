"""``Secret``, ``load_key`` and ``redact``: the key never prints, pickles or logs."""

from __future__ import annotations

import copy
import logging
import pickle
import traceback
from pathlib import Path

import pytest

from capbatch._exceptions import ConfigError
from capbatch._providers.secrets import Secret, as_secret, load_key, redact
from tests.fakes import key_forms

KEY = "sk-SECRET-123"
ENV = "CAPBATCH_TEST_KEY"


def test_masked_everywhere() -> None:
    secret = Secret(KEY)
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "%s %r" % (secret, secret),  # noqa: UP031 - old-style formatting is what logs use
        "{}".format(secret),  # noqa: UP032
        repr([secret]),
        repr({"key": secret}),
    ):
        assert KEY not in text
        assert "****" in text


def test_reveal_and_truthiness() -> None:
    assert Secret(KEY).reveal() == KEY
    assert Secret(KEY)
    assert not Secret("")


def test_equality_and_hash() -> None:
    assert Secret(KEY) == Secret(KEY)
    assert Secret(KEY) != Secret("other")
    assert Secret(KEY) != KEY
    assert len({Secret(KEY), Secret(KEY)}) == 1


def test_not_picklable() -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(Secret(KEY), protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(Secret(KEY))


def test_no_instance_dict() -> None:
    assert not hasattr(Secret(KEY), "__dict__")


def test_masked_in_logs_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(KEY)
    with caplog.at_level(logging.INFO):
        logging.getLogger("capbatch.test").info("using key %s", secret)
    assert KEY not in caplog.text
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError as exc:
        assert KEY not in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_as_secret() -> None:
    assert as_secret(None) is None
    secret = Secret(KEY)
    assert as_secret(secret) is secret
    wrapped = as_secret(KEY)
    assert isinstance(wrapped, Secret) and wrapped.reveal() == KEY


def test_load_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, f"  {KEY}\n")
    key = load_key(env_var=ENV)
    assert isinstance(key, Secret)
    assert key.reveal() == KEY


def test_load_key_missing_or_blank_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert load_key(env_var=ENV) is None
    monkeypatch.setenv(ENV, "   ")
    assert load_key(env_var=ENV) is None
    assert load_key(env_var=None) is None


def test_load_key_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "from-env")
    path = tmp_path / "key.txt"
    path.write_text(f"\n  {KEY}  \nsecond line is ignored\n", encoding="utf-8")
    key = load_key(env_var=ENV, key_file=path)
    assert key is not None and key.reveal() == KEY  # the file wins over the variable
    assert load_key(env_var=None, key_file=str(path)) == Secret(KEY)


@pytest.mark.parametrize("content", ["", "   \n\n  \t\n"], ids=["empty", "blank"])
def test_empty_key_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        load_key(env_var=None, key_file=path)


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_key(env_var=None, key_file=tmp_path / "absent.txt")


def test_key_file_errors_do_not_show_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dir-not-file"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_key(env_var=None, key_file=path)
    assert info.value.__suppress_context__


def test_redact() -> None:
    secret = Secret(KEY)
    text = f'{{"clientKey": "{KEY}", "again": "{KEY}"}}'
    assert redact(text, secret) == '{"clientKey": "****", "again": "****"}'
    assert redact(text, None, Secret("")) == text
    assert redact("nothing here", secret) == "nothing here"
    assert redact(f"{KEY} and other", secret, Secret("other")) == "**** and ****"


# --- masking every form of the key --------------------------------------------------

LONG_KEY = "CAP-0123456789ABCDEF0123456789abcdef"


@pytest.mark.parametrize("key", [KEY, LONG_KEY], ids=["short-key", "long-key"])
@pytest.mark.parametrize("form", list(key_forms(KEY)))
def test_mask_catches_every_form(key: str, form: str) -> None:
    secret = Secret(key)
    echoed = key_forms(key)[form]
    text = f"error: key {echoed} is not valid (request {echoed}) end"
    masked = secret.mask(text)
    assert masked.startswith("error: key ****") and masked.endswith(") end")
    assert masked.count("****") == 2
    assert echoed not in masked
    assert redact(text, secret) == masked


def test_mask_leaves_text_without_the_key_alone() -> None:
    secret = Secret(LONG_KEY)
    for text in ("", "abc", "44795sds", "50% off & more \\u0041", "CAP-0", "x" * 1000):
        assert secret.mask(text) == text
    # Five consecutive characters are below the fragment length: kept.
    assert Secret(LONG_KEY).mask("id 01234 ok") == "id 01234 ok"
    assert Secret(LONG_KEY).mask("id 012345 ok") == "id **** ok"


def test_mask_fragment_length_is_configurable() -> None:
    secret = Secret(LONG_KEY)
    assert secret.mask("t-0123456789", min_fragment=12) == "t-0123456789"
    assert secret.mask("t_0123456789AB", min_fragment=12) == "t_****"
    assert secret.spans("t_0123456789AB", min_fragment=12) == [(2, 14)]


def test_mask_merges_overlapping_and_adjacent_pieces() -> None:
    secret = Secret(LONG_KEY)
    assert secret.mask(LONG_KEY + LONG_KEY.lower() + "!") == "****!"
    assert secret.spans("ab" + LONG_KEY) == [(2, 2 + len(LONG_KEY))]


def test_mask_of_a_key_shorter_than_a_fragment_masks_the_whole_key_only() -> None:
    secret = Secret("abc")
    assert secret.mask("xx ABC yy ab c") == "xx **** yy ab c"
    assert secret.mask("%61%62%63") == "****"


def test_mask_escapes_out_of_range_are_kept_literally() -> None:
    secret = Secret(LONG_KEY)
    text = "&#99999999; and &#x110000; and \\uZZZZ"
    assert secret.mask(text) == text


# --- key files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        ("\ufeff" + KEY + "\r\n").encode("utf-16-le"),
        ("\ufeff" + KEY + "\r\n").encode("utf-16-be"),
        (KEY + "\r\n").encode("utf-8-sig"),
        ("\ufeff" + KEY + "\n").encode("utf-32-le"),
        ("\ufeff" + KEY + "\n").encode("utf-32-be"),
        (KEY + "\r\n").encode("utf-16-le"),  # no BOM: its zero bytes give it away
        (KEY + "\r\n").encode("utf-16-be"),
        f"# my capsolver key\r\n\r\n   \t\n  {KEY}   \r\n# more\r\nignored\r\n".encode(),
        f"{KEY}  ".encode(),
    ],
    ids=[
        "utf16le-bom-powershell",
        "utf16be-bom",
        "utf8-bom",
        "utf32le-bom",
        "utf32be-bom",
        "utf16le-no-bom",
        "utf16be-no-bom",
        "comments-crlf-blank",
        "trailing-spaces",
    ],
)
def test_load_key_file_encodings_and_layouts(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "key.txt"
    path.write_bytes(data)
    key = load_key(env_var=None, key_file=path)
    assert key is not None and key.reveal() == KEY


BAD_KEY_FILES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty"),
    "blank-utf16": ("\ufeff \r\n\r\n".encode("utf-16-le"), "empty"),
    "only-comments": (b"# key goes here\n#sk-SECRET-123\n", "only comment"),
    "space-inside": (b"sk-SECRET 123\n", "spaces"),
    "tab-inside": (b"sk-SECRET\t123\n", "spaces"),
    "control-inside": (b"sk-SECRET\x07123\n", "non-printable"),
    "non-ascii-inside": ("sk-SECRÉT-123\n".encode(), "non-ASCII"),
    "nul-bytes": (b"sk-SECRET\x00-123\x00\x00\x01\n", "NUL"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL"),
    "not-utf8": (b"\x80\x81sk-SECRET-123\xfe\n", "not text"),
    "bad-utf16": (b"\xff\xfe\x00\xd8", "UTF-16"),
    "too-long": (b"sk-SECRET-123" * 30 + b"\n", "longer than any API key"),
    "too-large": (b"#" * 70_000 + b"\nsk-SECRET-123\n", "larger than"),
}


@pytest.mark.parametrize(("data", "words"), list(BAD_KEY_FILES.values()), ids=list(BAD_KEY_FILES))
def test_bad_key_files_say_what_is_wrong_without_the_key(
    tmp_path: Path, data: bytes, words: str
) -> None:
    path = tmp_path / "key.txt"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=words) as info:
        load_key(env_var=None, key_file=path)
    message = str(info.value)
    assert str(path) in message
    for piece in ("SECRET", "secret", "123\n", "SECRÉT"):
        assert piece not in message
    # No chained exception carries the file's bytes into a traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@pytest.mark.parametrize(
    ("value", "words"),
    [("sk-SECRET 123", "spaces"), ("sk-SECRET\x1b123", "non-printable"), ("k" * 300, "longer")],
)
def test_bad_key_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, words: str
) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ConfigError, match=words) as info:
        load_key(env_var=ENV)
    assert ENV in str(info.value)
    assert "SECRET" not in str(info.value) and "kkkkkk" not in str(info.value)
