"""capbatch: a table of captcha images in, the same table out with answers.

The public API is what ``__all__`` lists; every module whose name starts with an
underscore is private and may change without notice.
"""

from ._api import RunOptions, arun, run
from ._client import ProviderClient, TaskService
from ._exceptions import (
    APIError,
    AuthError,
    BalanceError,
    BannedError,
    CapbatchError,
    ConfigError,
    ConnectionFailed,
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
from ._outputs import RESULT_COLUMNS, RowResult, read_results, run_metadata
from ._protocol import Action, TaskReply, classify
from ._providers import PROVIDERS, PollSchedule, ProviderProfile, get_profile
from ._report import Comparison, Report, compare, report
from ._runner import RunAborted
from ._secrets import Secret
from ._summary import RunSummary
from ._version import __version__

__all__ = [  # noqa: RUF022 - plain sorted() order, checked by tests/unit/test_exported_members.py
    "APIError",
    "Action",
    "AuthError",
    "BalanceError",
    "BannedError",
    "CapbatchError",
    "Comparison",
    "ConfigError",
    "ConnectionFailed",
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
