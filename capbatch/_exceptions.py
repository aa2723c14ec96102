"""The one exception tree of capbatch.

Every error capbatch raises derives from ``CapbatchError``. Provider error codes and
HTTP statuses are turned into these classes in exactly one place,
``capbatch._providers.errors.error_from_reply``; nothing else inspects ``errorCode``
strings.

```
CapbatchError
├── ConfigError                      bad options: unknown provider, missing key, bad value
│   ├── InUseError                   another run holds this output or journal
│   └── JournalDamaged               the journal fails its integrity check (also a JournalError)
├── InputError                       an input table or one row's image cannot be used
│   ├── TableError                   the whole table: unreadable, no image column, ...
│   └── RowInputError                one row: file missing, not an image, too large, ...
├── JournalError                     the journal cannot be read or written (disk full, I/O)
├── OutputError                      the output cannot be written or would lack rows
├── ProviderOutage                   the provider did not answer for --outage-timeout
├── RunFailed                        an unexpected fault stopped the run (a bug, the machine)
├── RunInterrupted                   SIGINT or SIGTERM stopped the run gracefully
├── TransportError                   the request never produced a parseable reply
│   ├── ConnectionFailed             connect refused, connection dropped, read error
│   │   ├── ConnectFailed            no connection: nothing was sent
│   │   └── ConnectionLost           dropped after sending: maybe acted on
│   ├── RequestTimeout               no reply in time: maybe acted on
│   │   └── ConnectTimeout           no connection in time: nothing was sent
│   └── MalformedReply               a reply that is not the protocol's JSON
│       └── ReplyTooLarge            a reply body over the size cap
└── APIError                         the provider answered with an error
    ├── AuthError                    bad or blocked key                  (run-fatal)
    ├── BalanceError                 no money left                       (run-fatal)
    ├── BannedError                  the client IP is banned             (run-fatal)
    ├── TemporarilyBlocked           key blocked for a few minutes       (pause)
    ├── RateLimited                  over the request rate               (slow down)
    ├── ServiceUnavailable           overloaded, HTTP 5xx                (retry)
    ├── Unsolvable                   could not solve the captcha         (retry, bounded)
    ├── TaskExpired                  task id unknown, expired or timed out (recreate)
    └── InvalidTask                  the request or image was refused    (record)
```

Errors carry context as attributes (``error_code``, ``http_status``, ``task_id``,
``retry_after``) and never the account key: messages are built from the provider's
``errorCode`` and ``errorDescription`` and from capbatch's own words only.
"""

from __future__ import annotations


class CapbatchError(Exception):
    """Base class of every error capbatch raises."""

    #: A short machine-readable code, written to the ``error_code`` column.
    error_code: str = "CAPBATCH_ERROR"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def __str__(self) -> str:
        return self.message


class ConfigError(CapbatchError):
    """Options that cannot work: unknown provider, missing key, bad value."""

    error_code = "CONFIG_ERROR"


class InUseError(ConfigError):
    """Another capbatch run holds this output (or journal): both would send, and pay
    for, the same rows. Nothing was sent."""

    error_code = "IN_USE"


class JournalError(CapbatchError):
    """The journal could not be read or written: disk full, I/O error, read-only.

    SQLite rolls back the write that failed, so every step recorded before it stays.
    ``path`` is the journal's path."""

    error_code = "JOURNAL_ERROR"

    def __init__(self, message: str, *, path: str, error_code: str | None = None) -> None:
        super().__init__(message, error_code=error_code)
        self.path = path


class JournalDamaged(JournalError, ConfigError):
    """The journal fails SQLite's integrity check: which rows were answered (and paid)
    cannot be trusted, so the run refuses to start (a usage error: the user must move
    the journal aside or restore it)."""

    error_code = "JOURNAL_DAMAGED"


class OutputError(CapbatchError):
    """The output could not be written, or would not hold every input row in order; it
    is not published (the previous file under that name, if any, is left untouched)."""

    error_code = "OUTPUT_ERROR"


class InputError(CapbatchError):
    """An input table, or one row of it, cannot be used."""

    error_code = "INPUT_ERROR"


class TableError(InputError):
    """The whole input table is unusable (unreadable, empty of an image column, ...)."""

    error_code = "INPUT_TABLE_ERROR"


class RowInputError(InputError):
    """One row's image cannot be read; the row is recorded as failed and the run goes on."""

    error_code = "INPUT_INVALID"

    def __init__(self, message: str, *, error_code: str, row: int | None = None) -> None:
        super().__init__(message, error_code=error_code)
        self.row = row


