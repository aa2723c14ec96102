"""ipywidgets stays optional: the core never imports it, the panel says how to get it,
and the plain progress bar falls back to text in a notebook without it.

Each check runs in a fresh interpreter, so what is already imported here cannot hide
an import, and ``sys.modules["ipywidgets"] = None`` can stand in for "not installed".
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from capbatch import ConfigError
from capbatch._io.record import RowResult
from capbatch._run.progress import RunCounters
from capbatch.widgets._results import (
    Card,
    PanelResults,
    format_counters,
    format_duration,
    format_task_params,
    matches,
    parse_spend_cap,
    parse_task_params,
)

WITHOUT_IPYWIDGETS = "import sys\nsys.modules['ipywidgets'] = None\n"
# What tqdm.autonotebook looks for to decide it runs in a Jupyter kernel.
FAKE_NOTEBOOK = (
    "import types, IPython\nsys.modules['ipykernel.zmqshell'] = types.ModuleType('zmqshell')\n"
)


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_capbatch_does_not_import_ipywidgets() -> None:
    done = python(
        """
        import sys
        import capbatch, capbatch._api, capbatch._run.progress, capbatch._reports.report
        capbatch.run  # noqa: B018
        assert "ipywidgets" not in sys.modules, "capbatch imported ipywidgets"
        assert "capbatch.widgets" not in sys.modules
        """
    )
    assert done.returncode == 0, done.stderr


def test_capbatch_works_without_ipywidgets_and_the_panel_says_how_to_get_it() -> None:
    done = python(
        WITHOUT_IPYWIDGETS
        + """
import capbatch
try:
    import capbatch.widgets
except ImportError as exc:
    print(exc)
else:
    raise SystemExit("capbatch.widgets imported without ipywidgets")
"""
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'capbatch[notebook]'" in done.stdout


def test_progress_in_a_notebook_without_ipywidgets_falls_back_to_a_text_bar() -> None:
    done = python(
        WITHOUT_IPYWIDGETS
        + FAKE_NOTEBOOK
        + """
import io, warnings
from capbatch._io.record import RowResult
from capbatch._run.progress import RunCounters, TqdmProgress
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")
    import tqdm.auto
counters = RunCounters(total=3)
bar = TqdmProgress()
bar.start(counters)
from tqdm.notebook import tqdm_notebook
assert not isinstance(bar._bar, tqdm_notebook), type(bar._bar).__mro__
for _ in range(3):
    counters.add(RowResult(status="solved", answer="x"))
    bar.update(counters, RowResult(status="solved", answer="x"))
bar.close(counters)
"""
    )
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr and "solved=3" in done.stderr  # tqdm writes to stderr


def test_progress_in_a_notebook_with_ipywidgets_uses_the_widget_bar() -> None:
    done = python(
        "import sys\n"
        + FAKE_NOTEBOOK
        + """
from capbatch._run.progress import RunCounters, TqdmProgress
bar = TqdmProgress()
counters = RunCounters(total=3)
bar.start(counters)
from tqdm.notebook import tqdm_notebook
assert isinstance(bar._bar, tqdm_notebook), type(bar._bar).__mro__
bar.close(counters)
"""
    )
    assert done.returncode == 0, done.stderr


# --- the panel's model helpers (no widgets needed) ------------------------------------


def test_task_params_read_key_value_pairs_or_json() -> None:
    assert parse_task_params("") == {}
    assert parse_task_params("module=common, case=true, score=0.5") == {
        "module": "common",
        "case": True,
        "score": 0.5,
    }
    assert parse_task_params('{"module": "queueit", "n": [1, 2]}') == {
        "module": "queueit",
        "n": [1, 2],
    }
    params = {"module": "common", "case": True}
    assert parse_task_params(format_task_params(params)) == params


def test_bad_task_params_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_task_params("module")
    with pytest.raises(ConfigError, match="JSON"):
        parse_task_params("{nope")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_task_params("a=1, =2")


def test_spend_cap_field_empty_is_no_cap_and_bad_values_name_the_problem() -> None:
    assert parse_spend_cap("") is None and parse_spend_cap("  ") is None
    assert parse_spend_cap("2.5") == 2.5 and parse_spend_cap("$ 10") == 10.0
    assert parse_spend_cap("0") == 0.0  # a cap of nothing, not "no cap"
    with pytest.raises(ConfigError, match="not a number"):
        parse_spend_cap("ten")
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="0 or more"):
            parse_spend_cap(bad)


def test_counters_line_and_durations() -> None:
    counters = RunCounters(total=10)
    counters.started -= 2
    counters.requests = 8
    for _ in range(4):
        counters.add(RowResult(status="solved", answer="a", cost_usd=0.001))
    counters.add(RowResult(status="failed", error_code="X"))
    line = format_counters(counters)
    assert line.startswith("5/10 rows · solved 4 · failed 1 · spend $0.0040 · ")
    assert "req/s" in line and "ETA 2 s" in line
    assert format_duration(None) == "–"
    assert format_duration(75) == "1 min 15 s"
    assert format_duration(3 * 3600 + 120) == "3 h 02 min"


def test_cards_check_answers_like_the_report_and_never_format_html() -> None:
    assert matches(" AbC ", "abc") and not matches(None, "abc") and not matches("abd", "abc")
    card = Card(1, "solved", "<b>x</b>", None, "<b>x</b>", True, None)
    assert card.answer_text == "<b>x</b>"  # shown by a Label widget: text, not markup
    assert card.check_text == "✓ <b>x</b>"
    failed = Card(2, "failed", None, "ERROR_CAPTCHA_UNSOLVABLE", None, None, None)
    assert failed.answer_text == "failed: ERROR_CAPTCHA_UNSOLVABLE" and failed.check_text == ""
    long = Card(3, "solved", "a" * 100, None, None, None, None)
    assert len(long.answer_text) == 12 and long.answer_text.endswith("…")


def test_panel_results_before_during_and_after_a_run(tmp_path: Path) -> None:
    folder = tmp_path
    for name in ("a.png", "b.png"):
        Image.new("RGB", (160, 60), "white").save(folder / name)
    frame = pd.DataFrame({"image": ["a.png", "b.png", "missing.png"], "label": ["x", "y", "z"]})
    frame.to_csv(folder / "in.csv", index=False)
    results = PanelResults(str(folder / "in.csv"))
    before = results.frame()
    assert list(before["image"]) == ["a.png", "b.png", "missing.png"]
    assert before["status"].isna().all() and before["answer"].isna().all()

    results.add(1, RowResult(status="solved", answer="Y"))
    results.add(2, RowResult(status="failed", error_code="INPUT_FILE_NOT_FOUND"))
    during = results.frame()
    assert during["status"].tolist()[1:] == ["solved", "failed"]
    assert pd.isna(during["status"].iloc[0])
    cards = results.cards()
    assert [c.row for c in cards] == [2, 1]  # newest first
    assert cards[1].correct is True and cards[1].thumbnail is not None
    assert cards[1].thumbnail.startswith(b"\x89PNG")
    assert cards[0].thumbnail is None and cards[0].correct is False

    final = pd.DataFrame({"done": [1]})
    results.set_final(final)
    assert results.frame() is final
