"""When a row is tried again: the back-off between tries within a run
(``RetryPolicy``), and which failed rows a later run sends again (``failed_for_good``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from capbatch._providers.errors import Action, action_for_code
from capbatch._providers.profiles import ProviderProfile
from capbatch._run.results import MAX_ATTEMPTS, POLL_LIMIT


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: Rate-limit answers do not use up ``max_attempts`` but are bounded too.
    max_rate_limited: int = 50
    #: Keep this much of the task's lifetime spare when deciding to poll a resumed id.
    ttl_margin: float = 10.0

    def backoff(self, failures: int, retry_after: float | None, rng: random.Random) -> float:
        """Exponential backoff with equal jitter: a delay drawn uniformly from the upper
        half of the exponential ceiling (never less than half of it, unlike full
        jitter's zero to the ceiling); never shorter than ``Retry-After``."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** max(0, failures - 1)))
        delay = rng.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after or 0.0)


def failed_for_good(error_code: str | None, profile: ProviderProfile | None = None) -> bool:
    """True when a row that failed with ``error_code`` would fail the same way again
    (unsolvable after its retries, a refused image or task); False for passing causes
    (network, HTTP 5xx, rate limits, an unavailable service, an outage, attempts or
    polls used up), by the ``profile``'s meaning of the code. Unknown codes are kept:
    re-sending blindly could pay again for nothing."""
    if error_code is None:
        return True
    if error_code in (MAX_ATTEMPTS, POLL_LIMIT):
        return False
    action = action_for_code(error_code, profile)
    return action is None or action in (Action.RECORD, Action.RETRY_BOUNDED)
