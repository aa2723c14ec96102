"""``capbatch feedback``: report a results file's wrong answers to the provider.

A row is wrong when it was solved, has a label, and its answer does not match the
label by the report's rule (``_reports.metrics.score``: surrounding whitespace ignored,
case-insensitive unless the run asked the provider for case, ``--task-param case=true``,
or ``--case-sensitive`` says so). Each wrong row's task is reported once
(``_run.feedback``); what stops the command goes through the one error mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capbatch._cli.errors import command_errors, echo_err
from capbatch._exceptions import ConfigError
from capbatch._providers.profiles import PROVIDERS

if TYPE_CHECKING:
    import pandas as pd

#: Rows listed by name as not reportable; the rest are counted.
_SHOWN_REASONS = 10


@click.command("feedback")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--label-column", default="label", show_default=True, help="Column holding the true answers."
)
@click.option(
    "--provider",
    type=click.Choice(sorted(PROVIDERS)),
    help="Recognition service the tasks were sent to [default: the run's].",
)
@click.option("--base-url", help="Provider API base URL [default: the run's].")
@click.option(
    "--api-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File whose first line is the API key [default: the provider's env variable].",
)
@click.option(
    "--journal",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The run's journal [default: RESULTS_STEM.journal.sqlite beside RESULTS].",
)
@click.option("--rate", type=float, help="Requests per second [default: the provider's].")
@click.option(
    "--case-sensitive",
    is_flag=True,
    default=None,
    help="Count an answer as wrong when only its case differs [default: as the run asked].",
)
@command_errors()
def feedback(
    results: Path,
    label_column: str,
    provider: str | None,
    base_url: str | None,
    api_key_file: Path | None,
    journal: Path | None,
    rate: float | None,
    case_sensitive: bool | None,
) -> None:
    """Report the rows whose answer does not match the label to the provider.

    RESULTS is the output of `capbatch run` (Parquet or CSV) with a label column.
    Each task is reported at most once (the run's journal remembers it), within the
    provider's window (Anti-Captcha: 60 s after the task finished; use `capbatch run
    --report-wrong` for it). Writes the `reported` column and prints a summary line.
    """
    from capbatch._providers.profiles import check_base_url, get_profile
    from capbatch._providers.secrets import load_key
    from capbatch._reports.report import read_table, require_column, run_info
    from capbatch._run.feedback import feedback as send_feedback
    from capbatch._run.options import default_journal

    frame = read_table(results)
    require_column(frame, label_column, "label", str(results))
    require_column(frame, "answer", "answer", str(results))
    run = run_info(results, frame)
    settings = run["settings"]
    profile = get_profile(provider or run.get("provider") or "capsolver")
    url = base_url or (settings.get("base_url") if run.get("provider") == profile.name else None)
    if url:
        check_base_url(url)
    key = None if profile.is_local else load_key(env_var=profile.key_env_var, key_file=api_key_file)
    rows = _rows(frame, label_column, _case(case_sensitive, settings))
    if any(rows.wrong) and not profile.is_local and not key:
        raise ConfigError(
            f"no API key for {profile.name}: set {profile.key_env_var} or pass --api-key-file"
        )
    done = send_feedback(
        results,
        rows,
        profile=profile,
        key=key,
        base_url=url,
        journal_path=journal or Path(default_journal(results)),
        rate=rate,
    )
    for task_id, reason in list(done.counts.reasons.items())[:_SHOWN_REASONS]:
        echo_err(f"capbatch: not reportable: task {task_id}: {reason}")
    if len(done.counts.reasons) > _SHOWN_REASONS:
        echo_err(f"capbatch: ... and {len(done.counts.reasons) - _SHOWN_REASONS} more")
    click.echo(done.line())


def _case(flag: bool | None, settings: dict[str, Any]) -> bool:
    """Case-sensitive when asked here, else when the run asked the provider for case."""
    from capbatch._io.labels import case_sensitive_run

    return flag if flag is not None else case_sensitive_run(settings.get("task_params"))


def _rows(frame: pd.DataFrame, label: str, case_sensitive: bool) -> Any:
    """Which rows are wrong (the report's rule), their task ids and finish times."""
    import pandas as pd

    from capbatch._reports.metrics import score
    from capbatch._run.feedback import Rows

    scored = score(frame, label, case_sensitive=case_sensitive)
    wrong = (scored["labelled"] & scored["solved"] & ~scored["correct"]).tolist()
    task_ids = [
        str(t) if isinstance(t, str) and t else None
        for t in frame.get("task_id", pd.Series(None, index=frame.index)).tolist()
    ]
    stamps = pd.to_datetime(
        frame.get("finished_at", pd.Series(None, index=frame.index)), utc=True, errors="coerce"
    )
    finished = [None if pd.isna(t) else t.timestamp() for t in stamps]
    return Rows(wrong, task_ids, finished)
