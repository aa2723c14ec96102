"""The report on one run: ``report()`` reads a results table and returns a ``Report``.

A report reads a results table (the runner's output, Parquet or CSV, or a DataFrame),
scores every row against its label column (``metrics`` has the definitions) and keeps
the tables a reader wants: ``summary`` (one row), ``groups`` (per ``by`` column and per
label length), ``errors`` (failures by code) and ``confusions`` (label character ->
answer character). ``notes`` say what to keep in mind, e.g. that the run stopped
part-way. ``to_html`` writes one self-contained page (``html``).

Comparing runs (``compare()``) is in ``compare``, built on the reports made here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from capbatch._exceptions import ConfigError, RowInputError, TableError
from capbatch._io.images import INPUT_FILE_NOT_FOUND, resolve_image
from capbatch._io.inputs import IMAGE_COLUMN_NAMES
from capbatch._io.labels import DEFAULT_IOU_THRESHOLD, DEFAULT_TOLERANCE, Scoring
from capbatch._io.outputs import output_format, read_results, run_metadata
from capbatch._reports import cascade_curve as _cascade
from capbatch._reports import metrics as _metrics
from capbatch._reports import metrics_types as _types
from capbatch._reports.tables import confusions
from capbatch._version import __version__

Results: TypeAlias = "pd.DataFrame | str | os.PathLike[str]"

TOP_CONFUSIONS = 20
#: The label column looked for by default; a table without it is reported without labels.
DEFAULT_LABEL = "label"
#: The largest image a report reads (thumbnails, matching rows by image hash). A file's
#: size is checked with ``stat`` before it is read and only regular files are read, so
#: a huge file, a FIFO or a device in the image column cannot stall or swamp a report.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


def require_column(frame: pd.DataFrame, column: str, role: str, where: str = "the table") -> None:
    """TableError naming the columns there are, unless ``frame`` has ``column``."""
    if column in frame.columns:
        return
    names = [str(c) for c in frame.columns]
    near = [f" (did you mean {n!r}?)" for n in names if n.lower() == column.lower()]
    hint = f"{''.join(near[:1])}; columns: {', '.join(map(repr, names))}"
    raise TableError(f"{role} column {column!r} is not in {where}{hint}")


def read_table(path: Path) -> pd.DataFrame:
    """Read a results file through ``read_results``, with one clean error for a file that
    is missing, not a regular file, of no known format or unreadable."""
    fmt = output_format(path)
    if fmt is None:
        raise TableError(f"cannot tell the format of {path}: use .parquet or .csv")
    if not path.is_file():
        # A FIFO or device is not opened: reading it could wait for ever.
        what = "is not a regular file" if path.exists() else "not found"
        raise TableError(f"results file {what}: {path}")
    try:
        return read_results(path)
    except _READ_ERRORS as exc:
        message = " ".join(str(exc).split())[:300]
        raise TableError(f"cannot read {path} as {fmt.upper()}: {message}") from exc


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def run_info(source: Path | None, frame: pd.DataFrame) -> dict[str, Any]:
    """What the run said about itself: provider, task type, settings and its summary
    (from the file's ``capbatch.*`` metadata, else the table's ``attrs["capbatch"]``)."""
    meta: dict[str, str] = {}
    if source is not None:
        try:
            meta = run_metadata(source)
        except _READ_ERRORS:
            meta = {}
    if not meta:
        summary = frame.attrs.get("capbatch")
        summary = summary if isinstance(summary, dict) else {}
        settings = summary.get("settings")
        return {
            "provider": summary.get("provider"),
            "task_type": summary.get("task_type"),
            "settings": settings if isinstance(settings, dict) else {},
            "summary": summary,
        }
    settings, summary = _json(meta.get("capbatch.settings")), _json(meta.get("capbatch.run"))
    return {
        "provider": meta.get("capbatch.provider"),
        "task_type": meta.get("capbatch.task_type"),
        "version": meta.get("capbatch.version"),
        "input": meta.get("capbatch.input"),
        "settings": settings if isinstance(settings, dict) else {},
        "summary": summary if isinstance(summary, dict) else {},
    }


def _stem(path: Path) -> str:
    """``captchas`` for ``captchas.results.parquet``: the name a run is shown by."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem.removesuffix(".results") or stem


def _image_column(frame: pd.DataFrame, wanted: str | None, skip: Sequence[str]) -> str | None:
    if wanted is not None:
        require_column(frame, wanted, "image")
        return wanted
    for candidate in IMAGE_COLUMN_NAMES:
        for name in frame.columns:
            if str(name).lower() == candidate and name not in skip:
                return str(name)
    return None


