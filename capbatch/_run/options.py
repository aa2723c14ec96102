"""Every option of a run (``RunOptions``), and what they resolve to before any request:
the provider, the key, the limits and the price (``resolve``), and the default places of
the output and the journal."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capbatch._exceptions import ConfigError
from capbatch._io.inputs import TableSource
from capbatch._io.record import RowResult
from capbatch._providers.client import TaskService
from capbatch._providers.profiles import CAPSOLVER, ProviderProfile, check_base_url, get_profile
from capbatch._providers.protocol import developer_id
from capbatch._providers.secrets import Secret, as_secret, load_key
from capbatch._run.callbacks import check_callback_flags
from capbatch._run.control import RunControl
from capbatch._run.limits import Limits
from capbatch._run.outage import DEFAULT_MAX_OUTAGE
from capbatch._run.ownership import default_output_path
from capbatch._run.progress import CallbackProgress, Progress, SilentProgress, TqdmProgress
from capbatch._run.retry import RetryPolicy
from capbatch._run.spend import check_money
from capbatch._run.tally import Tally
from capbatch._run.workspace import memory_journal

if TYPE_CHECKING:
    import httpx

ProgressOption = bool | Progress | Callable[[Tally, RowResult | None], None]


@dataclass
class RunOptions:
    """Every option of a run. ``run(source, **options)`` takes these as keywords."""

    output: str | os.PathLike[str] | None = None
    provider: str | None = None
    base_url: str | None = None
    api_key: str | Secret | None = field(default=None, repr=False)
    api_key_file: str | os.PathLike[str] | None = None
    image_column: str | None = None
    id_column: str | None = None
    task_type: str = "ImageToTextTask"
    task_params: Mapping[str, Any] = field(default_factory=dict)
    #: Task fields filled per row from columns: ``{"question": "question_col"}``
    #: (``--field FIELD=COLUMN``); each task type has defaults (``docs/task-types.md``).
    fields: Mapping[str, str] = field(default_factory=dict)
    rate: float | None = None
    max_in_flight: int | None = None
    max_attempts: int = 5
    max_spend: float | None = None
    price: float | None = None
    #: The developer id: CapSolver's ``appId`` (text), the others' ``softId`` (a number).
    app_id: str | int | None = None
    cache: bool = True
    dry_run: bool = False
    quiet: bool = False
    progress: ProgressOption = True
    journal: str | os.PathLike[str] | None = None
    http_client: httpx.AsyncClient | None = field(default=None, repr=False)
    service: TaskService | None = field(default=None, repr=False)
    batch_rows: int = 1024
    retry: RetryPolicy | None = None
    notice: Callable[[str], None] | None = field(default=None, repr=False)
    #: Pause/resume/stop switches (the notebook panel's buttons).
    control: RunControl | None = field(default=None, repr=False)
    #: Called with (0-based input row number, result) as each row becomes final.
    on_result: Callable[[int, RowResult], None] | None = field(default=None, repr=False)
    #: Stop gracefully on SIGINT/SIGTERM (the CLI sets it; only in the main thread).
    handle_signals: bool = False
    #: Seconds a stopped run waits for replies to requests in flight.
    drain_timeout: float = 30.0
    #: Seconds the provider may stay unreachable before the run stops (see ``outage.py``).
    outage_timeout: float = DEFAULT_MAX_OUTAGE
    #: Send again rows that failed for good in earlier runs (unsolvable, refused).
    retry_failed: bool = False
    #: Column of the input holding the true answers (for ``report_wrong``).
    label_column: str | None = None
    #: Report each answer that does not match its label as it arrives (``--report-wrong``).
    report_wrong: bool = False
    #: Where providers POST answers (the run's token is appended); needs ``callback_listen``.
    callback_url: str | None = None
    #: ``HOST:PORT`` the callback receiver listens on (loopback unless the next is set).
    callback_listen: str | None = None
    callback_listen_public: bool = False
    #: The cascade (``--local-first MIN_CONFIDENCE``): the local solver answers first and
    #: keeps answers at or above this confidence; only the rest go to the provider.
    local_first: float | None = None

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> RunOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown run option(s): {', '.join(unknown)}")
        return cls(**options)


@dataclass
class ResolvedRun:
    profile: ProviderProfile
    key: Secret | None
    limits: Limits
    price: float
    notices: list[str]


def resolve(options: RunOptions) -> ResolvedRun:
    """Provider, key, limits and price from the options, checked before any request."""
    notices: list[str] = []
    explicit_key = as_secret(options.api_key)
    if options.provider is None and options.service is None:
        key = explicit_key or load_key(env_var=CAPSOLVER.key_env_var, key_file=options.api_key_file)
        if key or options.base_url:
            profile = CAPSOLVER
        else:
            profile = get_profile("local")
            notices.append(
                "no provider given and no CAPSOLVER_API_KEY set: "
                "solving locally with ddddocr (free, offline)"
            )
    else:
        profile = get_profile(options.provider or "capsolver")
        key = explicit_key or load_key(env_var=profile.key_env_var, key_file=options.api_key_file)
    if not profile.is_local and options.service is None and not key:
        raise ConfigError(
            f"no API key for {profile.name}: set {profile.key_env_var} or pass --api-key-file"
        )
    limits = Limits(
        rate=options.rate if options.rate is not None else profile.default_rate,
        max_in_flight=options.max_in_flight or default_in_flight(profile),
        max_attempts=options.max_attempts,
        max_spend=options.max_spend,
    )
    try:
        check_money("--max-spend", options.max_spend)
        check_money("--price", options.price)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    price = options.price if options.price is not None else profile.price_for(options.task_type)
    if options.max_spend is not None and price <= 0 and not profile.is_local:
        # A cap counted at a price of 0 never stops anything.
        raise ConfigError(
            f"--max-spend needs the price of one {options.task_type} at {profile.name}, "
            "and capbatch does not know it: pass --price USD (what the provider charges "
            "per task)"
        )
    if options.base_url is not None:
        check_base_url(options.base_url)
    if options.report_wrong and not options.label_column:
        raise ConfigError("--report-wrong needs --label-column: the column of true answers")
    developer_id(profile, options.app_id)  # a softId that is not a number: refused here
    check_callback_flags(options, key, local=profile.is_local)
    if not options.outage_timeout > 0 or not math.isfinite(options.outage_timeout):
        raise ConfigError(
            f"--outage-timeout must be a number of seconds above 0, not {options.outage_timeout}"
        )
    if profile.is_local:
        from capbatch.local import check_task

        check_task(options.task_type, options.task_params)
    from capbatch._run.cascade import check_threshold

    check_threshold(options.local_first, options.task_type, provider_is_local=profile.is_local)
    return ResolvedRun(profile, key, limits, price, notices)


def default_in_flight(profile: ProviderProfile) -> int:
    if profile.is_local:
        return 2 * (os.cpu_count() or 1)
    return profile.default_max_in_flight


def default_output(source: object) -> Path | None:
    """``<input name>.results.parquet`` beside a file or folder input (``captchas.csv`` ->
    ``captchas.csv.results.parquet``; ``ownership.default_output_path``); None in memory."""
    if isinstance(source, (str, os.PathLike)):
        return default_output_path(Path(source))
    return None


def default_journal(output: Path | None, table: TableSource | None = None) -> str:
    """``<output stem>.journal.sqlite`` beside the output; without an output, a journal
    in the user cache folder named by the table's content (``workspace.memory_journal``)
    so that a crashed ``run(df)`` resumes; ``:memory:`` only when no table is given."""
    if output is None:
        return ":memory:" if table is None else str(memory_journal(table))
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    return str(output.with_name(f"{stem}.journal.sqlite"))


def make_progress(options: RunOptions) -> Progress:
    """The progress display the options ask for: tqdm, none, a callback or a ``Progress``."""
    choice = options.progress
    if options.quiet or choice is False:
        return SilentProgress()
    if choice is True:
        return TqdmProgress()
    if callable(choice) and not hasattr(choice, "update"):
        return CallbackProgress(choice)
    return choice  # type: ignore[return-value]
