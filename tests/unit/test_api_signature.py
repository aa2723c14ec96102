"""The Python API describes itself (issue 14, item 6): ``run``, ``arun`` and ``RunPanel``
take every ``RunOptions`` field as an explicit, typed keyword with the same default, each
documented; a misspelt keyword names the closest option. ``RunOptions`` is the one
source of truth: a field it gains that a signature lacks fails here."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import capbatch
from capbatch._api import OPTION_DOCS, unknown_options


def signature_gaps(func: Callable[..., Any], options: type) -> list[str]:
    """What ``func``'s keyword-only parameters miss or get wrong against ``options``'
    fields: a missing or extra name, another type, another default."""
    params = {
        name: p
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    gaps = []
    fields = {f.name: f for f in dataclasses.fields(options)}
    for name, field in fields.items():
        param = params.get(name)
        if param is None:
            gaps.append(f"{name}: missing")
            continue
        if field.default_factory is not dataclasses.MISSING:  # a mapping: None means {}
            want_type, want_default = f"{field.type} | None", None
        else:
            want_type, want_default = str(field.type), field.default
        if str(param.annotation) != want_type:
            gaps.append(f"{name}: type {param.annotation} != {want_type}")
        if param.default != want_default:
            gaps.append(f"{name}: default {param.default!r} != {want_default!r}")
    gaps += [f"{name}: not an option" for name in params if name not in fields]
    return gaps


@pytest.mark.parametrize("func", [capbatch.run, capbatch.arun], ids=["run", "arun"])
def test_every_run_option_is_an_explicit_typed_keyword_with_its_default(
    func: Callable[..., Any],
) -> None:
    assert signature_gaps(func, capbatch.RunOptions) == []
    params = inspect.signature(func).parameters
    assert next(iter(params)) == "source"
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())


def test_a_field_runoptions_gains_fails_the_check() -> None:
    @dataclasses.dataclass
    class Grown(capbatch.RunOptions):
        shiny_new_option: int = 3

    assert signature_gaps(capbatch.run, Grown) == ["shiny_new_option: missing"]


def test_every_option_is_documented_in_help() -> None:
    names = [f.name for f in dataclasses.fields(capbatch.RunOptions)]
    assert sorted(OPTION_DOCS) == sorted(names)
    assert all(text.strip() for text in OPTION_DOCS.values())
    for func in (capbatch.run, capbatch.arun):
        doc = inspect.getdoc(func) or ""
        for name in names:
            assert f"\n{name}: " in doc, name
            assert OPTION_DOCS[name][:40] in doc.replace("\n    ", " "), name


def test_arun_is_still_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(capbatch.arun)


@pytest.mark.parametrize(
    ("typo", "meant"), [("rat", "rate"), ("max_inflight", "max_in_flight"), ("ouptut", "output")]
)
def test_a_misspelt_keyword_names_the_closest_option(typo: str, meant: str) -> None:
    with pytest.raises(capbatch.ConfigError, match=rf"'{typo}' \(did you mean '{meant}'\?\)"):
        capbatch.run("unused.parquet", **{typo: 1})


async def test_arun_suggests_too_and_sends_nothing() -> None:
    with pytest.raises(capbatch.ConfigError, match=r"did you mean 'label_column'"):
        await capbatch.arun("unused.parquet", label_colum="label")


def test_a_name_far_from_every_option_gets_no_guess() -> None:
    line = unknown_options(["zzzzzz"], ["rate", "output"])
    assert line.startswith("unknown run option(s): 'zzzzzz';")
    assert "did you mean" not in line
    assert unknown_options(["rate"], ["rate"]) == ""


def test_the_run_panel_shows_every_run_option_it_takes_and_suggests_on_a_typo() -> None:
    pytest.importorskip("ipywidgets")
    from capbatch.widgets import RunPanel

    params = inspect.signature(RunPanel).parameters
    assert "self" not in params and "run_options" not in params
    owned = {"control", "on_result", "progress", "quiet", "dry_run", "notice"}
    for field in dataclasses.fields(capbatch.RunOptions):
        if field.name not in owned:
            assert field.name in params, field.name
    assert params["rate"].default is None and params["label_column"].default == "label"
    with pytest.raises(capbatch.ConfigError, match=r"did you mean 'max_spend'"):
        RunPanel("unused.parquet", max_spnd=1.0)


@pytest.mark.parametrize("func", [capbatch.report, capbatch.compare], ids=["report", "compare"])
def test_report_and_compare_take_explicit_typed_parameters(func: Callable[..., Any]) -> None:
    params = inspect.signature(func).parameters.values()
    assert not any(p.kind is p.VAR_KEYWORD for p in params)
    for param in params:
        assert param.annotation is not inspect.Parameter.empty, param.name