class Shown:
    """What reports and comparisons share: JSON, the HTML page, the notebook view."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """The self-contained HTML page; written to ``path`` (UTF-8) when given."""
        page = self._render(fragment=False)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def _repr_html_(self) -> str:
        return self._render(fragment=True)

    def _render(self, *, fragment: bool) -> str:
        """The page (or the notebook fragment). The HTML module is imported here, on
        first use: it loads Jinja2 and matplotlib, which a report without HTML never needs.
        Each class names its own view, so the HTML module never imports this one."""
        raise NotImplementedError


class Report(Shown):
    """Accuracy, latency and cost of one results table (made by ``capbatch.report``).

    Attributes: ``summary`` (one row, ``all``, of ``metrics.SUMMARY_COLUMNS``),
    ``groups`` (column -> one row per value), ``errors``, ``confusions``, ``notes``,
    ``partial`` (the run stopped part-way), ``gate`` (per confidence threshold, the
    rows a gate would answer locally and their accuracy; None without labels and a
    confidence column), ``stages`` (a cascade run's stages; else None), ``run``
    (provider, settings and the run's own summary from the file's metadata),
    ``results`` (the table as read) and ``scored`` (one row of flags per row).
    """

    def _render(self, *, fragment: bool) -> str:
        from capbatch._reports import html as _report_html

        return _report_html.report_fragment(self) if fragment else _report_html.report_page(self)

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        label: str | None = "label",
        by: Sequence[str] = (),
        case_sensitive: bool = False,
        source: Path | None = None,
        base_dir: Path | None = None,
        image_column: str | None = None,
        name: str | None = None,
        top: int = TOP_CONFUSIONS,
        scoring: Scoring | None = None,
    ) -> None:
        if label is not None:
            require_column(frame, label, "label")
        require_column(frame, "answer", "result", "the table (is it the output of `capbatch run`?)")
        for column in by:
            if column != _metrics.LABEL_LENGTH:
                require_column(frame, column, "group")
        self.source = source
        self.name = name or (_stem(source) if source is not None else "results")
        self.label = label
        self.case_sensitive = case_sensitive
        self.scoring = scoring or Scoring()
        dirs = [base_dir] if base_dir is not None else [source.parent] if source else []
        self.results = frame
        #: The labels as text (a list label as JSON), None without labels.
        self.labels = None if label is None else _types.as_text(frame[label])
        self.run = run_info(source, frame)
        if base_dir is None and self.run.get("input"):
            dirs.append(Path(self.run["input"]).parent)
        self.image_dirs = list(dict.fromkeys([*dirs, Path.cwd()] if base_dir is None else dirs))
        self.image_column = _image_column(frame, image_column, (label or "label", "answer"))
        if "status" not in frame.columns:
            answered = frame["answer"].notna()
            frame = frame.assign(status=np.where(answered, "solved", "failed"))
        kinds = _types.row_kinds(frame, self.run.get("task_type"), self._task_params())
        self.scored = _metrics.score(
            frame, label, case_sensitive=case_sensitive, by=by, kinds=kinds, scoring=self.scoring
        )
        self.kinds = _types.kinds_present(self.scored)
        text_labels = label is not None and "text" in self.kinds
        self.by = tuple(dict.fromkeys([*by, *([_metrics.LABEL_LENGTH] if text_labels else [])]))
        self.summary = _metrics.aggregate(self.scored)
        self.groups = {column: self.grouped(column) for column in self.by}
        self.errors = _metrics.errors_by_code(self.scored)
        wrong = self.wrong_rows()
        wrong = wrong[self.scored["kind"].to_numpy()[wrong] == "text"]
        answers, labels = self.scored["answer"].iloc[wrong], self.scored["label"].iloc[wrong]
        given = _metrics.flag(answers.str.len() > 0)
        self.confusions = confusions(answers[given].tolist(), labels[given].tolist(), top)
        self.notes, self.partial = _metrics.notes(self.results, self.scored, self.run, label)
        #: Per confidence threshold, the rows a gate would answer locally and their
        #: accuracy (labels and a confidence column needed); a cascade run's stages.
        self.gate = _cascade.report_gate(self)
        self.stages = _cascade.stage_table(self)

    def _task_params(self) -> dict[str, Any]:
        params = (self.run.get("settings") or {}).get("task_params")
        return params if isinstance(params, dict) else {}

    @property
    def has_labels(self) -> bool:
        """Whether the table has a label column (else the report measures no accuracy)."""
        return self.label is not None

    def columns(self, columns: Sequence[str] = _metrics.SUMMARY_COLUMNS) -> list[str]:
        """The summary ``columns`` that mean something for this table's kinds and labels."""
        return _types.relevant(columns, self.kinds, self.has_labels)

    def __repr__(self) -> str:
        s = self.summary.iloc[0]
        metric = "accuracy" if self.has_labels else "solved_rate"
        shown = f"{_metrics.LABELS[metric]} {_metrics.fmt(metric, s[metric])}"
        return f"<Report {self.name!r}: {int(s['rows']):,} rows, {shown}>"

    def grouped(self, column: str) -> pd.DataFrame:
        """The summary metrics per value of ``column`` (any column of the table)."""
        scored = self.scored
        if column not in scored.columns:
            require_column(self.results, column, "group")
            scored = scored.assign(**{column: self.results[column]})
        return _metrics.aggregate(scored, column)

    def image(self, value: object, max_bytes: int | None = MAX_IMAGE_BYTES) -> bytes:
        """The image bytes a cell of the image column stands for (``RowInputError`` if none,
        ``INPUT_TOO_LARGE`` above ``max_bytes``, checked before reading a file).

        A relative path is looked for in each of ``image_dirs`` in turn: ``base_dir`` if
        given, else the results file's folder, the run's input folder (when the file
        records it) and the working directory.
        """
        missing: RowInputError | None = None
        for folder in self.image_dirs:
            try:
                return resolve_image(value, base_dir=folder, max_bytes=max_bytes)
            except RowInputError as exc:
                if exc.error_code != INPUT_FILE_NOT_FOUND:
                    raise
                missing = missing or exc
        assert missing is not None
        raise missing

    def wrong_rows(self) -> np.ndarray:
        """Positions of labelled rows that ran and are not correct, in table order."""
        return np.flatnonzero(self.scored["labelled"] & ~self.scored["correct"])

    def failed_rows(self) -> np.ndarray:
        """Positions of rows that ran and have no answer (failed), in table order."""
        return np.flatnonzero(self.scored["ran"] & ~self.scored["solved"])

    def wrong_answers(self) -> pd.DataFrame:
        """The rows of the table whose answer is wrong (failed rows included)."""
        wrong: pd.DataFrame = self.results.iloc[self.wrong_rows()]
        return wrong

    def metrics(self) -> dict[str, Any]:
        """The overall metrics as a JSON-ready dict."""
        return _metrics.records(self.summary)[0]

    def to_dict(self) -> dict[str, Any]:
        """Everything the report shows, JSON-ready (NaN as None)."""
        return {
            "name": self.name,
            "source": None if self.source is None else str(self.source),
            "label_column": self.label,
            "case_sensitive": self.case_sensitive,
            "kinds": list(self.kinds),
            "scoring": {
                "tolerance": self.scoring.tolerance,
                "iou_threshold": self.scoring.iou_threshold,
            },
            "partial": self.partial,
            "notes": list(self.notes),
            "run": _metrics.jsonable({k: v for k, v in self.run.items() if k != "summary"}),
            "summary": self.metrics(),
            "groups": {column: _metrics.records(frame) for column, frame in self.groups.items()},
            "errors": _metrics.records(self.errors),
            "confusions": _metrics.records(self.confusions),
            "confidence_gate": None if self.gate is None else _metrics.records(self.gate),
            "stages": None if self.stages is None else _metrics.records(self.stages),
            "capbatch_version": __version__,
        }


def scoring(tolerance: float, iou_threshold: float) -> Scoring:
    """The ``Scoring`` of these settings; a bad value is a ``ConfigError``."""
    try:
        return Scoring(float(tolerance), float(iou_threshold))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def resolve_label(frame: pd.DataFrame, label: str | None) -> str | None:
    """The label column to score against: ``label``, or None (no labels) when it is None
    or is the default ``"label"`` and the table has no such column. Any other missing
    name is a ``TableError`` (a typo must not silently drop accuracy)."""
    if label == DEFAULT_LABEL and label not in frame.columns:
        return None
    return label


def report(
    results: Results,
    label: str | None = DEFAULT_LABEL,
    by: str | Sequence[str] | None = None,
    case_sensitive: bool = False,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    name: str | None = None,
    top_confusions: int = TOP_CONFUSIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> Report:
    """Measure a results table (DataFrame, or path to Parquet/CSV) against its labels.

    ``label`` names the label column; without one (the default ``"label"`` absent, or
    None) the report shows solved rate, latency, throughput, cost and failures, and
    says accuracy needs labels. ``by`` names columns to group by (label length is added
    for text answers). ``case_sensitive`` decides the headline ``accuracy`` of text;
    ``exact_accuracy`` and ``ci_accuracy`` are always given. Answers other than text
    (object sets, distances, angles, boxes: ``metrics_types``) are judged with
    ``tolerance`` (px for distances and points, degrees for angles) and
    ``iou_threshold`` (boxes). Relative image paths resolve against ``base_dir``
    (default: the results file's folder, or the working directory for a DataFrame).
    Raises ``TableError`` for an unreadable table or a missing label column named
    other than ``"label"``, ``ConfigError`` for a bad tolerance or threshold.
    """
    judge = scoring(tolerance, iou_threshold)
    columns = [by] if isinstance(by, str) else list(by or ())
    if isinstance(results, pd.DataFrame):
        frame, source = results, None
    else:
        source = Path(results)
        frame = read_table(source)
    return Report(
        frame,
        label=resolve_label(frame, label),
        by=columns,
        case_sensitive=case_sensitive,
        source=source,
        base_dir=None if base_dir is None else Path(base_dir),
        image_column=image_column,
        name=name,
        top=top_confusions,
        scoring=judge,
    )
