"""Reports on results tables: ``report()`` for one run, ``compare()`` for two or more.

A report reads a results table (the runner's output, Parquet or CSV, or a DataFrame),
scores every row against its label column (``_metrics`` has the definitions) and keeps
the tables a reader wants: ``summary`` (one row), ``groups`` (per ``by`` column and per
label length), ``errors`` (failures by code) and ``confusions`` (label character ->
answer character). ``notes`` say what to keep in mind, e.g. that the run stopped
part-way. ``to_html`` writes one self-contained page (``_report_html``).

``compare`` matches the rows of several runs (by an id column, else by image) and puts
the same metrics side by side, with the agreement between runs and the rows where they
disagree.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from . import _metrics
from ._exceptions import ConfigError, TableError
from ._images import image_hash, resolve_image
from ._inputs import ID_COLUMN_NAMES, IMAGE_COLUMN_NAMES
from ._outputs import RESULT_SCHEMA, run_metadata
from ._version import __version__

Results: TypeAlias = "pd.DataFrame | str | os.PathLike[str]"

TOP_CONFUSIONS = 20
_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)
# CSV output prefixes answers a spreadsheet would run as a formula with "'"; undo it.
_CSV_GUARD = r"^'([=+\-@\t\r])"


def _columns_hint(frame: pd.DataFrame, wanted: str) -> str:
    names = [str(c) for c in frame.columns]
    near = [n for n in names if n.lower() == wanted.lower()]
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{hint}; columns: {', '.join(map(repr, names))}"


def read_table(path: Path, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a results file; ``text_columns`` stay text in CSV (a label ``0123`` is no int)."""
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TableError(f"cannot tell the format of {path}: use .parquet or .csv")
    if not path.is_file():
        raise TableError(f"results file not found: {path}")
    try:
        if fmt == "parquet":
            return pq.read_table(path).to_pandas()
        types = {f.name: f.type for f in RESULT_SCHEMA}
        types.update({name: pa.string() for name in text_columns})
        options = pa_csv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        table = pa_csv.read_csv(path, convert_options=options)
        if "answer" in table.column_names:
            guarded = pc.replace_substring_regex(
                table["answer"], pattern=_CSV_GUARD, replacement=r"\1"
            )
            table = table.set_column(table.column_names.index("answer"), "answer", guarded)
        return table.to_pandas()
    except _READ_ERRORS as exc:
        message = " ".join(str(exc).split())[:300]
        raise TableError(f"cannot read {path} as {fmt.upper()}: {message}") from exc


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def run_info(source: Path | None, frame: pd.DataFrame) -> dict[str, Any]:
    """What the run said about itself: provider, task type, settings and its summary."""
    if source is None:
        summary = frame.attrs.get("capbatch")
        summary = summary if isinstance(summary, dict) else {}
        return {"provider": summary.get("provider"), "task_type": summary.get("task_type"),
                "settings": {}, "summary": summary}  # fmt: skip
    try:
        meta = run_metadata(source)
    except _READ_ERRORS:
        meta = {}
    settings, summary = _json(meta.get("capbatch.settings")), _json(meta.get("capbatch.run"))
    return {
        "provider": meta.get("capbatch.provider"),
        "task_type": meta.get("capbatch.task_type"),
        "version": meta.get("capbatch.version"),
        "settings": settings if isinstance(settings, dict) else {},
        "summary": summary if isinstance(summary, dict) else {},
    }


