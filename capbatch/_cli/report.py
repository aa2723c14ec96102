"""``capbatch report`` and ``capbatch compare``: a summary in the terminal, a page on disk.

Each command parses its flags, makes one library call (``report`` or ``compare``), prints
a summary table (or JSON with ``--json``) to stdout and writes the HTML page; what stops
it becomes one clean line on stderr and an exit status through ``errors.command_errors``
(2 for unreadable input, bad options or a page that cannot be written, as for every
command). pandas, rapidfuzz and the report machinery are imported when a command runs,
not when ``capbatch`` starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from capbatch._cli.errors import command_errors
from capbatch._exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from capbatch._reports.compare import Comparison
    from capbatch._reports.report import Report

F = TypeVar("F", bound=Callable[..., Any])

# The metrics the terminal table shows, in order; the page and --json have them all.
_TERMINAL = tuple(
    "rows labelled unlabelled not_run failed solved_rate accuracy accuracy_solved exact_accuracy"  # noqa: SIM905
    " ci_accuracy cer latency_p50_ms latency_p95_ms latency_p99_ms throughput_rps cost_usd"
    " cost_per_1000_usd cost_per_correct_usd".split()
)
_GROUP = {
    "rows": "rows",
    "solved_rate": "solved",
    "accuracy": "accuracy",
    "ci_accuracy": "ci accuracy",
    "cer": "CER",
    "set_exact_rate": "exact sets",
    "set_f1": "F1",
    "has_object_rate": "yes/no",
    **{f"{kind}_hit_rate": "within tol" for kind in ("distance", "angle", "point")},
    **{f"{kind}_error_p50": "error p50" for kind in ("distance", "angle", "point")},
    "box_hit_rate": "IoU hits",
    "iou_mean": "mean IoU",
    "latency_p50_ms": "p50",
    "latency_p95_ms": "p95",
    "cost_per_correct_usd": "$/correct",
}
NO_COST = "cost: none recorded (a local run, or a provider that reported no cost)"


def _shared_options(func: F) -> F:
    """The flags both commands take."""
    options = [
        click.option(
            "--label-column",
            default="label",
            show_default=True,
            help="Column holding the true answers. Without the default column the report "
            "shows solved rate, latency, cost and failures, and says accuracy needs labels.",
        ),
        click.option(
            "--by",
            "by",
            multiple=True,
            metavar="COL",
            help="Group metrics by this column, repeatable (label length too, for text).",
        ),
        click.option(
            "--case-sensitive",
            is_flag=True,
            help="Count an answer as correct only if its case matches too.",
        ),
        click.option(
            "--tolerance",
            type=click.FloatRange(min=0),
            default=5.0,
            show_default=True,
            help="Largest absolute error counted right for distances and points (px) "
            "and angles (degrees).",
        ),
        click.option(
            "--iou-threshold",
            type=click.FloatRange(min=0, max=1, min_open=True),
            default=0.5,
            show_default=True,
            help="Smallest intersection over union counted right for boxes.",
        ),
        click.option(
            "--base-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Folder relative image paths resolve against "
            "[default: the results file's folder, then the working directory].",
        ),
        click.option(
            "--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _grid(frame: pd.DataFrame, columns: Sequence[str], index_name: str) -> str:
    """A plain text table: index values (untrusted text, shown safely) and formatted cells."""
    from capbatch._reports.metrics import fmt, shown

    header = [index_name, *(_GROUP.get(c, c) for c in columns)]
    rows = [
        [
            shown(" · ".join(map(str, k)) if isinstance(k, tuple) else k, 30),
            *(fmt(c, v) for c, v in zip(columns, values, strict=True)),
        ]
        for k, values in zip(frame.index, frame[list(columns)].itertuples(index=False), strict=True)
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _metrics_block(summary: pd.DataFrame, columns: Sequence[str]) -> str:
    """Metrics as rows, one column per run (``all`` for a single report). Cost rows that
    are all zero give way to one line saying no cost was recorded."""
    from capbatch._reports.metrics import LABELS, fmt, shown

    free = not (summary["cost_usd"] > 0).any()
    columns = [c for c in columns if not (free and c.startswith("cost"))]
    width = max(len(LABELS[m]) for m in columns)
    names = [shown(n, 16) for n in summary.index]
    col = max(12, *(len(n) for n in names))
    out = ["metric".ljust(width) + "".join(f"  {n:>{col}}" for n in names)]
    for metric in columns:
        cells = "".join(f"  {fmt(metric, v):>{col}}" for v in summary[metric])
        out.append(LABELS[metric].ljust(width) + cells)
    return "\n".join([*out, NO_COST] if free else out)


def _shown_columns(view: Report | Comparison) -> tuple[list[str], list[str]]:
    """The terminal's summary rows and group columns for these kinds and labels."""
    from capbatch._reports.metrics_types import LABELS as TYPED

    free = not (view.summary["cost_usd"] > 0).any()
    groups = [c for c in view.columns(list(_GROUP)) if not (free and c.endswith("_usd"))]
    return view.columns([*_TERMINAL, *TYPED]), groups


