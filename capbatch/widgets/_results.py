"""What the notebook panel knows about a run, kept apart from any widget.

``PanelResults`` gathers rows as they become final (the run's ``on_result`` hook, called
on the run's own thread) and gives, at any time, the results table so far and the
latest rows as ``Card`` values (answer, label check, thumbnail). The rest are small
pure helpers: parsing the task-parameter field and formatting the live counters.

Nothing here imports ipywidgets, so the core and its tests do not need it.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from PIL import Image

from capbatch._exceptions import ConfigError, RowInputError
from capbatch._io.images import resolve_image
from capbatch._io.inputs import TableSource
from capbatch._io.record import RESULT_SCHEMA, RowResult, output_schema, results_to_arrays
from capbatch._run.progress import RunCounters

#: Thumbnails are scaled to fit this box (pixels), keeping the aspect ratio.
THUMBNAIL_SIZE = (88, 33)
#: Thumbnails kept in memory (the strip shows the latest few, each made once).
_THUMBNAIL_CACHE = 64
#: Answers longer than this are cut in the strip (the table keeps them whole).
_MAX_SHOWN_CHARS = 12


@dataclass(frozen=True)
class Card:
    """One row in the strip of latest answers."""

    row: int
    status: str
    answer: str | None
    error_code: str | None
    label: str | None
    #: True/False when the row has a label, None otherwise.
    correct: bool | None
    #: PNG bytes, or None when the image cannot be read.
    thumbnail: bytes | None

    @property
    def answer_text(self) -> str:
        if self.status != "solved":
            return f"failed: {self.error_code or 'error'}"
        return shorten(self.answer or "")

    @property
    def check_text(self) -> str:
        if self.correct is None:
            return ""
        mark = "✓" if self.correct else "✗"
        return f"{mark} {shorten(self.label or '')}"


def shorten(text: str, limit: int = _MAX_SHOWN_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def matches(answer: str | None, label: str | None) -> bool:
    """The report's headline rule: stripped text, compared without regard to case."""
    if answer is None or label is None:
        return False
    return answer.strip().casefold() == label.strip().casefold()


def thumbnail(
    value: object, base_dir: Path, size: tuple[int, int] = THUMBNAIL_SIZE
) -> bytes | None:
    """A small PNG of the image ``value`` stands for; None when it cannot be read."""
    try:
        data = resolve_image(value, base_dir=base_dir)
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail(size)
            out = io.BytesIO()
            image.convert("RGB").save(out, "PNG", optimize=True)
            return out.getvalue()
    except (RowInputError, OSError, ValueError, Image.DecompressionBombError):
        return None


