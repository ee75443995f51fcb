"""When to poll a Kie task, following the spec's guidance.

Kie suggests 2-3 s at first, 5-10 s after 30 s, 15-30 s after 2 minutes, giving up after 10-15 minutes,
and at most about one request per second per task.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PollSchedule:
    first_poll_after: float = 1.5  # a task typically takes 1-3 s: look shortly before the median
    interval: float = 2.0
    after_30s: float = 5.0
    after_2min: float = 15.0

    def delay(self, elapsed: float) -> float:
        """Seconds to wait before the next poll, ``elapsed`` seconds after the wait began."""
        if elapsed < 30:
            step = self.interval
        elif elapsed < 120:
            step = max(self.interval, self.after_30s)
        else:
            step = max(self.interval, self.after_2min)
        return step

    def as_dict(self) -> dict[str, float]:
        return {"first_poll_after": self.first_poll_after, "interval": self.interval,
                "after_30s": self.after_30s, "after_2min": self.after_2min}
