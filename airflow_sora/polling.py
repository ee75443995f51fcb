"""When to poll a Kie task, following the spec's guidance.

Kie suggests 2-3 s at first, 5-10 s after 30 s, 15-30 s after 2 minutes, giving up after 10-15 minutes,
and at most about one request per second per task. A task typically takes 1-3 s, so the first look comes
at the expected latency; for the next few seconds, while most tasks finish, we look every second (the
per-task ceiling), then back off as the spec suggests.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INTERVAL = 2.0


@dataclass(frozen=True)
class PollSchedule:
    first_poll_after: float = 2.0  # the expected latency: most tasks are done at the first look
    interval: float = DEFAULT_INTERVAL
    early_interval: float = 1.0  # the tail right after the expected latency: Kie's one-per-second ceiling
    early_window: float = 10.0
    after_30s: float = 5.0
    after_2min: float = 15.0

    def delay(self, elapsed: float) -> float:
        """Seconds to wait before the next poll, ``elapsed`` seconds after the wait began."""
        if elapsed < self.early_window and self.interval <= DEFAULT_INTERVAL:  # a slower choice is respected
            return min(self.interval, self.early_interval)
        if elapsed < 30:
            return self.interval
        if elapsed < 120:
            return max(self.interval, self.after_30s)
        return max(self.interval, self.after_2min)

    def as_dict(self) -> dict[str, float]:
        return {"first_poll_after": self.first_poll_after, "interval": self.interval,
                "early_interval": self.early_interval, "early_window": self.early_window,
                "after_30s": self.after_30s, "after_2min": self.after_2min}
