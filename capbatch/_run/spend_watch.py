"""Watching what the provider really charges, so a spend cap holds on real money.

The run prices tasks from the provider's table (or ``--price``), but the account may
be charged more: another price list, a surcharge, a wrong table. A cap counted on the
assumed price would then be beaten many times over. So, when a cap is set:

* **Probe.** Until the price is confirmed, one task at a time may be in flight. When
  it is charged, the provider's reported cost, or else a getBalance call, gives the
  real price, and the run goes on at that price (never below the assumed one).
* **Watch.** Afterwards the balance is checked again every ``CHECK_EVERY_TASKS``
  charged tasks, at most once per ``CHECK_MIN_SECONDS``: a bounded cost of about one
  request in fifty. When the balance fell by more than the run has committed, the
  price is raised in proportion and the spend is counted at the provider's figure.

Where the provider reports neither a cost nor a balance, the cap can only count the
assumed price; the run says so once. The balance is the account's: another client
spending from it at the same time makes the run stop early, never late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from capbatch._run.limits import Clock
from capbatch._run.spend import SpendGuard

#: A reported cost or a price above this is taken as nonsense, not as a price.
MAX_TASK_PRICE = 10.0


class SpendWatch:
    CHECK_EVERY_TASKS = 50
    #: Anti-Captcha asks for at most one getBalance call per 30 s (docs/providers.md).
    CHECK_MIN_SECONDS = 30.0

    def __init__(
        self,
        spend: SpendGuard,
        *,
        balance_before: float | None,
        check_balance: Callable[[], Awaitable[float | None]] | None,
        cost_in_reply: bool,
        clock: Clock,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.spend = spend
        self.balance_before = balance_before
        self._check_balance = check_balance if balance_before is not None else None
        self._cost_in_reply = cost_in_reply
        self._clock = clock
        self._notice = notice or (lambda _message: None)
        self.checks = 0
        self.charged_tasks = 0
        self.repriced = False
        self._since_check = 0
        self._last_check = clock.now()
        self._checking = False
        self._probe_out = 0
        self._changed = asyncio.Event()
        can_confirm = self._check_balance is not None or cost_in_reply
        if spend.cap is None or spend.price_confirmed:
            self._probing = False
        elif not can_confirm:
            self._probing = False
            self._notice(
                "the provider reports neither costs nor a balance: the spend cap counts the "
                f"assumed price of ${spend.price:.6f} a task"
            )
        else:
            self._probing = True

    # --- the probe gate ---------------------------------------------------------------

    async def gate(self) -> bool:
        """Wait until a createTask may go; True when it goes as the price probe (then
        ``release_probe`` must follow when its reservation is settled)."""
        while self._probing and self._probe_out > 0:
            self._changed.clear()
            await self._changed.wait()
        if not self._probing:
            return False
        self._probe_out += 1
        return True

    def release_probe(self) -> None:
        """The probe's reservation was settled: let the next createTask probe."""
        self._probe_out = max(0, self._probe_out - 1)
        self._changed.set()

    async def probe_charged(self, reported_cost: float | None = None) -> None:
        """The probe task is done and charged, but not yet counted: learn its price first,
        so that it, and every task after it, is counted at the real price."""
        self.charged_tasks += 1
        if reported_cost is not None and 0 < reported_cost <= MAX_TASK_PRICE:
            self._raise_price(reported_cost)
            self._confirm()
        else:
            await self.check()

    async def charged(self, reported_cost: float | None = None) -> None:
        """A task was charged and counted: check the price from its cost or, now and
        then, from the balance."""
        self.charged_tasks += 1
        self._since_check += 1
        if reported_cost is not None and 0 < reported_cost <= MAX_TASK_PRICE:
            self._raise_price(reported_cost)
            self._confirm()
        elif self._probing or self._check_due():
            await self.check()

    def _confirm(self) -> None:
        self.spend.price_confirmed = True
        self._probing = False
        self._changed.set()

    # --- balance checks ---------------------------------------------------------------

    def _check_due(self) -> bool:
        return (
            self._check_balance is not None
            and not self._checking
            and self.spend.cap is not None
            and self._since_check >= self.CHECK_EVERY_TASKS
            and self._clock.now() - self._last_check >= self.CHECK_MIN_SECONDS
        )

    async def check(self) -> None:
        """Compare the balance's fall with what the run has committed; re-price if more."""
        if self._check_balance is None or self._checking or self.balance_before is None:
            if self._probing and self._check_balance is None:
                self._confirm()
            return
        self._checking = True
        try:
            balance = await self._check_balance()
        finally:
            self._checking = False
        self.checks += 1
        self._since_check = 0
        self._last_check = self._clock.now()
        if balance is None:
            if self._probing:
                self._notice(
                    "could not read the balance: the spend cap counts the assumed price of "
                    f"${self.spend.price:.6f} a task"
                )
                self._confirm()
            return
        really = self.balance_before - balance
        spend = self.spend
        committed = spend.spent + spend.reserved + spend.uncertain
        if self._probing:
            # Only the probe was charged: the fall of the balance is its price. Its
            # charge is counted by the caller, at this price.
            if really > 0 and self.charged_tasks > 0:
                self._raise_price(really / self.charged_tasks)
            self._confirm()
            return
        if really > committed + 1e-9 and committed > 0:
            self._raise_price(spend.price * really / committed)
        spend.observe_spent(really)

    def _raise_price(self, price: float) -> None:
        old = self.spend.price
        if self.spend.reprice(min(price, MAX_TASK_PRICE)):
            self.repriced = True
            self._notice(
                f"the provider charges ${self.spend.price:.6f} a task, not the assumed "
                f"${old:.6f}: the spend cap now counts that"
            )
