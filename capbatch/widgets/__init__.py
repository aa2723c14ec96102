"""The notebook run panel: start a run, watch it, pause or stop it, look at the answers.

```python
from capbatch.widgets import RunPanel

panel = RunPanel("images.parquet", provider="capsolver", rate=20)
panel              # the controls; press Start (or call panel.start())
panel.results      # the results table so far, at any time
```

The run happens on a worker thread with its own event loop, so the kernel stays free
while it works. Widgets are updated from that thread (ipykernel >= 6 syncs them), at
most every ``REFRESH_SECONDS`` so a fast run does not flood the frontend.

The API key typed into the panel is moved into memory as a ``Secret`` and the field is
cleared at once, so it is never part of the widget state saved into a notebook. Pass it
programmatically (``api_key=``) to keep it out of the notebook file as well.

Needs ipywidgets: ``pip install 'capbatch[notebook]'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import ipywidgets as w
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "capbatch.widgets needs ipywidgets: pip install 'capbatch[notebook]'"
    ) from exc

import pandas as pd

from capbatch._api import options_from, with_run_options
from capbatch._exceptions import CapbatchError, ConfigError
from capbatch._io.record import RowResult
from capbatch._providers.profiles import PROVIDERS, ProviderProfile, get_profile
from capbatch._providers.secrets import Secret, as_secret
from capbatch._run.control import RunControl, RunStoppedByUser
from capbatch._run.engine import execute
from capbatch._run.options import RunOptions, default_in_flight, default_journal, default_output
from capbatch._run.progress import RunCounters
from capbatch._run.summary import RunSummary
from capbatch.widgets._results import (
    PanelResults,
    format_counters,
    format_task_params,
    is_path,
    parse_local_first,
    parse_spend_cap,
    parse_task_params,
    temp_journal,
)
from capbatch.widgets._views import CardView, report_outputs, results_preview

if TYPE_CHECKING:
    from capbatch._reports.report import Report

__all__ = ["RunPanel"]

log = logging.getLogger(__name__)

#: Options the panel sets itself.
_PANEL_OWNED = ("control", "on_result", "progress", "quiet", "dry_run", "notice")
_WIDE = {"description_width": "110px"}
#: Progress bar colour by the state a run ended in.
_BAR_STYLES = {"finished": "success", "stopped": "warning", "failed": "danger"}


class RunPanel:
    """Controls, live progress and results of one capbatch run over ``source``.

    ``run_options`` are ``capbatch.run``'s keyword options (``help(capbatch.run)``
    says what each does; a misspelt one is refused with the closest name); provider,
    base URL, rate, in-flight cap, spend cap and task parameters fill the form.
    ``label_column`` names the column answers are checked against (when the table has
    it). Without ``journal=`` the journal goes beside the output, or for an in-memory
    table into a temp folder, so Start after Stop resumes without paying twice.
    """

    REFRESH_SECONDS = 0.2
    #: After Stop, requests already sent get this long to finish before the run ends.
    STOP_GRACE_SECONDS = 1.0

    def __init__(
        self,
        source: Any,
        *,
        label_column: str | None = "label",
        strip_size: int = 8,
        **run_options: Any,
    ) -> None:
        owned = sorted(set(run_options) & set(_PANEL_OWNED))
        if owned:
            raise ConfigError(f"RunPanel sets {', '.join(owned)} itself")
        options = options_from(run_options)  # a misspelt option: the closest name
        self._key: Secret | None = as_secret(options.api_key)
        self._options = dataclasses.replace(options, api_key=None)
        self._source = source
        self.journal = Path(options.journal) if options.journal else self._default_journal()
        self._results = PanelResults(
            source,
            image_column=options.image_column,
            label_column=label_column,
            strip_size=strip_size,
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._control: RunControl | None = None
        self._last_refresh = 0.0
        self._counters: RunCounters | None = None
        #: The report of the last finished run (None before, or without labels).
        self.report: Report | None = None
        #: The last finished run's summary (``summary.format()``: its text).
        self.summary: RunSummary | None = None
        #: ``idle``, ``running``, ``paused``, ``stopping``, ``stopped``, ``finished``, ``failed``.
        self.state = "idle"
        self.error: BaseException | None = None
        self._build(options)

    def _default_journal(self) -> Path:
        output = self._options.output
        if output is not None:
            return Path(default_journal(Path(output)))
        found = default_output(self._source) if is_path(self._source) else None
        return Path(default_journal(found)) if found is not None else temp_journal()

    # --- the form ---------------------------------------------------------------------

    def _build(self, options: RunOptions) -> None:
        """Make the widgets, wire them up, and lay them out as ``widget``."""
        self._build_form(options)
        self._build_display()
        self._connect()
        self._lay_out()

    def _build_form(self, options: RunOptions) -> None:
        """The form's fields, filled from ``options``."""
        provider = options.provider or ("capsolver" if self._key or options.base_url else "local")
        self.provider = w.Dropdown(
            options=list(PROVIDERS), value=provider, description="provider", style=_WIDE
        )
        self.api_key = w.Password(description="API key", continuous_update=False, style=_WIDE)
        self.base_url = w.Text(value=options.base_url or "", description="base URL", style=_WIDE)
        self.rate = w.BoundedFloatText(
            value=options.rate or 0.0, min=0.0, max=1e6, description="rate (req/s)",
            tooltip="requests per second; 0 = the provider's default", style=_WIDE,
        )  # fmt: skip
        self.max_in_flight = w.BoundedIntText(
            value=options.max_in_flight or 0, min=0, max=100_000, description="in flight",
            tooltip="most requests open at once; 0 = the provider's default", style=_WIDE,
        )  # fmt: skip
        # Text, not a number field: only a text field can show "no cap" while empty.
        self.max_spend = w.Text(
            value="" if options.max_spend is None else f"{options.max_spend:g}",
            description="spend cap ($)", placeholder="no cap", style=_WIDE,
        )  # fmt: skip
        self.task_params = w.Text(
            value=format_task_params(options.task_params), description="task params",
            placeholder="module=common, case=true", style=_WIDE,
        )  # fmt: skip
        self.fields = w.Text(  # task fields from columns: docs/task-types.md
            value=format_task_params(options.fields), description="fields",
            placeholder="question=my_question_column", style=_WIDE,
        )  # fmt: skip
        self.local_first = w.Text(  # the cascade (--local-first): README, Cascade
            value="" if options.local_first is None else f"{options.local_first:g}",
            description="local first", placeholder="off; e.g. 0.98", style=_WIDE,
        )  # fmt: skip

    def _build_display(self) -> None:
        """The buttons and what shows the run: progress, counters, status, cards, tables."""
        self.start_button = w.Button(description="Start", button_style="primary", icon="play")
        self.pause_button = w.Button(description="Pause", icon="pause", disabled=True)
        self.stop_button = w.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.progress = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="100%"))
        self.counters = w.Label(value="")
        self.status = w.Label(value="ready: press Start")
        self._cards = [CardView() for _ in range(self._results.strip_size)]
        self.strip = w.HBox([c.box for c in self._cards], layout=w.Layout(flex_flow="row wrap"))
        self.results_output = w.Output()
        self.summary_output = w.Output()

    def _connect(self) -> None:
        """Handlers for the key field, the provider and the buttons; then the chosen
        provider's hints and default limits are shown."""
        self.api_key.observe(self._take_key, names="value")
        self.provider.observe(self._provider_changed, names="value")
        self.start_button.on_click(lambda _button: self.start())
        self.pause_button.on_click(lambda _button: self.toggle_pause())
        self.stop_button.on_click(lambda _button: self.stop())
        # The limits the provider's defaults would give, shown while the user keeps them.
        self._shown_defaults: tuple[float, int] = (0.0, 0)
        self._provider_changed()

    def _lay_out(self) -> None:
        """``widget``: the form in two columns, then the buttons and the run's display."""
        form = w.HBox(
            [
                w.VBox([self.provider, self.api_key, self.base_url, self.task_params, self.fields]),
                w.VBox([self.rate, self.max_in_flight, self.max_spend, self.local_first]),
            ]
        )
        buttons = w.HBox([self.start_button, self.pause_button, self.stop_button])
        self.widget = w.VBox(
            [
                form,
                buttons,
                self.progress,
                self.counters,
                self.status,
                self.strip,
                self.results_output,
                self.summary_output,
            ]
        )

    def _take_key(self, _change: object = None) -> None:
        """Move a typed key into memory and clear the field (and so the widget state)."""
        typed = self.api_key.value
        if typed:
            self._key = Secret(typed.strip())
            self.api_key.value = ""
            self._provider_changed()

    def _provider_changed(self, _change: object = None) -> None:
        profile = get_profile(self.provider.value)
        self.base_url.placeholder = profile.base_url or "(not used by the local solver)"
        if self._key:
            hint = "key held in memory; type to replace"
        elif profile.key_env_var:
            hint = f"or set {profile.key_env_var}"
        else:
            hint = "not needed"
        self.api_key.placeholder = hint
        self._show_default_limits(profile)

    def _show_default_limits(self, profile: ProviderProfile) -> None:
        """Fill rate and in-flight with this provider's defaults, unless the user typed
        their own: a 0 would say nothing about the limits the run is going to use."""
        rate, in_flight = float(profile.default_rate), default_in_flight(profile)
        old_rate, old_in_flight = self._shown_defaults
        if self.rate.value in (0.0, old_rate):
            self.rate.value = min(rate, self.rate.max)
        if self.max_in_flight.value in (0, old_in_flight):
            self.max_in_flight.value = in_flight
        self._shown_defaults = (self.rate.value, self.max_in_flight.value)

    def _run_options(self, control: RunControl) -> RunOptions:
        self._take_key()
        return dataclasses.replace(
            self._options,
            provider=self.provider.value,
            base_url=self.base_url.value.strip() or None,
            api_key=self._key,
            rate=self.rate.value or None,
            max_in_flight=self.max_in_flight.value or None,
            max_spend=parse_spend_cap(self.max_spend.value),
            task_params=parse_task_params(self.task_params.value),
            fields={k: str(v) for k, v in parse_task_params(self.fields.value).items()},
            local_first=parse_local_first(self.local_first.value),
            journal=self.journal,
            control=control,
            on_result=self._on_result,
            progress=self._on_progress,
            notice=self._set_status,
        )

    # --- the buttons ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the run, or resume a stopped one from its journal."""
        with self._lock:
            if self.running:
                return
            control = RunControl()
            try:
                options = self._run_options(control)
            except CapbatchError as exc:
                self._set_status(f"cannot start: {exc}")
                return
            self._control = control
            self.error = self.report = self.summary = None
            self.state = "running"
            self._set_buttons(running=True)
            self._set_status("starting…")
            self.results_output.outputs = self.summary_output.outputs = ()
            self.progress.bar_style = ""
            self._thread = threading.Thread(
                target=self._work, args=(options,), name="capbatch-panel", daemon=True
            )
            self._thread.start()

    def toggle_pause(self) -> None:
        """Pause (hold back new requests; those sent finish) or resume."""
        control = self._control
        if control is None or not self.running or control.stopped or self.state == "stopping":
            return
        if control.paused:
            control.resume()
            self.state = "running"
            self.pause_button.description, self.pause_button.icon = "Pause", "pause"
            self._set_status("running")
        else:
            control.pause()
            self.state = "paused"
            self.pause_button.description, self.pause_button.icon = "Resume", "play"
            self._set_status("paused: requests already sent finish; press Resume")

    def pause(self) -> None:
        if self._control is not None and not self._control.paused:
            self.toggle_pause()

    def resume(self) -> None:
        if self._control is not None and self._control.paused:
            self.toggle_pause()

    def stop(self) -> None:
        """End the run, keeping the journal: Start resumes it without paying twice.

        New requests stop at once; those already sent get ``STOP_GRACE_SECONDS`` to
        finish, so their answers are kept rather than paid for again on resume.
        """
        control = self._control
        if control is None or not self.running or self.state == "stopping":
            return
        control.pause()
        self.state = "stopping"
        self.stop_button.disabled = self.pause_button.disabled = True
        self._set_status("stopping…")
        timer = threading.Timer(self.STOP_GRACE_SECONDS, control.stop)
        timer.daemon = True
        timer.start()

    def wait(self, timeout: float | None = None) -> pd.DataFrame:
        """Block until the run ends (``TimeoutError`` after ``timeout`` s); the results."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the run is still going after {timeout} s")
        return self.results

    @property
    def results(self) -> pd.DataFrame:
        """The results table: input columns plus result columns, missing where unfinished."""
        return self._results.frame()

    # --- the run (worker thread) ------------------------------------------------------

    def _work(self, options: RunOptions) -> None:
        self._last_refresh = 0.0
        message = ""
        try:
            self._results.load()
            outcome = asyncio.run(execute(self._source, options, want_frame=True))
        except RunStoppedByUser:
            self.state, message = "stopped", "stopped: press Start to resume"
        except Exception as exc:  # shown in the panel: a worker thread has nobody to raise to
            self.error = exc
            self.state, message = "failed", f"failed: {exc}"
        else:
            self._results.set_final(outcome.frame)
            s = self.summary = outcome.summary
            self.state = "finished"
            message = f"finished: {s.solved} solved, {s.failed} failed, spend ${s.spend_usd:.4f}"
        try:
            self._refresh()
            self._show_tables()
        except Exception:  # never leave the buttons stuck because a view failed
            log.exception("capbatch panel: could not show the results")
        finally:
            self._set_buttons(running=False)
            self._set_status(message)

    def _on_result(self, row: int, result: RowResult) -> None:
        self._results.add(row, result)

    def _on_progress(self, counters: RunCounters, result: RowResult | None) -> None:
        self._counters = counters
        now = time.monotonic()
        if result is not None and now - self._last_refresh < self.REFRESH_SECONDS:
            return
        self._last_refresh = now
        if self.state == "running":
            self._set_status("running")
        try:
            self._refresh()
        except Exception:  # a display problem must not cost the run
            log.exception("capbatch panel: could not refresh")

    def _refresh(self) -> None:
        counters = self._counters
        if counters is not None:
            total = counters.total or max(counters.shown, 1)
            self.progress.max = max(total, 1)
            self.progress.value = min(counters.shown, self.progress.max)
            self.counters.value = format_counters(counters)
        cards = self._results.cards()
        for i, view in enumerate(self._cards):
            view.show(cards[i] if i < len(cards) else None)

    def _show_tables(self) -> None:
        self.progress.bar_style = _BAR_STYLES.get(self.state, "")
        if self.state not in ("finished", "stopped"):
            return
        frame = self.results
        self.results_output.outputs = (results_preview(frame, self._results.image_column),)
        label = self._results.label_column
        if self.state == "finished" and label is not None:
            from capbatch._reports.report import (
                report,  # the report's dependencies load only when needed
            )

            self.report = report(frame, label=label)
            self.summary_output.outputs = report_outputs(self.report, label)

    # --- small helpers ----------------------------------------------------------------

    def _set_status(self, message: str) -> None:
        self.status.value = message

    def _set_buttons(self, *, running: bool) -> None:
        self.start_button.disabled = running
        self.pause_button.disabled = not running
        self.stop_button.disabled = not running
        self.pause_button.description, self.pause_button.icon = "Pause", "pause"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<RunPanel {self.state}: {self._results.done} rows done>"


# help(RunPanel) and Shift-Tab show every run option it takes, typed, with its default.
RunPanel.__signature__ = with_run_options(RunPanel.__init__, exclude=_PANEL_OWNED)  # type: ignore[attr-defined]
