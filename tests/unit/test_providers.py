"""Provider profiles carry the facts of docs/providers.md, one profile per service."""

from __future__ import annotations

import dataclasses

import pytest

from capbatch._exceptions import ConfigError
from capbatch._providers.profiles import (
    ANTICAPTCHA,
    CAPMONSTER,
    CAPSOLVER,
    LOCAL,
    PROVIDERS,
    TWOCAPTCHA,
    ProviderProfile,
    get_profile,
)

REMOTE = [CAPSOLVER, ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA]


def test_registry() -> None:
    assert set(PROVIDERS) == {"capsolver", "anticaptcha", "capmonster", "twocaptcha", "local"}
    for name, profile in PROVIDERS.items():
        assert profile.name == name
        assert get_profile(name) is profile
    with pytest.raises(TypeError):
        PROVIDERS["x"] = CAPSOLVER  # type: ignore[index]


def test_unknown_profile_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        get_profile("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in PROVIDERS:
        assert name in message
    assert info.value.__suppress_context__


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CAPSOLVER.base_url = "http://evil"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("profile", "base_url", "fallbacks"),
    [
        (CAPSOLVER, "https://api.capsolver.com", ("https://api-stable.capsolver.com",)),
        (ANTICAPTCHA, "https://api.anti-captcha.com", ()),
        (CAPMONSTER, "https://api.capmonster.cloud", ()),
        (TWOCAPTCHA, "https://api.2captcha.com", ()),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_base_urls(profile: ProviderProfile, base_url: str, fallbacks: tuple[str, ...]) -> None:
    assert profile.base_url == base_url
    assert profile.fallback_urls == fallbacks
    assert not profile.base_url.endswith("/")


def test_task_id_types() -> None:
    assert CAPSOLVER.task_id_type == "str"
    assert CAPSOLVER.task_id_for_request("123") == "123"
    for profile in (ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA):
        assert profile.task_id_type == "int"
        assert profile.task_id_for_request("123") == 123
        # A non-numeric id is sent as given rather than crashing.
        assert profile.task_id_for_request("abc") == "abc"


def test_image_limits() -> None:
    # docs/providers.md: AC8, CM9, CM10, TC7-TC9 (CS18 unconfirmed).
    assert (ANTICAPTCHA.min_image_bytes, ANTICAPTCHA.max_image_bytes) == (100, 500_000)
    assert (CAPMONSTER.min_image_bytes, CAPMONSTER.max_image_bytes) == (100, 50_000)
    assert (TWOCAPTCHA.min_image_bytes, TWOCAPTCHA.max_image_bytes) == (100, 100_000)
    assert TWOCAPTCHA.max_image_side == 1000
    assert CAPSOLVER.max_image_bytes == 500_000  # unconfirmed (docs/providers.md)
    for profile in (CAPSOLVER, ANTICAPTCHA, CAPMONSTER, LOCAL):
        assert profile.max_image_side is None
    for profile in PROVIDERS.values():
        assert 0 < profile.min_image_bytes < profile.max_image_bytes


def test_developer_id_fields() -> None:
    assert CAPSOLVER.developer_id_field == "appId"
    for profile in (ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA):
        assert profile.developer_id_field == "softId"
    assert LOCAL.developer_id_field is None


@pytest.mark.parametrize("app_id", ["my-app", "12.5", "-1"])
@pytest.mark.parametrize("provider", ["anticaptcha", "capmonster", "twocaptcha"])
def test_a_soft_id_that_is_not_a_whole_number_stops_the_run_before_it_starts(
    provider: str, app_id: str
) -> None:
    from capbatch._run.options import RunOptions, resolve

    with pytest.raises(ConfigError, match="--app-id"):
        resolve(RunOptions(provider=provider, api_key="k-123456", app_id=app_id))
    assert resolve(RunOptions(provider=provider, api_key="k-123456", app_id="42"))
    assert resolve(RunOptions(provider="capsolver", api_key="k-123456", app_id=app_id))


def test_cost_and_charging() -> None:
    assert ANTICAPTCHA.cost_in_reply and TWOCAPTCHA.cost_in_reply
    assert not CAPSOLVER.cost_in_reply and not CAPMONSTER.cost_in_reply
    assert ANTICAPTCHA.unsolvable_charged
    assert not CAPSOLVER.unsolvable_charged
    assert not CAPMONSTER.unsolvable_charged
    assert not TWOCAPTCHA.unsolvable_charged  # refunded


def test_report_endpoints() -> None:
    assert (CAPSOLVER.report_endpoint, CAPSOLVER.report_style) == ("/feedbackTask", "feedback")
    assert ANTICAPTCHA.report_endpoint == "/reportIncorrectImageCaptcha"
    assert CAPMONSTER.report_endpoint == "/reportIncorrectImageCaptcha"
    assert TWOCAPTCHA.report_endpoint == "/reportIncorrect"
    for profile in (ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA):
        assert profile.report_style == "incorrect_image"
    assert LOCAL.report_endpoint is None and LOCAL.report_style == "none"


def test_statuses_and_polling() -> None:
    for profile in REMOTE:
        assert {"idle", "processing"} <= profile.pending_statuses
        assert "ready" not in profile.pending_statuses
        assert profile.poll.max_polls == 120
        assert profile.poll.task_ttl == 300.0
        assert 1.0 <= profile.poll.interval <= 10.0
        assert profile.poll.max_gap <= profile.poll.retention / 4 + profile.poll.interval
    assert CAPMONSTER.poll.first_delay == pytest.approx(0.3)
    # At most one poll per 2 s per task: a floor every path to the next poll keeps.
    assert CAPMONSTER.poll.interval >= CAPMONSTER.poll.min_interval == 2.0
    # Anti-Captcha forgets a finished task after 60 s: resume and poll gaps follow it.
    assert ANTICAPTCHA.poll.result_ttl == 60.0 and ANTICAPTCHA.poll.retention == 60.0
    assert ANTICAPTCHA.poll.max_gap == 15.0
    assert CAPSOLVER.poll.retention == 300.0 and CAPSOLVER.poll.result_ttl is None
    assert TWOCAPTCHA.poll.first_delay == 5.0
    assert 5.0 <= TWOCAPTCHA.poll.interval <= 10.0


def test_key_env_vars() -> None:
    assert CAPSOLVER.key_env_var == "CAPSOLVER_API_KEY"
    names = [p.key_env_var for p in REMOTE]
    assert all(names) and len(set(names)) == len(names)
    assert LOCAL.key_env_var is None


def test_local_profile() -> None:
    assert LOCAL.is_local and not any(p.is_local for p in REMOTE)
    assert LOCAL.base_url == ""
    assert not LOCAL.has_balance
    assert LOCAL.price_for("ImageToTextTask") == 0.0


def test_price_for() -> None:
    assert CAPSOLVER.price_for("ImageToTextTask") == pytest.approx(0.0004)
    assert CAPSOLVER.price_for("ReCaptchaV2Task") == pytest.approx(0.0008)  # the "*" price
    assert ANTICAPTCHA.price_for("ImageToTextTask") == pytest.approx(0.0007)
    bare = dataclasses.replace(CAPSOLVER, prices={})
    assert bare.price_for("ImageToTextTask") == 0.0
    for profile in PROVIDERS.values():
        assert profile.price_for("ImageToTextTask") >= 0.0
