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

from capbatch._exceptions import ConfigError, RowInputError, TableError
from capbatch._io.images import INPUT_FILE_NOT_FOUND, resolve_image
from capbatch._io.inputs import ID_COLUMN_NAMES, IMAGE_COLUMN_NAMES
from capbatch._io.keys import image_hash
from capbatch._io.outputs import output_format, read_results, run_metadata
from capbatch._reports import metrics as _metrics
from capbatch._version import __version__

Results: TypeAlias = "pd.DataFrame | str | os.PathLike[str]"

TOP_CONFUSIONS = 20
#: The largest image a report reads (thumbnails, matching rows by image hash). A file's
#: size is checked with ``stat`` before it is read and only regular files are read, so
#: a huge file, a FIFO or a device in the image column cannot stall or swamp a report.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


def _require(frame: pd.DataFrame, column: str, role: str, where: str = "the table") -> None:
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
    """What the run said about itself: provider, task type, settings and its summary."""
    if source is None:
        summary = frame.attrs.get("capbatch")
        summary = summary if isinstance(summary, dict) else {}
        return {
            "provider": summary.get("provider"),
            "task_type": summary.get("task_type"),
            "settings": {},
            "summary": summary,
        }
    try:
        meta = run_metadata(source)
    except _READ_ERRORS:
        meta = {}
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
        _require(frame, wanted, "image")
        return wanted
    for candidate in IMAGE_COLUMN_NAMES:
        for name in frame.columns:
            if str(name).lower() == candidate and name not in skip:
                return str(name)
    return None


class _Shown:
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


class Report(_Shown):
    """Accuracy, latency and cost of one results table (made by ``capbatch.report``).

    Attributes: ``summary`` (one row, ``all``, of ``_metrics.SUMMARY_COLUMNS``),
    ``groups`` (column -> one row per value), ``errors``, ``confusions``, ``notes``,
    ``partial`` (the run stopped part-way), ``run`` (provider, settings and the run's
    own summary from the file's metadata), ``results`` (the table as read) and
    ``scored`` (one row of flags per row).
    """

    def _render(self, *, fragment: bool) -> str:
        from capbatch._reports import html as _report_html

        return _report_html.report_fragment(self) if fragment else _report_html.report_page(self)

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
        _require(frame, label, "label")
        _require(frame, "answer", "result", "the table (is it the output of `capbatch run`?)")
        for column in by:
            if column != _metrics.LABEL_LENGTH:
                _require(frame, column, "group")
        self.source = source
        self.name = name or (_stem(source) if source is not None else "results")
        self.label = label
        self.case_sensitive = case_sensitive
        self.by = tuple(dict.fromkeys([*by, _metrics.LABEL_LENGTH]))
        dirs = [base_dir] if base_dir is not None else [source.parent] if source else []
        self.results = frame
        self.run = run_info(source, frame)
        if base_dir is None and self.run.get("input"):
            dirs.append(Path(self.run["input"]).parent)
        self.image_dirs = list(dict.fromkeys([*dirs, Path.cwd()] if base_dir is None else dirs))
        self.image_column = _image_column(frame, image_column, (label, "answer"))
        if "status" not in frame.columns:
            answered = frame["answer"].notna()
            frame = frame.assign(status=np.where(answered, "solved", "failed"))
        self.scored = _metrics.score(frame, label, case_sensitive=case_sensitive, by=self.by)
        self.summary = _metrics.aggregate(self.scored)
        self.groups = {column: self.grouped(column) for column in self.by}
        self.errors = _metrics.errors_by_code(self.scored)
        wrong = self.wrong_rows()
        answers, labels = self.scored["answer"].iloc[wrong], self.scored["label"].iloc[wrong]
        given = _metrics.flag(answers.str.len() > 0)
        self.confusions = _metrics.confusions(answers[given].tolist(), labels[given].tolist(), top)
        self.notes, self.partial = _metrics.notes(self.results, self.scored, self.run)

    def __repr__(self) -> str:
        s = self.summary.iloc[0]
        accuracy = _metrics.fmt("accuracy", s["accuracy"])
        return f"<Report {self.name!r}: {int(s['rows']):,} rows, accuracy {accuracy}>"

    def grouped(self, column: str) -> pd.DataFrame:
        """The summary metrics per value of ``column`` (any column of the table)."""
        scored = self.scored
        if column not in scored.columns:
            _require(self.results, column, "group")
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
            "partial": self.partial,
            "notes": list(self.notes),
            "run": _metrics.jsonable({k: v for k, v in self.run.items() if k != "summary"}),
            "summary": self.metrics(),
            "groups": {column: _metrics.records(frame) for column, frame in self.groups.items()},
            "errors": _metrics.records(self.errors),
            "confusions": _metrics.records(self.confusions),
            "capbatch_version": __version__,
        }


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
        frame = read_table(source)
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


