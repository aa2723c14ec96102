"""The public run API: ``capbatch.run`` and ``capbatch.arun`` (the engine is
``capbatch._run.engine.execute``).

Each option of ``RunOptions`` is an explicit, typed keyword of ``run`` (and so of
``arun``, which takes ``run``'s list: ``_same_keywords_as``) with its default in
sight, so ``help(capbatch.run)`` and Jupyter's Shift-Tab show them; ``OPTION_DOCS``
says what each one does and is appended to both docstrings.
``RunOptions`` stays the one source of truth: ``tests/unit/test_api_signature.py``
fails when it gains a field these signatures (or ``OPTION_DOCS``) lack, or when a
type or default differs. A misspelt keyword is a ``ConfigError`` that suggests the
closest name (``unknown_options``), here and for the notebook panel's options.

``run`` also works inside Jupyter's running event loop, by running a private loop in a
worker thread (no global ``nest_asyncio`` patching).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import difflib
import functools
import inspect
import os
import textwrap
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pandas as pd

from capbatch._exceptions import ConfigError
from capbatch._run.engine import execute
from capbatch._run.options import ProgressOption, RunOptions
from capbatch._run.outage import DEFAULT_MAX_OUTAGE

if TYPE_CHECKING:
    import httpx

    from capbatch._io.record import RowResult
    from capbatch._providers.client import TaskService
    from capbatch._providers.secrets import Secret
    from capbatch._run.control import RunControl
    from capbatch._run.retry import RetryPolicy

__all__ = ["OPTION_DOCS", "RunOptions", "arun", "options_from", "run", "unknown_options"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: What each run option does, one entry per ``RunOptions`` field (a test checks).
OPTION_DOCS: dict[str, str] = {
    "output": "Results file (.parquet or .csv). Default: one named after a file input, "
    "beside it; none for a DataFrame or Arrow table (the results are returned).",
    "provider": "capsolver, anticaptcha, capmonster, twocaptcha or local. Default: "
    "capsolver when a key is found, else the local solver (ddddocr).",
    "base_url": "The provider's API base URL (an emulator's, a proxy's). Default: the "
    "provider's own.",
    "api_key": "The API key (text or Secret). Default: the provider's environment "
    "variable (CAPSOLVER_API_KEY, ...), or api_key_file.",
    "api_key_file": "A file whose first line is the API key.",
    "image_column": "Column holding image paths, base64 text or bytes. Default: detected.",
    "id_column": "Column identifying rows. Default: detected (id, row_id, ...).",
    "task_type": "The provider's task type.",
    "task_params": "Extra task fields sent with every task, e.g. {'module': 'common'}. "
    "Default: none.",
    "fields": "Task fields filled per row from columns, e.g. {'question': 'question_col'}. "
    "Default: the task type's own (docs/task-types.md).",
    "rate": "Requests per second to the provider, all kinds together. Default: the "
    "provider's (capbatch run --help lists each provider's).",
    "max_in_flight": "Most requests open at once. Default: the provider's (capbatch run "
    "--help lists them); local: 2 x the CPUs.",
    "max_attempts": "Tries per row before it is recorded as failed.",
    "max_spend": "Spend cap in USD over every run of this journal, never exceeded.",
    "price": "USD per task. Default: the provider's table price.",
    "app_id": "Developer id: CapSolver's appId (text), the others' softId (a number).",
    "cache": "Answer identical images once (False: solve each row separately).",
    "dry_run": "Send nothing; count rows and estimate cost (the summary in attrs).",
    "quiet": "No progress bar and no notices.",
    "progress": "True: a tqdm bar (a widget in Jupyter); False: none; a "
    "callable(tally, result) called after every row; or a Progress object.",
    "journal": "Journal path. Default: <output stem>.journal.sqlite beside the output; "
    "without an output, one named by the table's content in the user cache folder.",
    "http_client": "An httpx.AsyncClient to send requests with (tests, proxies).",
    "service": "A TaskService that answers instead of a provider (tests).",
    "batch_rows": "Rows read from the input at a time.",
    "retry": "Back-off between tries (RetryPolicy). Default: RetryPolicy().",
    "notice": "Called with each notice line (the CLI prints them). Default: silent.",
    "control": "Pause/resume/stop switches (RunControl; the notebook panel's buttons).",
    "on_result": "Called with (0-based input row, result) as each row becomes final.",
    "handle_signals": "Stop gracefully on SIGINT/SIGTERM (the CLI sets it; main thread only).",
    "drain_timeout": "Seconds a stopped run waits for replies to requests in flight.",
    "outage_timeout": "Seconds the provider may stay unreachable before the run stops.",
    "retry_failed": "Send again rows that failed for good in earlier runs (unsolvable, "
    "refused); rows that failed for a passing reason are always retried.",
    "label_column": "Column of true answers: the summary shows the accuracy of text "
    "answers (a 'label' column is used when this is not given), and report_wrong checks "
    "answers against it.",
    "report_wrong": "Report each answer that does not match its label to the provider as "
    "it arrives (needs label_column).",
    "callback_url": "Where the provider POSTs answers (a per-run token is appended); "
    "needs callback_listen.",
    "callback_listen": "HOST:PORT the callback receiver listens on (loopback unless "
    "callback_listen_public).",
    "callback_listen_public": "Allow callback_listen on an address other machines reach.",
    "local_first": "The cascade: the local solver reads each row first and keeps answers "
    "with at least this confidence (0 to 1); only the rest go to the provider.",
}


def _with_options_doc(doc: str | None) -> str:
    """``doc`` followed by every option: its name, type and what it does."""
    lines = [inspect.cleandoc(doc or ""), "", "Options (keyword-only, as in ``RunOptions``):"]
    for field in dataclasses.fields(RunOptions):
        lines.append(f"{field.name}: {field.type}")
        text = OPTION_DOCS.get(field.name, "")
        lines += textwrap.wrap(text, 84, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def unknown_options(given: Iterable[str], known: Iterable[str], *, what: str = "run") -> str:
    """The error line for option names not in ``known``, with the closest known name
    for each (``difflib``), or '' when every name is known."""
    names = sorted(set(known))
    parts = []
    for name in sorted(set(given) - set(names)):
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    if not parts:
        return ""
    return f"unknown {what} option(s): {', '.join(parts)}; see help(capbatch.run)"


def options_from(options: Mapping[str, Any]) -> RunOptions:
    """``RunOptions`` from keywords, a misspelt name refused with a suggestion."""
    problem = unknown_options(options, (f.name for f in dataclasses.fields(RunOptions)))
    if problem:
        raise ConfigError(problem)
    return RunOptions(**options)


def _suggesting(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """``func``, whose keywords a caller misspelt get a ``ConfigError`` naming the
    closest one instead of Python's bare ``TypeError``. The signature shown is
    ``func``'s own (``functools.wraps`` sets ``__wrapped__``)."""
    known = [n for n in inspect.signature(func).parameters if n != "source"]

    def check(kwargs: Mapping[str, Any]) -> None:
        problem = unknown_options(kwargs, known)
        if problem:
            raise ConfigError(problem)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return await func(*args, **kwargs)

        checked_async.__doc__ = _with_options_doc(func.__doc__)
        return checked_async  # type: ignore[return-value]

    @functools.wraps(func)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        check(kwargs)
        return func(*args, **kwargs)

    checked.__doc__ = _with_options_doc(func.__doc__)
    return checked


