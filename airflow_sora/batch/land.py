"""Part four of a try: land every finished video, a few at a time, with provenance.

The download, verification, lease and sidecar are ``landing.ResultLander``'s job; this part decides which
videos to land, bounds the concurrency, and reports each outcome to the ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from airflow_sora import metrics
from airflow_sora.batch.claims import Claims
from airflow_sora.batch.ledger import Entry, Ledger
from airflow_sora.batch.settings import BatchSettings
from airflow_sora.landing import ResultLander
from airflow_sora.lifecycle import Event, Phase, Settled
from airflow_sora.services.base import WatermarkService

log = logging.getLogger(__name__)


class LandingPool:
    def __init__(self, ledger: Ledger, client: WatermarkService, lander: ResultLander,
                 settings: BatchSettings, *, claims: Claims | None = None) -> None:
        self.ledger = ledger
        self.claims = claims
        self.client = client
        self.lander = lander
        self.settings = settings

    @contextmanager
    def as_results_come(self) -> Iterator[None]:
        """While the body runs (submitting, waiting in the worker), land each video as soon as its result is
        known, instead of all of them after the last task finished; on the way out, wait for those landings."""
        pool = ThreadPoolExecutor(max(1, self.settings.landing_concurrency), thread_name_prefix="sora-landing")
        queued: dict[str, Future[None]] = {}
        lock = threading.Lock()

        def land_soon(post_id: str) -> None:
            with lock:
                if post_id not in queued:
                    queued[post_id] = pool.submit(self._land, self.ledger[post_id])

        self.ledger.on_finished = land_soon
        try:
            yield
        finally:
            self.ledger.on_finished = None
            pool.shutdown(wait=True)
        for future in queued.values():
            future.result()  # anything but a landing error (those are settled) is a bug: raise it here

    def land_finished(self) -> None:
        """Land every finished, unsettled video; settle the ones the service failed."""
        for entry in self.ledger.unsettled(Phase.FAILED):
            self.ledger.settle(entry.video.post_id, Settled.FAILED, error=entry.record.error if entry.record else None)
        to_land = self.ledger.unsettled(Phase.FINISHED)
        if not to_land:
            return
        workers = max(1, min(self.settings.landing_concurrency, len(to_land)))
        with ThreadPoolExecutor(workers, thread_name_prefix="sora-landing") as pool:
            list(pool.map(self._land, to_land))

    def _land(self, entry: Entry) -> None:
        record = entry.record
        assert record is not None and record.result is not None
        post_id = entry.video.post_id
        result = record.result.model_copy(update={"post_id": post_id, "video_url": entry.video.url})
        provenance = {**self.settings.provenance, "service_post_id": record.result.post_id,
                      "submitted_at": record.submitted_at}
        if entry.video.variants:
            provenance["source_url_variants"] = list(entry.video.variants)
        refresh = self.client.refresh_link if self.client.refreshable_links else None
        started = time.monotonic()
        try:
            landed = self.lander.land(result, provenance=provenance, keep_source=self.settings.keep_source,
                                      refresh=refresh,
                                      lease_token=self.claims.fresh_token(entry) if self.claims else None,
                                      mark_landed=self.claims is not None)
        except Exception as error:  # storage errors too (a full disk, an S3 error): the video is reported, never lost
            retryable = bool(getattr(error, "retryable", True))
            log.warning("Landing %s failed: %s: %s", entry.video.url, type(error).__name__, error)
            metrics.incr("errors.landing", service=self.client.service_name)
            self.ledger.apply(post_id, Event.LANDING_FAILED)  # the claim stays: a retry lands the paid result
            self.ledger.settle(post_id, Settled.FAILED, error=f"landing failed: {type(error).__name__}: {error}",
                               retryable=retryable)
            return
        seconds = max(time.monotonic() - started, 1e-6)
        metrics.incr("landing.bytes", landed.video.size, service=self.client.service_name)
        metrics.gauge("landing.throughput", landed.video.size / seconds / 1e6, service=self.client.service_name)
        self.ledger.apply(post_id, Event.LANDED, output_uri=landed.video.uri, sidecar_uri=landed.sidecar_uri,
                          sha256=landed.video.sha256, size=landed.video.size, error=None)
        entry.claim_token = None  # the landing released it
        if entry.had_verdict and self.ledger.verdicts is not None:
            self.ledger.verdicts.forget(post_id)  # it landed after all: the old verdict no longer holds
        self.ledger.settle(post_id, Settled.LANDED)
