"""Temporary bans for repeated bad requests, as CapMonster Cloud hands them out.

CM-ban ("Reasons for blocking captcha recognition") names the reasons, kept here as it
spells them: ``KeyDoesntExist`` (requests with a missing or wrong key), ``ZeroBalance``
(requests with a zero balance) and ``WrongTaskId`` (over 120 polls of a task, or polls
of task ids that do not exist); a ban lasts 10 minutes. The number of offences that
brings one is the dialect's ``BanRule`` (an emulator's choice: the page says only
"multiple"). Times are the emulator's clock (``EmulatorState.now``), so a test ends a
ban by moving ``clock_offset`` on rather than by waiting.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

from capbatch.emulator._dialects import BanRule

BanReason = Literal["KeyDoesntExist", "ZeroBalance", "WrongTaskId"]


class Bans:
    """Offences by reason, the ban in force and how many bans each reason brought."""

    def __init__(self, rule: BanRule | None) -> None:
        self.rule = rule
        self._offences: dict[str, deque[float]] = {}
        self.until = float("-inf")
        self.reason: str | None = None
        self.counts: dict[str, int] = {}

    def active(self, now: float) -> str | None:
        """The reason of the ban in force at ``now``, or None."""
        return self.reason if now < self.until else None

    def offend(self, reason: BanReason, now: float) -> None:
        """Count one offence; enough of them within the window start a ban."""
        rule = self.rule
        if rule is None:
            return
        times = self._offences.setdefault(reason, deque())
        times.append(now)
        while times and times[0] <= now - rule.window:
            times.popleft()
        if len(times) >= rule.strikes:
            times.clear()
            self.until = now + rule.duration
            self.reason = reason
            self.counts[reason] = self.counts.get(reason, 0) + 1

    def reset_counts(self) -> None:
        """Zero the ban counts and pending offences; a ban in force stays."""
        self.counts = {}
        self._offences.clear()

    def snapshot(self, now: float) -> dict[str, Any]:
        reason = self.active(now)
        return {
            "bans": dict(self.counts),
            "banned": reason,
            "banned_for": max(0.0, self.until - now) if reason else 0.0,
        }
