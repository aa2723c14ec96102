"""The notebook run panel, driven headlessly against the real emulator on loopback.

No browser and no kernel: the widgets are plain objects (ipywidgets falls back to a
dummy comm), the buttons are pressed with ``Button.click()``, and every wait is a
bounded poll with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ipywidgets
import pandas as pd
import pytest

from capbatch.emulator import EmulatorHandle
from capbatch.widgets import RunPanel
from tests.e2e.runner_helpers import SAMPLE, sample_frame

Start = Callable[..., EmulatorHandle]

KEY = "sk-panel-e2e-SECRET-4d1b8e"
ROWS = 60


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def creates(server: EmulatorHandle) -> int:
    return int(server.stats()["create_calls"])


def widget_state() -> str:
    return json.dumps(ipywidgets.Widget.get_manager_state(), default=repr)


@pytest.fixture(autouse=True)
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals of in-memory tables go to a temp folder: make it the test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def server(emulator: Start) -> EmulatorHandle:
    return emulator(
        api_key=KEY,
        solver="oracle",
        labels=str(SAMPLE / "labels.csv"),
        error_rate=0.1,
        seed=7,
    )


@pytest.fixture
def panels() -> Iterator[list[RunPanel]]:
    """Panels made by a test; any still running at the end are stopped."""
    made: list[RunPanel] = []
    yield made
    for panel in made:
        if panel.running:
            panel.STOP_GRACE_SECONDS = 0.0
            panel.stop()
            panel.wait(30)


def make_panel(panels: list[RunPanel], source: object, **options: object) -> RunPanel:
    panel = RunPanel(source, **options)
    panels.append(panel)
    return panel


def configured(panel: RunPanel, server: EmulatorHandle, *, rate: float = 20) -> RunPanel:
    """Fill the form as a user would, typing the key."""
    panel.provider.value = "capsolver"
    panel.base_url.value = server.url
    panel.rate.value = rate
    panel.max_in_flight.value = 2
    panel.api_key.value = KEY
    return panel


def image_hashes(frame: pd.DataFrame) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in frame["image_path"]]


def test_a_run_shows_progress_the_answer_strip_results_and_summary(
    server: EmulatorHandle, panels: list[RunPanel]
) -> None:
    frame = sample_frame(ROWS)
    panel = configured(make_panel(panels, frame), server, rate=60)
    assert panel.results["status"].isna().all()  # before Start: inputs, no results

    panel.start_button.click()
    assert panel.running and panel.state == "running" and panel.start_button.disabled
    wait_for(lambda: panel.progress.value >= 5, what="progress")
    assert "solved" in panel.counters.value and "req/s" in panel.counters.value
    wait_for(lambda: panel.results["status"].notna().sum() >= 5, what="partial results")
    panel.wait(30)

    assert panel.state == "finished", panel.status.value
    assert panel.status.value.startswith(f"finished: {ROWS} solved")
    assert not panel.start_button.disabled and panel.stop_button.disabled
    results = panel.results
    assert len(results) == ROWS and (results["status"] == "solved").all()
    assert list(results["id"]) == list(frame["id"])
    assert panel.progress.value == panel.progress.max == ROWS
    assert f"{ROWS}/{ROWS} rows" in panel.counters.value
    preview = panel.results_output.outputs[0]["data"]
    assert f"results: {ROWS} of {ROWS} rows done" in preview["text/plain"]
    assert "image_path" not in preview["text/html"]  # images can be megabytes of base64

    assert panel.report is not None
    summary = panel.report.summary
    assert int(summary["rows"].iloc[0]) == ROWS
    # error_rate=0.1 corrupts some answers: the report lists them as wrong
    wrong = ROWS - int(summary["correct"].iloc[0])
    assert wrong > 0
    shown = panel.summary_output.outputs
    assert "report summary" in shown[0]["data"]["text/html"]
    assert f"wrong answers: {wrong}" in shown[1]["data"]["text/html"]
    assert panel.progress.bar_style == "success"

    views = [view for view in panel._cards if view.box.layout.visibility == "visible"]
    assert len(views) == 8
    assert views[0].answer.value.startswith(f"#{ROWS - 1} ")  # newest first
    for view in views:
        assert bytes(view.image.value).startswith(b"\x89PNG")
        assert view.check.value[:1] in ("✓", "✗")


def test_stop_ends_the_run_and_start_resumes_it_from_the_journal(
    server: EmulatorHandle, panels: list[RunPanel], tmp_path: Path
) -> None:
    rows = ROWS
    frame = sample_frame(rows)
    panel = make_panel(panels, frame, journal=tmp_path / "panel.journal.sqlite")
    configured(panel, server)
    panel.STOP_GRACE_SECONDS = 0.3
    panel.start_button.click()
    wait_for(lambda: panel.results["status"].notna().sum() >= 5, what="results")

    panel.stop_button.click()
    assert panel.state == "stopping" and panel.stop_button.disabled
    panel.wait(10)
    assert panel.state == "stopped" and "press Start to resume" in panel.status.value
    assert panel.journal.is_file()
    partial = panel.results
    finished = partial["status"].notna()
    done = int(finished.sum())
    assert 0 < done < rows, "the run should stop part-way"
    assert partial.loc[~finished, "answer"].isna().all()
    preview = panel.results_output.outputs[0]["data"]["text/plain"]
    assert f"results: {done} of {rows} rows done" in preview
    assert panel.progress.bar_style == "warning"
    assert panel.summary_output.outputs == ()  # the report waits for a finished run

    panel.start_button.click()
    panel.wait(30)
    assert panel.state == "finished", panel.status.value
    results = panel.results
    assert len(results) == rows and (results["status"] == "solved").all()
    by_hash = server.stats()["creates_by_hash"]
    answered_before = [h for h, f in zip(image_hashes(frame), finished, strict=True) if f]
    assert all(by_hash[h] == 1 for h in answered_before), "resume re-sent an answered row"
    assert panel.report is not None


def test_pause_stops_new_submissions_and_resume_continues(
    server: EmulatorHandle, panels: list[RunPanel], tmp_path: Path
) -> None:
    frame = sample_frame(ROWS)
    panel = make_panel(panels, frame, journal=tmp_path / "panel.journal.sqlite")
    configured(panel, server)
    panel.max_in_flight.value = 0  # the provider's default (50): a long queue for slots
    panel.STOP_GRACE_SECONDS = 0.3
    panel.start_button.click()
    wait_for(lambda: creates(server) >= 5, what="submissions")

    panel.pause_button.click()
    assert panel.state == "paused" and panel.pause_button.description == "Resume"
    assert "paused" in panel.status.value
    time.sleep(0.3)  # requests already sent finish
    held = creates(server)
    time.sleep(0.5)
    assert creates(server) == held, "Pause must stop new submissions"

    panel.pause_button.click()
    assert panel.state == "running" and panel.pause_button.description == "Pause"
    wait_for(lambda: creates(server) >= held + 3, what="submissions after Resume")

    panel.stop_button.click()
    panel.wait(10)
    assert panel.state == "stopped" and panel.journal.is_file()
    done = int(panel.results["status"].notna().sum())
    assert 0 < done < ROWS

    panel.start_button.click()
    panel.wait(30)
    assert panel.state == "finished", panel.status.value
    assert (panel.results["status"] == "solved").all()
    assert max(server.stats()["creates_by_hash"].values()) == 1, "a row was paid for twice"


def test_resume_does_not_release_a_burst_of_held_requests(
    server: EmulatorHandle, panels: list[RunPanel]
) -> None:
    rate = 20
    panel = configured(make_panel(panels, sample_frame(ROWS)), server, rate=rate)
    panel.max_in_flight.value = 0  # the provider's default (50)
    panel.start()
    wait_for(lambda: creates(server) >= 5, what="submissions")
    panel.pause()
    time.sleep(1.0)  # requests keep queueing for slots while paused
    held = creates(server)
    panel.resume()
    time.sleep(0.25)
    assert creates(server) - held <= rate * 0.25 + 2, "Resume sent a burst above the rate"


def test_the_key_never_reaches_the_widget_state(
    server: EmulatorHandle, panels: list[RunPanel], tmp_path: Path
) -> None:
    panel = make_panel(panels, sample_frame(6), provider="capsolver", base_url=server.url)
    panel.api_key.value = KEY
    assert panel.api_key.value == ""  # moved into memory as soon as it arrives
    assert "memory" in panel.api_key.placeholder
    assert KEY not in widget_state()
    panel.start_button.click()
    panel.wait(30)
    assert panel.state == "finished", panel.status.value
    assert KEY not in widget_state()
    assert KEY not in repr(panel) and KEY not in repr(panel._options)
    for output in (*panel.results_output.outputs, *panel.summary_output.outputs):
        assert KEY not in json.dumps(output)


def test_a_key_passed_as_an_option_is_used_and_not_shown(
    server: EmulatorHandle, panels: list[RunPanel]
) -> None:
    panel = make_panel(
        panels, sample_frame(4), provider="capsolver", base_url=server.url, api_key=KEY
    )
    assert panel.api_key.value == "" and KEY not in widget_state()
    panel.start()
    frame = panel.wait(30)
    assert panel.state == "finished"
    assert (frame["answer"].notna()).all()


def test_a_bad_key_shows_the_error_and_frees_the_buttons(
    server: EmulatorHandle, panels: list[RunPanel]
) -> None:
    panel = make_panel(panels, sample_frame(4), provider="capsolver", base_url=server.url)
    panel.api_key.value = "wrong-key"
    panel.start()
    panel.wait(30)
    assert panel.state == "failed" and panel.status.value.startswith("failed:")
    assert not panel.start_button.disabled and panel.stop_button.disabled
    assert "wrong-key" not in panel.status.value


def test_a_file_source_with_the_local_solver_writes_beside_the_output(
    panels: list[RunPanel], tmp_path: Path
) -> None:
    pytest.importorskip("ddddocr")
    source = SAMPLE / "captchas.parquet"
    output = tmp_path / "answers.parquet"
    panel = make_panel(panels, source, provider="local", output=output)
    assert panel.journal == tmp_path / "answers.journal.sqlite"
    before = panel.results
    assert len(before) == 240 and before["status"].isna().all()
    panel.start()
    frame = panel.wait(60)
    assert panel.state == "finished" and output.is_file()
    assert len(frame) == 240 and frame["status"].notna().all()
    assert panel.report is not None
    assert "wrong answers" in panel.summary_output.outputs[-1]["data"]["text/plain"]


def test_untrusted_answers_are_shown_as_text_and_no_labels_means_no_report(
    emulator: Start, panels: list[RunPanel]
) -> None:
    answer = "<img src=x onerror=alert(1)>"
    server = emulator(api_key=KEY, solver="constant", answer=answer)
    frame = sample_frame(4).drop(columns=["label"])
    panel = make_panel(panels, frame, provider="capsolver", base_url=server.url, api_key=KEY)
    panel.start()
    panel.wait(30)
    assert panel.state == "finished", panel.status.value
    page = panel.results_output.outputs[0]["data"]["text/html"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and answer not in page
    assert panel.report is None and panel.summary_output.outputs == ()
    view = panel._cards[0]
    assert answer[:5] in view.answer.value  # a Label: shown as text, never as markup
    assert view.check.value == ""  # no label column, no check


def test_bad_form_values_are_reported_not_raised(panels: list[RunPanel]) -> None:
    panel = make_panel(panels, sample_frame(2), provider="local")
    panel.task_params.value = "module"
    panel.start()
    assert not panel.running and panel.status.value.startswith("cannot start:")
    assert "KEY=VALUE" in panel.status.value


def test_options_the_panel_owns_are_refused() -> None:
    with pytest.raises(Exception, match="RunPanel sets"):
        RunPanel(pd.DataFrame({"image": []}), progress=False)


def test_the_form_shows_the_provider_defaults_and_keeps_typed_values() -> None:
    from capbatch._providers.profiles import get_profile

    capsolver, anticaptcha = get_profile("capsolver"), get_profile("anticaptcha")
    panel = RunPanel(sample_frame(2), provider="capsolver")
    assert panel.rate.value == capsolver.default_rate
    assert panel.max_in_flight.value == capsolver.default_max_in_flight
    panel.provider.value = "anticaptcha"  # defaults follow the provider...
    assert panel.max_in_flight.value == anticaptcha.default_max_in_flight
    panel.max_in_flight.value = 7  # ...until the user types a value
    panel.provider.value = "capsolver"
    assert panel.max_in_flight.value == 7
    assert panel.rate.value == capsolver.default_rate
    assert panel.max_spend.value == "" and panel.max_spend.placeholder == "no cap"
    typed = RunPanel(
        sample_frame(2), provider="capsolver", rate=3.5, max_in_flight=4, max_spend=1.25
    )
    assert (typed.rate.value, typed.max_in_flight.value) == (3.5, 4)
    assert typed.max_spend.value == "1.25"


def test_a_bad_spend_cap_is_reported_not_raised(panels: list[RunPanel]) -> None:
    panel = make_panel(panels, sample_frame(2), provider="local")
    panel.max_spend.value = "lots"
    panel.start()
    assert not panel.running and "spend cap 'lots' is not a number" in panel.status.value