def _group_lines(groups: dict[str, pd.DataFrame], columns: list[str]) -> list[str]:
    from capbatch._reports.metrics import shown

    lines = []
    for column, frame in groups.items():
        head = shown(column, 30) if frame.index.nlevels == 1 else f"run · {shown(column, 24)}"
        lines += ["", f"by {shown(column)}:", _grid(frame, columns, head)]
    return lines


def _print_report(rep: Report, page: Path) -> None:
    from capbatch._reports.metrics import shown

    lines = [f"results: {shown(rep.source or rep.name, 200)}"]
    run = rep.run
    if run.get("provider"):
        lines[0] += f" (provider {shown(run['provider'])}, {shown(run.get('task_type'))})"
    lines += [f"note: {shown(n, 300)}" for n in rep.notes]
    rows, group_columns = _shown_columns(rep)
    lines += ["", _metrics_block(rep.summary, rows)]
    lines += _group_lines(rep.groups, group_columns)
    lines += _cascade_lines(rep)
    if len(rep.errors):
        codes = ", ".join(
            f"{shown(c)} {n:,}"
            for c, n in zip(rep.errors["error_code"], rep.errors["rows"], strict=True)
        )
        lines += ["", f"failures by code: {codes}"]
    if len(rep.confusions):
        pairs = ", ".join(
            f"{shown(t)}→{shown(a)} {n}"
            for t, a, n in rep.confusions.head(10).itertuples(index=False)
        )
        lines += ["", f"top confusions (label→answer): {pairs}"]
    lines += ["", f"report: {page}"]
    click.echo("\n".join(lines))


@click.command("report")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="HTML page [default: RESULTS_STEM.report.html beside RESULTS].",
)
@_shared_options
@command_errors()
def report(
    results: Path,
    output: Path | None,
    label_column: str,
    by: tuple[str, ...],
    case_sensitive: bool,
    tolerance: float,
    iou_threshold: float,
    base_dir: Path | None,
    as_json: bool,
) -> None:
    """Measure accuracy, latency and cost of a results table against its labels.

    RESULTS is the output of `capbatch run` (Parquet or CSV), with a label column for
    accuracy. Text is scored by exact match and CER; object sets (tile indexes) by
    exact set match and micro-averaged precision, recall and F1; distances and angles
    by absolute error within --tolerance; boxes by IoU against --iou-threshold.
    Prints a summary (or JSON with --json) and writes a self-contained HTML page.
    Rows without a label are counted as unlabelled, not as wrong; a table without a
    label column is reported on speed, cost and failures.
    """
    from capbatch._reports.report import report as make_report

    rep = make_report(
        results,
        label_column,
        list(by),
        case_sensitive,
        base_dir=base_dir,
        tolerance=tolerance,
        iou_threshold=iou_threshold,
    )
    page = output or results.with_name(f"{rep.name}.report.html")
    _write_page(rep.to_html, page)
    if as_json:
        data = rep.to_dict()
        data["html"] = str(page)
        click.echo(_dumps(data))
    else:
        _print_report(rep, page)