def _notes(frame: pd.DataFrame, scored: pd.DataFrame, run: dict[str, Any]) -> tuple[list[str], bool]:
    """Notes for the reader and whether the run stopped part-way."""
    notes: list[str] = []
    summary = run.get("summary") or {}
    recorded = summary.get("rows")
    if isinstance(recorded, int) and recorded > len(frame):
        notes.append(f"the run recorded {recorded} rows but the table has {len(frame)}: "
                     "this reports on the rows present")  # fmt: skip
    if summary.get("stopped_by"):
        notes.append(f"the run was stopped by {summary['stopped_by']}")
    no_result = int(scored["error_code"].isna().sum() - scored["ran"].sum())
    spend_cap = int((scored["error_code"] == "SPEND_CAP_REACHED").sum())
    if spend_cap:
        notes.append(f"{spend_cap} rows not sent: the spend cap was reached")
    if no_result:
        notes.append(f"{no_result} rows have no result: the run did not reach them")
    partial = bool(notes)
    if partial:
        notes.insert(0, "the run stopped part-way: rows that did not run are left out of "
                        "every rate and counted as not_run")  # fmt: skip
    if "status" not in frame.columns:
        notes.append("no status column: rows with an answer count as solved")
    unlabelled = int(scored["unlabelled"].sum())
    if unlabelled:
        notes.append(f"{unlabelled} rows have no label: reported as unlabelled, not scored")
    if len(frame) and not scored["labelled"].any():
        notes.append("no labelled rows that ran: accuracy cannot be measured")
    return notes, partial


def _image_column(frame: pd.DataFrame, wanted: str | None, skip: Sequence[str]) -> str | None:
    if wanted is not None:
        if wanted not in frame.columns:
            raise TableError(f"image column {wanted!r} is not in the table"
                             + _columns_hint(frame, wanted))  # fmt: skip
        return wanted
    for candidate in IMAGE_COLUMN_NAMES:
        for name in frame.columns:
            if str(name).lower() == candidate and name not in skip:
                return str(name)
    return None


def jsonable(value: Any) -> Any:
    """A value fit for ``json.dumps``: NaN and NA become None, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` (index included when named) as JSON-ready dicts."""
    flat = frame.reset_index() if frame.index.name is not None else frame
    return [jsonable(row) for row in flat.to_dict(orient="records")]