def _collect(values: Mapping[str, Any]) -> RunOptions:
    """``RunOptions`` from a call's keywords; ``None`` for a mapping option is its default."""
    chosen = {f.name: values[f.name] for f in dataclasses.fields(RunOptions)}
    for name in ("task_params", "fields"):
        if chosen[name] is None:
            del chosen[name]
    return RunOptions(**chosen)


@_suggesting
def run(
    source: Any,
    *,
    output: str | os.PathLike[str] | None = None,
    provider: str | None = None,
    base_url: str | None = None,
    api_key: str | Secret | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
    task_type: str = "ImageToTextTask",
    task_params: Mapping[str, Any] | None = None,
    fields: Mapping[str, str] | None = None,
    rate: float | None = None,
    max_in_flight: int | None = None,
    max_attempts: int = 5,
    max_spend: float | None = None,
    price: float | None = None,
    app_id: str | int | None = None,
    cache: bool = True,
    dry_run: bool = False,
    quiet: bool = False,
    progress: ProgressOption = True,
    journal: str | os.PathLike[str] | None = None,
    http_client: httpx.AsyncClient | None = None,
    service: TaskService | None = None,
    batch_rows: int = 1024,
    retry: RetryPolicy | None = None,
    notice: Callable[[str], None] | None = None,
    control: RunControl | None = None,
    on_result: Callable[[int, RowResult], None] | None = None,
    handle_signals: bool = False,
    drain_timeout: float = 30.0,
    outage_timeout: float = DEFAULT_MAX_OUTAGE,
    retry_failed: bool = False,
    label_column: str | None = None,
    report_wrong: bool = False,
    callback_url: str | None = None,
    callback_listen: str | None = None,
    callback_listen_public: bool = False,
    local_first: float | None = None,
) -> pd.DataFrame:
    """Run ``source`` (a path to Parquet, CSV or JSON Lines, a DataFrame or a pyarrow
    Table) and return the results table: the input's columns, then ``answer``,
    ``status``, ``error_code``, ``cost_usd``, ``latency_ms`` and the other result
    columns. The run's summary is in ``frame.attrs["capbatch"]``. Works inside a running
    event loop too (Jupyter), by running a private loop in a worker thread; ``arun`` is
    the same for async code.
    """
    options = _collect(locals())
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_results(source, options))
    # Inside Jupyter (or any running loop): run a private loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="capbatch-run") as pool:
        return pool.submit(asyncio.run, _results(source, options)).result()