class PanelResults:
    """Rows gathered during runs over one input table; thread-safe.

    ``load()`` reads the input table (call it off the notebook's thread); ``add`` is the
    run's ``on_result`` hook; ``frame()`` and ``cards()`` may be called from any thread.
    """

    def __init__(
        self,
        source: Any,
        *,
        image_column: str | None = None,
        label_column: str | None = "label",
        strip_size: int = 8,
    ) -> None:
        self._source = source
        self._image_column = image_column
        self._label_column = label_column
        self.strip_size = strip_size
        self._lock = threading.Lock()
        self._rows: dict[int, RowResult] = {}
        self._recent: deque[int] = deque(maxlen=strip_size)
        self._thumbnails: OrderedDict[int, bytes | None] = OrderedDict()
        self._table: pa.Table | None = None
        self._images: list[Any] = []
        self._labels: list[Any] | None = None
        self._base_dir = Path.cwd()
        #: The image column, known once ``load()`` has read the table.
        self.image_column: str | None = image_column
        self._final: pd.DataFrame | None = None

    # --- input ------------------------------------------------------------------------

    def load(self) -> pa.Table:
        """Read the input table once (later calls return it); raises ``TableError``."""
        with self._lock:
            if self._table is not None:
                return self._table
        source = TableSource(self._source, image_column=self._image_column)
        table = pa.Table.from_batches(list(source.batches()), schema=source.schema)
        images = table.column(source.image_column).to_pylist()
        label = self._label_column
        labels = table.column(label).to_pylist() if label and label in table.column_names else None
        with self._lock:
            if self._table is None:
                self._table, self._images, self._labels = table, images, labels
                self._base_dir = source.base_dir
                self.image_column = source.image_column
            return self._table

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    @property
    def label_column(self) -> str | None:
        return self._label_column if self.has_labels else None

    # --- rows -------------------------------------------------------------------------

    def add(self, row: int, result: RowResult) -> None:
        """Record a final row (the run's ``on_result`` hook: keep it cheap)."""
        with self._lock:
            self._rows[row] = result
            self._recent.append(row)
            self._final = None

    def set_final(self, frame: pd.DataFrame | None) -> None:
        """The whole table a finished run returned; ``frame()`` gives it from now on."""
        with self._lock:
            self._final = frame

    @property
    def done(self) -> int:
        with self._lock:
            return len(self._rows)

    def frame(self) -> pd.DataFrame:
        """Input columns plus result columns; unfinished rows have missing results."""
        with self._lock:
            if self._final is not None:
                return self._final
            rows = dict(self._rows)
        table = self.load()
        names = output_schema(table.schema).names[: table.num_columns]
        inputs = table.rename_columns(names).to_pandas()
        order = sorted(rows)
        arrays = results_to_arrays([rows[i] for i in order])
        done = pa.Table.from_arrays(arrays, schema=RESULT_SCHEMA).to_pandas()
        done.index = pd.Index(order)
        results = done.reindex(pd.RangeIndex(table.num_rows))
        combined: pd.DataFrame = pd.concat([inputs, results], axis=1)
        return combined

    def cards(self) -> list[Card]:
        """The latest rows, newest first, with thumbnails (made once per row)."""
        self.load()
        with self._lock:
            latest = [(row, self._rows[row]) for row in reversed(self._recent)]
        seen: set[int] = set()
        cards = []
        for row, result in latest:
            if row in seen:
                continue
            seen.add(row)
            label = None if self._labels is None else self._labels[row]
            label_text = None if label is None else str(label)
            cards.append(
                Card(
                    row=row,
                    status=result.status,
                    answer=result.answer,
                    error_code=result.error_code,
                    label=label_text,
                    correct=None if label_text is None else matches(result.answer, label_text),
                    thumbnail=self._thumbnail(row),
                )
            )
        return cards

    def _thumbnail(self, row: int) -> bytes | None:
        if row in self._thumbnails:
            self._thumbnails.move_to_end(row)
            return self._thumbnails[row]
        png = thumbnail(self._images[row], self._base_dir)
        self._thumbnails[row] = png
        if len(self._thumbnails) > _THUMBNAIL_CACHE:
            self._thumbnails.popitem(last=False)
        return png


# --- form fields and counters ---------------------------------------------------------


def parse_task_params(text: str) -> dict[str, Any]:
    """Task parameters from the panel's field: a JSON object, or ``KEY=VALUE`` pairs
    separated by commas (values that read as JSON, like ``true`` or ``3``, are typed)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            params: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"task parameters are not valid JSON: {exc}") from None
        return params
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"task parameter {item.strip()!r} is not KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def parse_spend_cap(text: str) -> float | None:
    """The panel's spend cap in USD; empty means no cap."""
    text = text.strip().lstrip("$").strip()
    if not text:
        return None
    try:
        cap = float(text)
    except ValueError:
        raise ConfigError(f"spend cap {text!r} is not a number of dollars") from None
    if not math.isfinite(cap) or cap < 0:
        raise ConfigError(f"spend cap must be 0 or more dollars (got {text})")
    return cap


def parse_local_first(text: str) -> float | None:
    """The panel's cascade threshold (``local_first``): a confidence 0 to 1; empty: off."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"local first {text!r} is not a confidence from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"local first must be a confidence from 0 to 1 (got {text})")
    return value


def format_task_params(params: Any) -> str:
    """The inverse of ``parse_task_params`` for the field's initial value."""
    if not params:
        return ""
    return ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in dict(params).items()
    )


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_counters(counters: RunCounters) -> str:
    """One line: rows, solved, failed, spend, achieved request rate and ETA."""
    total = "?" if counters.total is None else str(counters.total)
    return (
        f"{counters.shown}/{total} rows · solved {counters.solved} · failed {counters.failed}"
        f" · spend ${counters.spend:.4f} · {counters.request_rate:.1f} req/s"
        f" · ETA {format_duration(counters.eta())}"
    )


def temp_journal() -> Path:
    """A journal path in a new private temp folder (for in-memory inputs)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="capbatch-panel-"))
    return folder / "journal.sqlite"


def is_path(source: object) -> bool:
    return isinstance(source, (str, os.PathLike))