@click.command("compare")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="HTML page [default: FIRST_STEM.compare.html beside the first RESULTS].",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="A name per results table, in order [default: the file stems].",
)
@click.option("--id-column", help="Column matching rows across runs [default: id, else images].")
@click.option(
    "--within",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="POINTS",
    help="The cascade curve (a local run's results beside a provider's) recommends the "
    "cheapest --local-first threshold whose accuracy is at most this many percentage "
    "points below the provider's.",
)
@_shared_options
@command_errors()
def compare(
    results: tuple[Path, ...],
    output: Path | None,
    names: tuple[str, ...],
    id_column: str | None,
    within: float,
    label_column: str,
    by: tuple[str, ...],
    case_sensitive: bool,
    tolerance: float,
    iou_threshold: float,
    base_dir: Path | None,
    as_json: bool,
) -> None:
    """Compare two or more runs over the same rows, side by side.

    For example two providers, or the local solver against a service. Rows are
    matched by an id column, else by image. Prints the metrics side by side, per
    group with --by (or JSON with --json), and writes a self-contained HTML page
    with the agreement between runs and the rows where they disagree, each row's
    image beside every run's answer. Answers are scored as by `capbatch report`.

    Given a local run's results (answers with a confidence, or a cascade run's) and a
    provider's, it also shows the cascade curve: per confidence threshold, the accuracy
    and cost per 1,000 rows of keeping the local answer at or above it and paying the
    provider for the rest, and names the cheapest threshold for `run --local-first`
    (see --within; README, Cascade).
    """
    if len(results) < 2:
        raise ConfigError("compare needs two or more results files")
    from capbatch._reports.compare import compare as make_comparison

    cmp = make_comparison(
        *results,
        names=names or None,
        label=label_column,
        by=list(by),
        case_sensitive=case_sensitive,
        id_column=id_column,
        base_dir=base_dir,
        tolerance=tolerance,
        iou_threshold=iou_threshold,
        within=within,
    )
    page = output or results[0].with_name(f"{_stem(results[0])}.compare.html")
    _write_page(cmp.to_html, page)
    if as_json:
        data = cmp.to_dict()
        data["html"] = str(page)
        click.echo(_dumps(data))
    else:
        _print_comparison(cmp, page)


def _print_comparison(cmp: Comparison, page: Path) -> None:
    from capbatch._reports.metrics import fmt, shown

    lines = [
        f"runs: {', '.join(shown(n) for n in cmp.names)}; "
        f"{len(cmp.matched):,} rows matched by {shown(cmp.key)}"
    ]
    lines += [f"note: {shown(n, 300)}" for n in cmp.notes]
    rows, group_columns = _shown_columns(cmp)
    lines += ["", _metrics_block(cmp.summary, rows), ""]
    lines += [
        f"agreement {shown(a)} / {shown(b)}: {fmt('agreement', r)} of {n:,} rows"
        for a, b, n, _, r in cmp.pairs.itertuples(index=False)
    ]
    lines.append(f"rows where the runs disagree: {len(cmp.disagreements):,}")
    lines += _group_lines(cmp.groups, group_columns)
    if cmp.cascade is not None:
        from capbatch._reports import cascade_view as view

        curve = cmp.cascade
        lines += ["", view.curve_title(curve) + ":", _text_table(view.curve_frame(curve))]
        lines += ["", view.recommendation(curve)]
    lines += ["", f"report: {page}"]
    click.echo("\n".join(lines))


def _cascade_lines(rep: Report) -> list[str]:
    """A report's confidence gate and, for a cascade run, its stages."""
    from capbatch._reports import cascade_view as view

    lines = []
    if (stages := view.stage_frame(rep)) is not None:
        lines += ["", "cascade stages:", _text_table(stages.reset_index())]
    if (gate := view.gate_frame(rep)) is not None:
        lines += ["", view.gate_title(rep) + ":", _text_table(gate)]
    return lines


def _text_table(frame: pd.DataFrame) -> str:
    """A table of text cells (already formatted): the first column left-aligned, the
    others right-aligned."""
    from capbatch._reports.metrics import shown

    rows = [[shown(c, 60) for c in frame.columns]]
    rows += [[shown(v, 60) for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(frame.columns))]
    aligned = [
        [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        for r in rows
    ]
    return "\n".join("  ".join(r).rstrip() for r in aligned)


def _stem(path: Path) -> str:
    """``captchas`` for ``captchas.results.parquet``, as the report names its page."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem.removesuffix(".results") or stem


def _write_page(write: Callable[[Path], object], page: Path) -> None:
    """Write the HTML page; a page that cannot be written is a usage error (exit 2)."""
    try:
        write(page)
    except OSError as error:
        where = error.filename or page
        raise ConfigError(f"cannot write {where}: {error.strerror or error}") from None


def _dumps(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