def _same_keywords_as(
    model: Callable[_P, Any],
) -> Callable[[Callable[..., Awaitable[_R]]], Callable[_P, Coroutine[Any, Any, _R]]]:
    """An async function taking exactly ``model``'s parameters (one list, written once,
    for ``run`` and ``arun``): type checkers see ``model``'s parameters (``ParamSpec``),
    ``help()`` and Shift-Tab its signature; the keywords reach ``impl`` with their
    defaults filled in."""
    signature = inspect.signature(model)

    def decorate(impl: Callable[..., Awaitable[_R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
        async def twin(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return await impl(**bound.arguments)

        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(twin, name, getattr(impl, name))
        twin.__signature__ = signature  # type: ignore[attr-defined]
        return twin

    return decorate


@_suggesting
@_same_keywords_as(run)
async def arun(source: Any, **options: Any) -> pd.DataFrame:
    """Run ``source`` (a path to Parquet, CSV or JSON Lines, a DataFrame or a pyarrow
    Table) and return the results table: the input's columns, then ``answer``,
    ``status``, ``error_code``, ``cost_usd``, ``latency_ms`` and the other result
    columns. The run's summary is in ``frame.attrs["capbatch"]``. Its keywords are
    ``run``'s.
    """
    return await _results(source, _collect(options))


async def _results(source: Any, options: RunOptions) -> pd.DataFrame:
    """The run's results table (an empty one holding the summary for a dry run)."""
    outcome = await execute(source, options, want_frame=True)
    if outcome.frame is None:  # a dry run
        empty: pd.DataFrame = pd.DataFrame({})
        empty.attrs["capbatch"] = outcome.summary.to_dict()
        return empty
    return outcome.frame


def with_run_options(own: Callable[..., Any], *, exclude: Iterable[str] = ()) -> inspect.Signature:
    """``own``'s signature with its ``**options`` spelt out as ``run``'s keywords (but
    ``exclude``): what help() shows for a front end that passes them on (``RunPanel``)."""
    signature = inspect.signature(own)
    params = [
        p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD and p.name != "self"
    ]
    taken = {p.name for p in params} | set(exclude)
    params += [
        p
        for name, p in inspect.signature(run).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in taken
    ]
    return signature.replace(parameters=params)
