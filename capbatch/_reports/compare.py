"""Comparing runs: ``compare()`` matches the rows of two or more results tables and
returns a ``Comparison``.

Rows are matched by an id column, else by image (the image column's values, or the
SHA-256 of the image bytes); the same metrics as a ``Report``'s are put side by side,
over the matched rows, with the agreement between runs and the rows where they
disagree. Each run is read and scored as its own ``Report`` first (``report``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from capbatch._exceptions import ConfigError, RowInputError, TableError
from capbatch._io.inputs import ID_COLUMN_NAMES
from capbatch._io.keys import image_hash
from capbatch._io.labels import DEFAULT_IOU_THRESHOLD, DEFAULT_TOLERANCE
from capbatch._reports import cascade_curve as _cascade
from capbatch._reports import metrics as _metrics
from capbatch._reports import metrics_types as _types
from capbatch._reports.report import DEFAULT_LABEL, Report, Results, Shown, require_column
from capbatch._reports.report import report as make_report
from capbatch._reports.tables import agreement
from capbatch._version import __version__


def _match_keys(reports: Sequence[Report], id_column: str | None) -> tuple[str, list[pd.Series]]:
    """How rows are matched across runs: an id column, image values, or image hashes."""
    frames = [r.results for r in reports]
    column = id_column
    if id_column is not None:
        for r in reports:
            require_column(r.results, id_column, "id", repr(r.name))
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


class Comparison(Shown):
    """Two or more runs over the same rows, side by side (made by ``capbatch.compare``).

    Rows are matched by ``key`` (an id column, the image column's values, or
    ``image_sha256``); metrics are over the matched rows. Attributes: ``names``,
    ``reports`` (name -> Report over its whole table), ``summary`` (one row per run),
    ``groups`` (column -> rows per run and value), ``errors``, ``matched`` (key, label
    and each run's answer per matched row), ``agree`` (all runs agree, per matched row),
    ``agreement`` (its share), ``pairs`` (agreement of each pair of runs),
    ``disagreements``, ``notes`` and ``cascade`` (``cascade_curve.CascadeCurve``: a
    local run's readings in front of a provider's answers, per confidence threshold,
    with the recommended threshold; None unless one table has local readings, another
    a provider's answers, and there are labels); ``kinds`` (the kinds of answer of all runs) and
    ``has_labels`` (any run has a label column) decide what is shown (``columns``).
    """

    def _render(self, *, fragment: bool) -> str:
        from capbatch._reports import html as _report_html

        if fragment:
            return _report_html.comparison_fragment(self)
        return _report_html.comparison_page(self)

    def __init__(
        self,
        reports: Sequence[Report],
        names: Sequence[str] | None,
        id_column: str | None,
        within: float = _cascade.DEFAULT_WITHIN,
    ) -> None:
        if len(reports) < 2:
            raise ConfigError("compare needs two or more results tables")
        self.key, keys = _match_keys(reports, id_column)
        self.names = _names(reports, names, {self.key, "label"})
        self.reports = dict(zip(self.names, reports, strict=True))
        self.case_sensitive = reports[0].case_sensitive
        self.has_labels = any(r.has_labels for r in reports)
        seen = {kind for r in reports for kind in r.kinds}
        self.kinds = [k for k in _types.KINDS if k in seen]
        self.notes: list[str] = []
        firsts = [self._first_of_each(n, k) for n, k in zip(self.names, keys, strict=True)]
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
                "label": first.results[first.label].iloc[at].to_numpy()
                if first.label is not None
                else np.full(len(at), None, dtype=object),
            }
        )
        for name, report in self.reports.items():
            self.matched[name] = report.results["answer"].iloc[self.positions[name]].to_numpy()
        self.correct = pd.DataFrame({n: s["correct"].to_numpy() for n, s in scored.items()})
        normalised = pd.DataFrame({n: s["answer"].to_numpy() for n, s in scored.items()})
        self.agree, self.pairs = agreement(normalised)
        self.agreement = float(self.agree.mean()) if len(self.agree) else math.nan
        self.disagreements = self.matched[~self.agree.to_numpy()]
        self.cascade = self._cascade(within)

    def _cascade(self, within: float) -> _cascade.CascadeCurve | None:
        """The cascade curve of the first table with local readings in front of the
        first table a provider answered (``cascade_curve.cascade_pair``), if any."""
        pair = _cascade.cascade_pair(list(self.reports.values()))
        if pair is None:
            return None
        local, paid = (self.names[i] for i in pair)
        curve = _cascade.cascade_curve(
            self.reports[local],
            self.positions[local],
            self.reports[paid],
            self.positions[paid],
            names=(local, paid),
            within=within,
        )
        if curve is None:
            self.notes.append(
                f"no cascade curve of {local} in front of {paid}: it needs labelled rows "
                "both ran (name the label column with --label-column)"
            )
        return curve

    def columns(self, columns: Sequence[str] = _metrics.SUMMARY_COLUMNS) -> list[str]:
        """The summary ``columns`` that mean something for these runs' kinds and labels."""
        return _types.relevant(columns, self.kinds, self.has_labels)

    def _first_of_each(self, name: str, keys: pd.Series) -> pd.Series:
        """Row positions indexed by key, the first row of each key value (rows without
        a key are left out; a note says how many repeats were)."""
        present = _metrics.flag(keys.notna())
        index = pd.Series(np.flatnonzero(present), index=keys[present].to_numpy())
        duplicated = index.index.duplicated()
        if duplicated.any():
            self.notes.append(
                f"{name}: {int(duplicated.sum())} rows repeat a {self.key} "
                "value; only the first of each is compared"
            )
        first: pd.Series = index[~duplicated]
        return first

    def __repr__(self) -> str:
        agreement = _metrics.fmt("agreement", self.agreement)
        runs = ", ".join(map(repr, self.names))
        return f"<Comparison of {runs}: {len(self.matched):,} matched rows, agreement {agreement}>"

    def to_dict(self) -> dict[str, Any]:
        """Everything the comparison shows except the full row tables, JSON-ready."""
        return {
            "runs": self.names,
            "key": self.key,
            "kinds": list(self.kinds),
            "has_labels": self.has_labels,
            "matched_rows": len(self.matched),
            "agreement": _metrics.jsonable(self.agreement),
            "disagreements": len(self.disagreements),
            "pairs": _metrics.records(self.pairs),
            "notes": list(self.notes),
            "summary": _metrics.records(self.summary),
            "groups": {c: _metrics.records(f.reset_index()) for c, f in self.groups.items()},
            "errors": _metrics.records(self.errors),
            "cascade": None if self.cascade is None else self.cascade.to_dict(),
            "capbatch_version": __version__,
        }


def compare(
    *results: Results,
    names: Sequence[str] | None = None,
    label: str | None = DEFAULT_LABEL,
    by: str | Sequence[str] | None = None,
    case_sensitive: bool = False,
    id_column: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    within: float = _cascade.DEFAULT_WITHIN,
) -> Comparison:
    """Compare two or more runs over the same rows (e.g. two providers, local vs service).

    Rows are matched by ``id_column``, else by an id column all tables have (``id``,
    ``row_id``, ``uuid``, ``key``), else by the image column's values when all tables
    share it as text, else by the SHA-256 of the image bytes. Names default to the file
    stems. Other arguments are as for ``report`` (a table without the default ``"label"``
    column is compared without labels: agreement, latency, cost and failures).

    When one table has local readings (a local run's ``answer`` and ``confidence``, or a
    cascade run's ``local_answer`` and ``local_confidence``) and another a provider's
    answers, ``Comparison.cascade`` is the cascade curve over the labelled matched
    rows: per confidence threshold, the accuracy and cost per 1,000 rows of answering
    locally at or above it and paying the provider for the rest, and the cheapest
    threshold whose accuracy is at most ``within`` percentage points below the
    provider's. Raises ``ConfigError`` for a negative ``within``.
    """
    if not (isinstance(within, (int, float)) and math.isfinite(within) and within >= 0):
        raise ConfigError(f"within must be a number of percentage points >= 0, not {within!r}")
    reports = [
        make_report(
            r,
            label,
            by,
            case_sensitive,
            base_dir=base_dir,
            tolerance=tolerance,
            iou_threshold=iou_threshold,
        )
        for r in results
    ]
    return Comparison(reports, names, id_column, float(within))
