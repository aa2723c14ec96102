"""Money: what a row costs, and a spend cap that counts money in flight.

A createTask reserves its estimated price before it is sent; the reservation becomes
spend when the task is charged, or is released when the outcome is not charged. A send
whose outcome is unknown (the connection dropped after the request left) stays counted
against the cap, because the provider may have charged it. So the cap is never exceeded
by requests that were already in flight when it was reached.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpendGuard:
    cap: float | None
    spent: float = 0.0
    reserved: float = 0.0
    #: Money possibly charged for sends whose reply was lost.
    uncertain: float = 0.0
    cap_reached: bool = False

    def committed(self) -> float:
        return self.spent + self.reserved + self.uncertain

    def reserve(self, amount: float) -> bool:
        """Reserve ``amount`` for one send; False (and ``cap_reached``) if over the cap."""
        # A tiny epsilon so that float sums of prices do not refuse the last exact fit.
        if self.cap is not None and self.committed() + amount > self.cap + 1e-12:
            self.cap_reached = True
            return False
        self.reserved += amount
        return True

    def release(self, amount: float) -> None:
        """The reserved send was not charged."""
        self.reserved = max(0.0, self.reserved - amount)

    def charge(self, reserved: float, actual: float) -> None:
        """The reserved send was charged ``actual`` (provider-reported or table price)."""
        self.release(reserved)
        self.spent += actual

    def mark_uncertain(self, reserved: float) -> None:
        """The reply to a reserved send was lost: it may have been charged."""
        self.release(reserved)
        self.uncertain += reserved
