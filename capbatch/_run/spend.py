"""Money: what a row costs, and a spend cap that counts money in flight and earlier runs.

A createTask reserves the price of one task before it is sent; the reservation becomes
spend when the task is charged, or is released when the outcome is not charged. A send
whose outcome is unknown (the connection dropped after the request left) stays counted
against the cap, because the provider may have charged it. So the cap is never exceeded
by requests that were already in flight when it was reached.

The cap belongs to the job, not to one invocation: ``spent_before`` is what earlier
runs of the same journal spent (charged tasks plus their unknown-outcome sends), and it
counts against the cap like this run's spend. Re-running at a reached cap sends nothing.

The price is an estimate until the provider confirms it. ``reprice`` raises it when
the provider's own figures (a reported cost, or the balance falling faster than the
run's accounting) show that tasks cost more than assumed; spend is then counted at the
real figure too, so the cap holds on what is really charged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capbatch._run.journal import Journal

#: Float sums of prices must not refuse the last exact fit under the cap.
_EPSILON = 1e-12


def check_money(name: str, value: float | None) -> float | None:
    """``value`` if it is a finite, non-negative amount of USD; else ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of USD, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite amount of USD of 0 or more, not {value!r}")
    return float(value)


@dataclass
class SpendGuard:
    cap: float | None
    #: The price of one task as far as the run knows (raised by ``reprice``).
    price: float = 0.0
    #: What earlier runs of this journal spent or may have spent.
    spent_before: float = 0.0
    spent: float = 0.0
    reserved: float = 0.0
    #: Money possibly charged for sends whose reply was lost.
    uncertain: float = 0.0
    cap_reached: bool = False
    #: True once the provider confirmed what a task costs (a reported cost or a balance
    #: check); until then, a capped run sends one task at a time (see ``BalanceWatch``).
    price_confirmed: bool = False

    def committed(self) -> float:
        return self.spent_before + self.spent + self.reserved + self.uncertain

    def reserve(self) -> float | None:
        """Reserve one task's price; the amount, or None (and ``cap_reached``) if over."""
        amount = self.price
        if self.cap is not None and self.committed() + amount > self.cap + _EPSILON:
            self.cap_reached = True
            return None
        self.reserved += amount
        return amount

    def adopt(self) -> float:
        """Reserve a task created by an earlier run, whatever the cap: its money is
        committed already, and knowing its outcome is the only way to stop paying.
        Its price moves out of ``spent_before``, where the run's start counted it."""
        self.spent_before = max(0.0, self.spent_before - self.price)
        self.reserved += self.price
        return self.price

    def adopt_lost(self) -> None:
        """An earlier run's send whose outcome is unknown (it may have been charged):
        counted as uncertain from now on, and no longer in ``spent_before``."""
        self.spent_before = max(0.0, self.spent_before - self.price)
        self.uncertain += self.price

    def release(self, amount: float) -> None:
        """The reserved send was not charged."""
        self.reserved = max(0.0, self.reserved - amount)

    def charge(self, reserved: float, actual: float) -> None:
        """The reserved send was charged ``actual`` (provider-reported or the price)."""
        self.release(reserved)
        self.spent += actual

    def mark_uncertain(self, reserved: float) -> None:
        """The reply to a reserved send was lost: it may have been charged."""
        self.release(reserved)
        self.uncertain += reserved

    def reprice(self, price: float) -> bool:
        """Raise the price to ``price`` if higher; True when it changed."""
        if price > self.price + _EPSILON:
            self.price = price
            return True
        return False

    def observe_spent(self, really_spent: float) -> None:
        """The provider says this run has spent ``really_spent``: count at least that."""
        self.spent = max(self.spent, really_spent)

    @property
    def total(self) -> float:
        """Spent by every run of this journal, as far as is known."""
        return self.spent_before + self.spent


def spent_before(journal: Journal, price: float) -> float:
    """What earlier runs of this journal spent: charged tasks, plus, at today's price,
    sends whose outcome is unknown and tasks a stopped run left unfinished (each may
    have been charged; a job that picks one up moves its price out of here)."""
    states = journal.counts()
    unfinished = states.get("intent", 0) + states.get("created", 0)
    return journal.total_spent() + (journal.total_uncertain() + unfinished) * price