def _match_keys(reports: Sequence[Report], id_column: str | None) -> tuple[str, list[pd.Series]]:
    """How rows are matched across runs: an id column, image values, or image hashes."""
    frames = [r.results for r in reports]
    column = id_column
    if id_column is not None:
        for r in reports:
            _require(r.results, id_column, "id", repr(r.name))
    else:
        column = next((c for c in ID_COLUMN_NAMES if all(c in f.columns for f in frames)), None)
    if column is not None:
        return column, [_metrics.text(f[column]) for f in frames]
    images = [r.image_column for r in reports]
    if None in images:
        lacking = reports[images.index(None)].name
        raise TableError(
            f"cannot match rows: the tables share no id column and {lacking!r} "
            "has no image column; name the id column"
        )
    first = images[0]
    assert first is not None
    if len(set(images)) == 1 and all(pd.api.types.is_string_dtype(f[first]) for f in frames):
        return first, [_metrics.text(f[first]).str.strip() for f in frames]
    return "image_sha256", [_image_hashes(r) for r in reports]


def _image_hashes(report: Report) -> pd.Series:
    """SHA-256 of each row's image bytes; missing where the image cannot be read."""
    assert report.image_column is not None
    hashes: list[str | None] = []
    for value in report.results[report.image_column].tolist():
        try:
            hashes.append(image_hash(report.image(value)))
        except RowInputError:
            hashes.append(None)
    return _metrics.text(pd.Series(hashes, index=report.results.index, dtype=object))


def _names(reports: Sequence[Report], names: Sequence[str] | None, taken: set[str]) -> list[str]:
    if names is not None:
        if len(names) != len(reports):
            raise ConfigError(f"{len(names)} names for {len(reports)} results tables")
        wanted = [str(n) for n in names]
    else:
        wanted = [r.name for r in reports]
        if len(set(wanted)) < len(wanted):  # same stems: try whole file names
            wanted = [r.source.name if r.source is not None else r.name for r in reports]
    out: list[str] = []
    for name in wanted:
        unique, n = name, 1
        while unique in taken or unique in out:
            n += 1
            unique = f"{name} ({n})"
        out.append(unique)
    return out


