"""Progress reporting: a tqdm bar (text or notebook widget), a callback, or silence.

The runner reports through the ``Progress`` interface only, so the CLI, the notebook
panel and pipelines each choose how a run looks while it works.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from capbatch._io.record import RowResult
from capbatch._run.tally import Tally

#: What every progress display reads: the run's one tally (see ``tally.py``).
RunCounters = Tally


class Progress(Protocol):
    def start(self, counters: RunCounters) -> None: ...

    def update(self, counters: RunCounters, result: RowResult) -> None: ...

    def close(self, counters: RunCounters) -> None: ...


class SilentProgress:
    def start(self, counters: RunCounters) -> None:
        pass

    def update(self, counters: RunCounters, result: RowResult) -> None:
        pass

    def close(self, counters: RunCounters) -> None:
        pass


class CallbackProgress(SilentProgress):
    """Calls ``callback(counters, result)`` after every row (the notebook panel's hook)."""

    def __init__(self, callback: Callable[[RunCounters, RowResult | None], None]) -> None:
        self._callback = callback

    def update(self, counters: RunCounters, result: RowResult) -> None:
        self._callback(counters, result)

    def close(self, counters: RunCounters) -> None:
        self._callback(counters, None)


class TqdmProgress:
    """A ``tqdm.auto`` bar: a widget in Jupyter, text in a terminal.

    The bar starts at the rows earlier runs finished and moves one step per row this
    run finishes (``Tally.shown``); its spend is this run's, the summary's figure.
    Postfix updates are throttled (tqdm redraws at most ``mininterval`` anyway, but
    formatting the postfix on every row would cost more than the row itself).

    A widget bar leaves one plain text line in the cell when it closes: a notebook
    executed headless (nbconvert, nbclient) saves the widget as it was first drawn,
    ``0/240``, and the text is what a reader of the saved file sees.
    """

    def __init__(self, *, desc: str = "capbatch", file: Any = None, notebook: bool | None = None):
        self._desc = desc
        self._file = file
        self._notebook = notebook
        self._bar: Any = None
        self._last_postfix = 0.0

    def _make_bar(self, counters: RunCounters) -> Any:
        kwargs: dict[str, Any] = {
            "total": counters.total,
            "initial": counters.shown,
            "desc": self._desc,
            "unit": "row",
            "dynamic_ncols": True,
            "smoothing": 0.1,
        }
        if self._file is not None:
            kwargs["file"] = self._file
        if self._notebook is False or self._file is not None:
            from tqdm import tqdm as text_tqdm

            return text_tqdm(**kwargs)
        from tqdm.auto import tqdm as auto_tqdm

        try:
            return auto_tqdm(**kwargs)
        except ImportError:  # notebook frontend without ipywidgets: fall back to text
            from tqdm import tqdm as text_tqdm

            return text_tqdm(**kwargs)

    def start(self, counters: RunCounters) -> None:
        self._bar = self._make_bar(counters)

    def _postfix(self, counters: RunCounters) -> None:
        self._bar.set_postfix(
            solved=counters.solved,
            failed=counters.failed,
            spend=f"${counters.spend:.4f}",
            rate=f"{counters.request_rate:.1f}req/s",
            refresh=False,
        )

    def update(self, counters: RunCounters, result: RowResult) -> None:
        if self._bar is None:
            return
        step = counters.shown - self._bar.n
        if step:  # back too, when rows the journal counted done are sent again
            self._bar.update(step)
        now = time.monotonic()
        if now - self._last_postfix >= 0.5:
            self._last_postfix = now
            self._postfix(counters)

    def close(self, counters: RunCounters) -> None:
        if self._bar is not None:
            step = counters.shown - self._bar.n
            if step:
                self._bar.update(step)
            self._postfix(counters)
            widget = _is_widget_bar(self._bar)
            self._bar.close()
            self._bar = None
            if widget:
                print(final_line(counters, self._desc), flush=True)


def _is_widget_bar(bar: Any) -> bool:
    """Whether ``bar`` is tqdm's notebook widget (only possible once it is imported)."""
    notebook = sys.modules.get("tqdm.notebook")
    return notebook is not None and isinstance(bar, notebook.tqdm_notebook)


def final_line(counters: RunCounters, desc: str = "capbatch") -> str:
    """The bar's last state as one line of text: rows done, outcomes, spend, time."""
    total = counters.total if counters.total is not None else counters.shown
    return (
        f"{desc}: {counters.shown}/{total} rows done: {counters.solved} solved, "
        f"{counters.failed} failed"
        + (f", {counters.pending} pending" if counters.pending else "")
        + (f" ({counters.earlier} by earlier runs)" if counters.earlier else "")
        + f"; spend ${counters.spend:.4f}; {counters.elapsed:.1f} s"
    )
