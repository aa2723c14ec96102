"""capbatch: a table of captcha images in, the same table out with answers.

The public API is what ``__all__`` lists; every module whose name starts with an
underscore is private and may change without notice.

Importing ``capbatch`` is cheap: the error types are defined here at once (they hold
no imports), every other public name is imported from its private module the first
time it is used (``capbatch.run`` loads the run machinery: pandas, pyarrow, aiohttp),
so ``capbatch --help`` and ``import capbatch.cli`` do not pay for what they do not use.
Every public class and function says it lives in ``capbatch`` (``__module__``), so a
traceback reads ``capbatch.AuthError``, as with httpx.
"""

# Only public names here, or underscored ones (tests/unit/test_exported_members.py): no
# ``from __future__ import annotations``, helpers imported under private names.
import sys as _sys
import typing as _typing
from importlib import import_module as _import_module
from types import FunctionType as _FunctionType

from capbatch._exceptions import (
    APIError,
    AuthError,
    BalanceError,
    BannedError,
    CapbatchError,
    ConfigError,
    ConnectFailed,
    ConnectionFailed,
    ConnectionLost,
    ConnectTimeout,
    InputError,
    InUseError,
    InvalidTask,
    JournalDamaged,
    JournalError,
    MalformedReply,
    OutputError,
    ProviderOutage,
    RateLimited,
    ReplyTooLarge,
    RequestTimeout,
    RowInputError,
    RunFailed,
    RunInterrupted,
    ServiceUnavailable,
    TableError,
    TaskExpired,
    TemporarilyBlocked,
    TransportError,
    Unsolvable,
)

if _typing.TYPE_CHECKING:
    from capbatch._api import arun, run
    from capbatch._io.outputs import read_results, run_metadata
    from capbatch._io.record import RESULT_COLUMNS, RowResult
    from capbatch._providers.client import ProviderClient, TaskService
    from capbatch._providers.errors import Action, classify
    from capbatch._providers.profiles import PROVIDERS, PollSchedule, ProviderProfile, get_profile
    from capbatch._providers.protocol import TaskReply
    from capbatch._providers.secrets import Secret
    from capbatch._reports.compare import Comparison, compare
    from capbatch._reports.report import Report, report
    from capbatch._run.batches import RunAborted
    from capbatch._run.options import RunOptions
    from capbatch._run.summary import RunSummary
    from capbatch._version import __version__

#: Every public name not defined above -> the private module that defines it.
_LAZY: dict[str, str] = {
    "Action": "._providers.errors",
    "Comparison": "._reports.compare",
    "PROVIDERS": "._providers.profiles",
    "PollSchedule": "._providers.profiles",
    "ProviderClient": "._providers.client",
    "ProviderProfile": "._providers.profiles",
    "RESULT_COLUMNS": "._io.record",
    "Report": "._reports.report",
    "RowResult": "._io.record",
    "RunAborted": "._run.batches",
    "RunOptions": "._run.options",
    "RunSummary": "._run.summary",
    "Secret": "._providers.secrets",
    "TaskReply": "._providers.protocol",
    "TaskService": "._providers.client",
    "__version__": "._version",
    "arun": "._api",
    "classify": "._providers.errors",
    "compare": "._reports.compare",
    "get_profile": "._providers.profiles",
    "read_results": "._io.outputs",
    "report": "._reports.report",
    "run": "._api",
    "run_metadata": "._io.outputs",
}

__all__ = [  # noqa: RUF022 - plain sorted() order, checked by tests/unit/test_exported_members.py
    "APIError",
    "Action",
    "AuthError",
    "BalanceError",
    "BannedError",
    "CapbatchError",
    "Comparison",
    "ConfigError",
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionFailed",
    "ConnectionLost",
    "InUseError",
    "InputError",
    "InvalidTask",
    "JournalDamaged",
    "JournalError",
    "MalformedReply",
    "OutputError",
    "PROVIDERS",
    "PollSchedule",
    "ProviderClient",
    "ProviderOutage",
    "ProviderProfile",
    "RESULT_COLUMNS",
    "RateLimited",
    "ReplyTooLarge",
    "Report",
    "RequestTimeout",
    "RowInputError",
    "RowResult",
    "RunAborted",
    "RunFailed",
    "RunInterrupted",
    "RunOptions",
    "RunSummary",
    "Secret",
    "ServiceUnavailable",
    "TableError",
    "TaskExpired",
    "TaskReply",
    "TaskService",
    "TemporarilyBlocked",
    "TransportError",
    "Unsolvable",
    "__version__",
    "arun",
    "classify",
    "compare",
    "get_profile",
    "read_results",
    "report",
    "run",
    "run_metadata",
]


def _claim(names: list[str]) -> None:
    """Say ``capbatch`` is where these public classes and functions live."""
    namespace = globals()
    for name in names:
        value = namespace.get(name)
        if isinstance(value, (type, _FunctionType)):
            module = getattr(value, "__module__", None)
            if isinstance(module, str) and module.startswith("capbatch."):
                value.__module__ = __name__


def _resolve_loaded() -> None:
    """Bind every lazy name whose module is imported by now (by a first use, or by
    capbatch itself), and claim it: an error a run raises then reads
    ``capbatch.RunAborted`` whether or not the caller touched that name first."""
    namespace = globals()
    found = []
    for name, module_name in _LAZY.items():
        module = _sys.modules.get(f"{__name__}{module_name}")
        if name not in namespace and module is not None and hasattr(module, name):
            namespace[name] = getattr(module, name)
            found.append(name)
    _claim(found)


def __getattr__(name: str) -> _typing.Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module_name, __name__), name)
    _resolve_loaded()
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_claim(__all__)