class Comparison(_Shown):
    """Two or more runs over the same rows, side by side (made by ``capbatch.compare``).

    Rows are matched by ``key`` (an id column, the image column's values, or
    ``image_sha256``); metrics are over the matched rows. Attributes: ``names``,
    ``reports`` (name -> Report over its whole table), ``summary`` (one row per run),
    ``groups`` (column -> rows per run and value), ``errors``, ``matched`` (key, label
    and each run's answer per matched row), ``agree`` (all runs agree, per matched row),
    ``agreement`` (its share), ``pairs`` (agreement of each pair of runs),
    ``disagreements`` and ``notes``.
    """

    def _render(self, *, fragment: bool) -> str:
        from capbatch._reports import html as _report_html

        if fragment:
            return _report_html.comparison_fragment(self)
        return _report_html.comparison_page(self)

    def __init__(
        self, reports: Sequence[Report], names: Sequence[str] | None, id_column: str | None
    ) -> None:
        if len(reports) < 2:
            raise ConfigError("compare needs two or more results tables")
        self.key, keys = _match_keys(reports, id_column)
        self.names = _names(reports, names, {self.key, "label"})
        self.reports = dict(zip(self.names, reports, strict=True))
        self.notes: list[str] = []
        firsts = []
        for name, k in zip(self.names, keys, strict=True):
            present = _metrics.flag(k.notna())
            index = pd.Series(np.flatnonzero(present), index=k[present].to_numpy())
            duplicated = index.index.duplicated()
            if duplicated.any():
                self.notes.append(
                    f"{name}: {int(duplicated.sum())} rows repeat a {self.key} "
                    "value; only the first of each is compared"
                )
            firsts.append(index[~duplicated])
        common = firsts[0].index
        for index in firsts[1:]:
            common = common[common.isin(index.index)]
        self.positions = {
            n: f.loc[common].to_numpy() for n, f in zip(self.names, firsts, strict=True)
        }
        for name, report in self.reports.items():
            if (unmatched := len(report.results) - len(common)) > 0:
                self.notes.append(f"{name}: {unmatched} rows are not in every run: not compared")
            self.notes += [f"{name}: {note}" for note in report.notes]
        scored = {n: r.scored.iloc[self.positions[n]] for n, r in self.reports.items()}
        self.summary = pd.concat([_metrics.aggregate(s) for s in scored.values()])
        self.summary.index = pd.Index(self.names, name="run")
        self.groups = {
            column: pd.concat(
                {n: _metrics.aggregate(s, column) for n, s in scored.items()}, names=["run"]
            )
            for column in reports[0].by
            if all(column in s.columns for s in scored.values())
        }
        self.errors = pd.concat(
            [_metrics.errors_by_code(s).assign(run=n) for n, s in scored.items()],
            ignore_index=True,
        )[["run", "error_code", "rows", "share"]]
        first = reports[0]
        at = self.positions[self.names[0]]
        self.matched = pd.DataFrame(
            {
                self.key: keys[0].iloc[at].to_numpy(),
                "label": first.results[first.label].iloc[at].to_numpy(),
            }
        )
        for name, report in self.reports.items():
            self.matched[name] = report.results["answer"].iloc[self.positions[name]].to_numpy()
        self.correct = pd.DataFrame({n: s["correct"].to_numpy() for n, s in scored.items()})
        normalised = pd.DataFrame({n: s["answer"].to_numpy() for n, s in scored.items()})
        self.agree, self.pairs = _metrics.agreement(normalised)
        self.agreement = float(self.agree.mean()) if len(self.agree) else math.nan
        self.disagreements = self.matched[~self.agree.to_numpy()]

    def __repr__(self) -> str:
        agreement = _metrics.fmt("agreement", self.agreement)
        runs = ", ".join(map(repr, self.names))
        return f"<Comparison of {runs}: {len(self.matched):,} matched rows, agreement {agreement}>"

    def to_dict(self) -> dict[str, Any]:
        """Everything the comparison shows except the full row tables, JSON-ready."""
        return {
            "runs": self.names,
            "key": self.key,
            "matched_rows": len(self.matched),
            "agreement": _metrics.jsonable(self.agreement),
            "disagreements": len(self.disagreements),
            "pairs": _metrics.records(self.pairs),
            "notes": list(self.notes),
            "summary": _metrics.records(self.summary),
            "groups": {c: _metrics.records(f.reset_index()) for c, f in self.groups.items()},
            "errors": _metrics.records(self.errors),
            "capbatch_version": __version__,
        }


def compare(
    *results: Results,
    names: Sequence[str] | None = None,
    label: str = "label",
    by: str | Sequence[str] | None = None,
    case_sensitive: bool = False,
    id_column: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Comparison:
    """Compare two or more runs over the same rows (e.g. two providers, local vs service).

    Rows are matched by ``id_column``, else by an id column all tables have (``id``,
    ``row_id``, ``uuid``, ``key``), else by the image column's values when all tables
    share it as text, else by the SHA-256 of the image bytes. Names default to the file
    stems. Other arguments are as for ``report``.
    """
    reports = [report(r, label, by, case_sensitive, base_dir=base_dir) for r in results]
    return Comparison(reports, names, id_column)

