"""Telling a provider outage from a bad row: pause the whole run, probe, resume or stop.

One failing request says little; many in a row, with no success between them, say the
provider (or the network to it) is down. Letting each row retry on its own then burns
every row's attempts, marks the rows failed, and hammers a service that is struggling.
So once ``FAILURES`` outage-type failures (connect errors, timeouts, lost or malformed
replies, HTTP 5xx, "service unavailable") come in a row over at least
``MIN_SECONDS``, or the provider asks for a pause longer than ``LONG_RETRY_AFTER``:

* every request waits at the gate; one at a time goes through as a probe, after a
  back-off that doubles from ``PROBE_FIRST`` to ``PROBE_MAX`` seconds;
* failures during the outage do not count against the rows' attempts;
* the first reply from the provider (an answer or any API error: it is up) ends the
  outage and releases everyone;
* if it lasts longer than ``max_outage`` seconds (``--outage-timeout``), the run stops
  with ``ProviderOutage``: exit 1, the journal intact, no row marked failed.
"""

from __future__ import annotations

import asyncio

from capbatch._exceptions import CapbatchError, ProviderOutage, ServiceUnavailable, TransportError
from capbatch._run.limits import Clock

DEFAULT_MAX_OUTAGE = 300.0

__all__ = ["DEFAULT_MAX_OUTAGE", "OutageGate", "ProviderOutage", "is_outage_error"]


def is_outage_error(error: CapbatchError) -> bool:
    """True for errors that say the provider (or the way to it) is down, not the row."""
    return isinstance(error, (TransportError, ServiceUnavailable))


class OutageGate:
    FAILURES = 5
    MIN_SECONDS = 1.0
    PROBE_FIRST = 1.0
    PROBE_MAX = 30.0
    #: A Retry-After longer than this is an outage announced by the provider.
    LONG_RETRY_AFTER = 60.0

    def __init__(self, clock: Clock, *, max_outage: float = DEFAULT_MAX_OUTAGE) -> None:
        self._clock = clock
        self.max_outage = max_outage
        self._streak = 0
        self._streak_since = 0.0
        self._down_since: float | None = None
        self._reason = ""
        self._next_probe = 0.0
        self._backoff = self.PROBE_FIRST
        self._probe_out = False
        self._changed = asyncio.Event()
        #: Outages seen, and seconds spent in them (for the summary).
        self.outages = 0
        self.seconds_down = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    # --- the gate every request passes --------------------------------------------------

    async def admit(self) -> bool:
        """Wait while the provider is down; True when this request goes as the probe
        (its outcome must then be reported with ``succeeded``, ``failed`` or
        ``abandoned``). The probe, not the waiters, watches the time: when the outage
        outlasts ``max_outage`` it raises ``ProviderOutage``, which stops the run."""
        while self._down_since is not None:
            if self._probe_out:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._probe_out = True
            try:
                now = self._clock.now()
                deadline = self._down_since + self.max_outage
                wait = min(self._next_probe, deadline) - now
                if wait > 0:
                    await self._clock.sleep(wait)
                if not self.down:  # another reply ended it meanwhile
                    self.abandoned(True)
                    return False
                now = self._clock.now()
                if now >= deadline:
                    down_for = now - deadline + self.max_outage
                    raise ProviderOutage(
                        f"the provider has not answered for {down_for:.0f} s "
                        f"({self._reason}); stopping instead of failing every row "
                        "(--outage-timeout sets how long to wait)"
                    )
            except BaseException:
                self.abandoned(True)
                raise
            return True
        return False

    def succeeded(self, probe: bool) -> None:
        """The provider answered (an answer, or an API error: it is up)."""
        self._streak = 0
        if probe:
            self._probe_out = False
        if self._down_since is not None:
            self.seconds_down += self._clock.now() - self._down_since
            self._down_since = None
            self._backoff = self.PROBE_FIRST
            self._changed.set()

    def failed(self, error: CapbatchError, probe: bool) -> bool:
        """An outage-type failure; True when the provider is (now) taken to be down."""
        now = self._clock.now()
        if self._streak == 0:
            self._streak_since = now
        self._streak += 1
        if probe:
            self._probe_out = False
            self._next_probe = now + self._backoff
            self._backoff = min(self.PROBE_MAX, self._backoff * 2)
            self._changed.set()
        if self._down_since is None and (
            self._streak >= self.FAILURES and now - self._streak_since >= self.MIN_SECONDS
        ):
            self._go_down(f"{error.error_code}: {error}", now, first_probe=self.PROBE_FIRST)
        return self._down_since is not None

    def abandoned(self, probe: bool) -> None:
        """The request ended without telling anything (cancelled)."""
        if probe:
            self._probe_out = False
            self._changed.set()

    def long_pause(self, seconds: float, reason: str) -> None:
        """The provider asked for a long pause: an outage it announced itself."""
        now = self._clock.now()
        if self._down_since is None:
            self._go_down(reason, now, first_probe=min(seconds, self.PROBE_MAX))

    def _go_down(self, reason: str, now: float, *, first_probe: float) -> None:
        self._down_since = now
        self._reason = reason[:200]
        self._next_probe = now + first_probe
        self._backoff = min(self.PROBE_MAX, max(self.PROBE_FIRST, first_probe) * 2)
        self.outages += 1