class TransportError(CapbatchError):
    """The request did not produce a reply that could be parsed.

    ``maybe_sent`` says whether the request may have reached the provider (and so may
    have been acted on and paid for): a property of the class, decided where the
    transport's error is translated, so no caller has to guess from a code string."""

    error_code = "TRANSPORT_ERROR"
    maybe_sent = True


class ConnectionFailed(TransportError):
    """Connecting failed or the connection dropped before a full reply."""

    error_code = "CONNECTION_FAILED"


class ConnectFailed(ConnectionFailed):
    """No connection could be opened: nothing was sent."""

    error_code = "CONNECT_FAILED"
    maybe_sent = False


class ConnectionLost(ConnectionFailed):
    """The connection dropped after the request left: it may have been acted on."""

    error_code = "CONNECTION_LOST"


class RequestTimeout(TransportError):
    """No reply arrived within the timeout (the request may have been acted on)."""

    error_code = "REQUEST_TIMEOUT"


class ConnectTimeout(RequestTimeout):
    """No connection within the connect timeout: nothing was sent."""

    error_code = "CONNECT_TIMEOUT"
    maybe_sent = False


class MalformedReply(TransportError):
    """The reply was not the protocol's JSON (HTML error page, truncated body, ...)."""

    error_code = "MALFORMED_REPLY"

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class ReplyTooLarge(MalformedReply):
    """The reply body passed the client's size cap (``_providers.transport.MAX_REPLY_BYTES``); it
    was dropped unread. Like every malformed reply, the request may have been acted on."""

    error_code = "REPLY_TOO_LARGE"


class APIError(CapbatchError):
    """The provider answered with an error (``errorId != 0`` or an HTTP error status)."""

    error_code = "API_ERROR"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        http_status: int | None = None,
        task_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.http_status = http_status
        self.task_id = task_id
        self.retry_after = retry_after


class AuthError(APIError):
    """The key is wrong or denied. Fatal for the run."""

    error_code = "ERROR_KEY_DENIED_ACCESS"


class BalanceError(APIError):
    """The account has no money left. Fatal for the run."""

    error_code = "ERROR_ZERO_BALANCE"


class BannedError(APIError):
    """The client's IP address is banned. Fatal for the run."""

    error_code = "ERROR_IP_BANNED"


class TemporarilyBlocked(APIError):
    """The key is blocked for a few minutes after too many errors: pause, then go on."""

    error_code = "ERROR_KEY_TEMP_BLOCKED"


class RateLimited(APIError):
    """Over the key's request rate: slow the whole run down and retry."""

    error_code = "ERROR_RATE_LIMIT"


class ServiceUnavailable(APIError):
    """The service is overloaded or failing (HTTP 5xx): retry with backoff."""

    error_code = "ERROR_SERVICE_UNAVALIABLE"


class Unsolvable(APIError):
    """The service could not solve this captcha: retry a bounded number of times."""

    error_code = "ERROR_CAPTCHA_UNSOLVABLE"


class TaskExpired(APIError):
    """The task id is unknown, expired or timed out: create the task again (bounded)."""

    error_code = "ERROR_TASKID_INVALID"


class InvalidTask(APIError):
    """The service refused the request or image: record it on the row, do not retry."""

    error_code = "ERROR_INVALID_TASK_DATA"


class RunFailed(CapbatchError):
    """Something capbatch did not expect stopped the run (a bug, or the machine failing).

    The run stops at once rather than publish an output that lacks rows; the journal
    keeps every paid step, so running the same command again resumes."""

    error_code = "RUN_FAILED"

    @classmethod
    def of(cls, exc: BaseException, *, row: int | None = None) -> RunFailed:
        where = f"row {row}: " if row is not None else ""
        error = cls(f"{where}unexpected {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error


class RunInterrupted(CapbatchError):
    """SIGINT or SIGTERM stopped the run gracefully; running it again resumes."""

    error_code = "RUN_INTERRUPTED"

    def __init__(self, message: str, *, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        #: The run's summary, when the run got far enough to write its output.
        self.summary: object | None = None


class ProviderOutage(CapbatchError):
    """The provider did not answer for longer than the run's outage bound (see
    ``_run.outage``): the run stops with no row marked failed."""

    error_code = "PROVIDER_OUTAGE"