class Report:
    """Accuracy, latency and cost of one results table (made by ``capbatch.report``).

    Attributes: ``summary`` (one row, ``all``, of ``_metrics.SUMMARY_COLUMNS``),
    ``groups`` (column -> one row per value), ``errors``, ``confusions``, ``notes``,
    ``partial`` (the run stopped part-way), ``run`` (provider, settings and the run's
    own summary from the file's metadata), ``results`` (the table as read) and
    ``scored`` (one row of flags per row).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        label: str = "label",
        by: Sequence[str] = (),
        case_sensitive: bool = False,
        source: Path | None = None,
        base_dir: Path | None = None,
        image_column: str | None = None,
        name: str | None = None,
        top: int = TOP_CONFUSIONS,
    ) -> None:
        if label not in frame.columns:
            raise TableError(f"label column {label!r} is not in the table"
                             + _columns_hint(frame, label))  # fmt: skip
        if "answer" not in frame.columns:
            raise TableError("not a results table: no 'answer' column (make one with "
                             "`capbatch run`)" + _columns_hint(frame, "answer"))  # fmt: skip
        for column in by:
            if column not in frame.columns and column != _metrics.LABEL_LENGTH:
                raise TableError(f"group column {column!r} is not in the table"
                                 + _columns_hint(frame, column))  # fmt: skip
        self.source = source
        self.name = name or (source.name.split(".")[0] if source is not None else "results")
        self.label = label
        self.case_sensitive = case_sensitive
        self.by = tuple(dict.fromkeys([*by, _metrics.LABEL_LENGTH]))
        self.base_dir = base_dir or (source.parent if source is not None else Path.cwd())
        self.image_column = _image_column(frame, image_column, (label, "answer"))
        self.results = frame
        self.run = run_info(source, frame)
        if "status" not in frame.columns:
            answered = frame["answer"].notna()
            frame = frame.assign(status=np.where(answered, "solved", "failed"))
        self.scored = _metrics.score(frame, label, case_sensitive=case_sensitive, by=self.by)
        self.summary = _metrics.aggregate(self.scored)
        self.groups = {column: self.grouped(column) for column in self.by}
        self.errors = _metrics.errors_by_code(self.scored)
        wrong = self.wrong_rows()
        wrong = wrong[self.scored["answer"].to_numpy()[wrong].astype(bool)] if wrong.size else wrong
        self.confusions = _metrics.confusions(
            self.scored["answer"].iloc[wrong].tolist(), self.scored["label"].iloc[wrong].tolist(),
            top,
        )
        self.notes, self.partial = _notes(self.results, self.scored, self.run)

    def __repr__(self) -> str:
        rows = int(self.summary["rows"].iloc[0])
        return f"<Report {self.name!r}: {rows} rows, accuracy {self.metrics()['accuracy']}>"

    def grouped(self, column: str) -> pd.DataFrame:
        """The summary metrics per value of ``column`` (any column of the table)."""
        scored = self.scored
        if column not in scored.columns:
            if column not in self.results.columns:
                raise TableError(f"group column {column!r} is not in the table"
                                 + _columns_hint(self.results, column))  # fmt: skip
            scored = scored.assign(**{column: self.results[column]})
        return _metrics.aggregate(scored, column)

    def wrong_rows(self) -> np.ndarray:
        """Positions of labelled rows that ran and are not correct, in table order."""
        return np.flatnonzero(self.scored["labelled"] & ~self.scored["correct"])

    def wrong_answers(self) -> pd.DataFrame:
        """The rows of the table whose answer is wrong (failed rows included)."""
        return self.results.iloc[self.wrong_rows()]

    def metrics(self) -> dict[str, Any]:
        """The overall metrics as a JSON-ready dict."""
        return records(self.summary)[0]

    def to_dict(self) -> dict[str, Any]:
        """Everything the report shows, JSON-ready (NaN as None)."""
        return {
            "name": self.name,
            "source": None if self.source is None else str(self.source),
            "label_column": self.label,
            "case_sensitive": self.case_sensitive,
            "partial": self.partial,
            "notes": list(self.notes),
            "run": jsonable({k: v for k, v in self.run.items() if k != "summary"}),
            "summary": self.metrics(),
            "groups": {column: records(frame) for column, frame in self.groups.items()},
            "errors": records(self.errors),
            "confusions": records(self.confusions),
            "capbatch_version": __version__,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """The self-contained HTML page; written to ``path`` (UTF-8) when given."""
        from ._report_html import report_page, write_page

        page = report_page(self)
        if path is not None:
            write_page(Path(path), page)
        return page

    def _repr_html_(self) -> str:
        from ._report_html import report_fragment

        return report_fragment(self)


def report(
    results: Results,
    label: str = "label",
    by: str | Sequence[str] | None = None,
    case_sensitive: bool = False,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    name: str | None = None,
    top_confusions: int = TOP_CONFUSIONS,
) -> Report:
    """Measure a results table (DataFrame, or path to Parquet/CSV) against its labels.

    ``by`` names columns to group by (label length is always added). ``case_sensitive``
    decides the headline ``accuracy``; ``exact_accuracy`` and ``ci_accuracy`` are always
    given. Relative image paths resolve against ``base_dir`` (default: the results
    file's folder, or the working directory for a DataFrame). Raises ``TableError`` for
    an unreadable table or a missing label column.
    """
    columns = [by] if isinstance(by, str) else list(by or ())
    if isinstance(results, pd.DataFrame):
        frame, source = results, None
    else:
        source = Path(results)
        id_columns = [c for c in ID_COLUMN_NAMES if c not in columns]
        frame = read_table(source, [label, *columns, *id_columns])
    return Report(
        frame,
        label=label,
        by=columns,
        case_sensitive=case_sensitive,
        source=source,
        base_dir=None if base_dir is None else Path(base_dir),
        image_column=image_column,
        name=name,
        top=top_confusions,
    )


from ._report_compare import Comparison, compare  # noqa: E402  (re-exported)

__all__ = ["Comparison", "Report", "compare", "report"]
