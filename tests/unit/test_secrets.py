"""``Secret``, ``load_key`` and ``redact``: the key never prints, pickles or logs."""

from __future__ import annotations

import copy
import logging
import pickle
import traceback
from pathlib import Path

import pytest

from capbatch._exceptions import ConfigError
from capbatch._secrets import Secret, as_secret, load_key, redact

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
