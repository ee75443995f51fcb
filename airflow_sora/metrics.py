"""Metrics through Airflow's ``Stats`` (StatsD or OpenTelemetry, as the deployment configures), under ``sora.``.

A deployment without metrics configured gets Airflow's no-op logger: the calls cost nothing and send nothing.
Every metric the provider emits is named here, so the README's list and the code cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any

PREFIX = "sora"

#: name -> (kind, what it counts); ``<status>`` and ``<kind>`` are filled in at emission.
METRICS: dict[str, tuple[str, str]] = {
    "sora.videos.<status>": ("counter", "videos by final status: landed, skipped, failed, rejected, not_submitted"),
    "sora.credits.charged": ("counter", "credits charged by the service for creates sent (counted when sent)"),
    "sora.credits.refunded": ("counter", "credits of creates that cost nothing after all (error reply, refused "
                                         "URL, refunded failure)"),
    "sora.creates.rate_limited": ("counter", "paid creates the service refused with 429 (retried, not charged)"),
    "sora.errors.<kind>": ("counter", "failed calls by kind: rate_limited (429), unavailable (5xx, 455, "
                                      "connection), no_reply (a create with no answer), protocol (a reply we "
                                      "cannot read), transient, permanent; landing (a download or publication)"),
    "sora.service.latency": ("timer", "a task's time at the service, create to finished, as the service "
                                      "reports it (else as the worker saw it)"),
    "sora.landing.bytes": ("counter", "bytes of video landed"),
    "sora.landing.throughput": ("gauge", "MB/s of one landed video, download to publication"),
    "sora.balance": ("gauge", "the account's credit balance after a run"),
    "sora.local.files.<status>": ("counter", "files by final status in the local engine's runs: landed, no_mark, "
                                             "skipped, failed"),
    "sora.local.frames": ("counter", "frames the local engine worked through"),
    "sora.local.fps": ("gauge", "frames per second of one file the local engine cleaned, decode to encode"),
    "sora.local.seconds": ("timer", "the local engine's time on one file"),
}


@functools.cache
def _stats() -> Any:
    """Airflow's ``Stats``, resolved once (its home moved in 3.2)."""
    try:  # Airflow >= 3.2
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1
        from airflow.stats import Stats
    return Stats


def incr(name: str, count: int = 1, *, service: str | None = None) -> None:
    if count:
        _stats().incr(f"{PREFIX}.{name}", count, tags=_tags(service))


def gauge(name: str, value: float, *, service: str | None = None) -> None:
    _stats().gauge(f"{PREFIX}.{name}", value, tags=_tags(service))


def timing(name: str, seconds: float, *, service: str | None = None) -> None:
    """Seconds in, milliseconds out: StatsD timers are in ms."""
    _stats().timing(f"{PREFIX}.{name}", seconds * 1000.0, tags=_tags(service))


def _tags(service: str | None) -> dict[str, Any]:
    return {"service": service} if service else {}
