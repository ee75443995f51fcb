"""One charge per video per output folder, across concurrent runs.

With ``if_exists="skip"``, a run claims a video before paying for it: the claim is the video's landing lease
(``_state/_leases/<post_id>.json``, created only if absent), taken early and held until the video lands, so
taking it costs no extra request. Another run that asks for the same post id into the same folder finds the
claim, does not pay, and waits (at most ``claim_wait``) for the holder's file, then reports the video
``skipped`` with it. If the holder dies, its claim expires and a later run takes over; nothing is paid twice
while the holder lives.
"""

from __future__ import annotations

import logging
import time

from airflow_sora.batch.ledger import Entry, Ledger
from airflow_sora.landing import ResultLander
from airflow_sora.lease import LEASE_TTL
from airflow_sora.lifecycle import Phase, Settled
from airflow_sora.manifest import VideoStatus
from airflow_sora.sidecar import Sidecar
from airflow_sora.storeretry import StoreUnavailableError
from airflow_sora.verdicts import VerdictBook

log = logging.getLogger(__name__)

CLOCK_MARGIN = 30.0
_GIVEN_UP = (VideoStatus.FAILED, VideoStatus.REJECTED, VideoStatus.NOT_SUBMITTED)


class Claims:
    def __init__(self, ledger: Ledger, lander: ResultLander, verdicts: VerdictBook, *, ttl: float, wait: float,
                 retry_failed_after: float | None, poll: float = 1.0) -> None:
        self.ledger = ledger
        self.lander = lander
        self.verdicts = verdicts
        self.ttl = ttl  # long enough for the service and the landing; a dead holder blocks others this long
        self.wait = wait
        self.poll = poll
        self.retry_failed_after = retry_failed_after
        # The folder was looked at (planned) after this moment; a landing marked since then is another run's
        # that this run could not have seen. The margin covers clocks of different workers that disagree.
        self.looked_at = time.time() - CLOCK_MARGIN

    def claim(self, entry: Entry) -> bool:
        """True if this run may pay for the video; False if another live run is paying for it."""
        if entry.claim_token is not None:
            return True
        token, held_by = self.lander.claim(entry.video.post_id, ttl=self.ttl, looked_at=self.looked_at)
        if token is not None:
            entry.claim_token, entry.claimed_at = token, time.time()
            return True
        entry.claimed_by = held_by
        log.info("%s is being paid for by another run (%s): waiting for its file instead of paying again",
                 entry.video.url, (held_by or {}).get("holder"))
        return False

    def fresh_token(self, entry: Entry) -> str | None:
        """The claim's token if it cannot have expired yet (the landing then needs no new lease)."""
        if entry.claim_token is None or entry.claimed_at is None:
            return None
        return entry.claim_token if time.time() - entry.claimed_at < self.ttl - LEASE_TTL else None

    def await_others(self) -> None:
        """Wait for the videos other runs are paying for: each ends skipped (their file), or with a reason."""
        waiting = [e for e in self.ledger.entries.values() if e.outcome is None and e.claimed_by is not None]
        deadline = time.monotonic() + self.wait
        while waiting:
            try:
                landed = self.lander.landed_copies(e.video.post_id for e in waiting)
                waiting = [e for e in waiting if not self._settled_by_holder(e, landed)]
            except StoreUnavailableError as error:  # could not look: not "not there", so look again later
                log.warning("Looking for the files other runs are landing failed (%s); looking again", error)
            if waiting and time.monotonic() >= deadline:
                for entry in waiting:
                    self.ledger.settle(entry.video.post_id, Settled.FAILED, retryable=True, error=(
                        f"another run ({(entry.claimed_by or {}).get('holder')}) still holds its claim after "
                        f"claim_wait={self.wait:g} s; a retry finds it landed, or takes over if that run died"))
                return
            if waiting:
                time.sleep(self.poll)

    def _skipped_if_landed(self, entry: Entry, landed: dict[str, Sidecar]) -> bool:
        post_id = entry.video.post_id
        if post_id not in landed:
            return False
        self.ledger.settle(post_id, Settled.SKIPPED, **self.lander.landed_fields(post_id, landed[post_id]))
        return True

    def _settled_by_holder(self, entry: Entry, landed: dict[str, Sidecar]) -> bool:
        post_id = entry.video.post_id
        if self._skipped_if_landed(entry, landed):
            return True
        holder = (entry.claimed_by or {}).get("holder")
        current = self.lander.read_claim(post_id)
        alive = current is not None and float(current.get("expires_at", 0)) > time.time()
        if alive and current is not None and current.get("holder") == holder:
            return False  # the holder is still at it
        if current is not None and current.get("landed") and self._skipped_if_landed(
                entry, self.lander.landed_copies([post_id])):
            return True  # it landed between our look at the folder and this read
        verdict = self.verdicts.load([post_id]).get(post_id)
        if verdict is not None:
            self.ledger.settle(post_id, Settled.FAILED,
                               error=verdict.explain(retry_failed_after=self.retry_failed_after))
        else:
            self.ledger.settle(post_id, Settled.FAILED, retryable=True, error=(
                f"the run that claimed it ({holder}) ended without landing it; a retry pays for it"))
        return True

    def release_unlanded(self) -> None:
        """Give up the claims of videos this try did not land and will not pay for: the service failed them,
        or nothing was paid (others may pay, within the verdicts). A retryable paid video keeps its claim."""
        for entry in self.ledger.entries.values():
            outcome = entry.outcome
            unpaid = entry.record is None or entry.phase in (Phase.NOT_CREATED, Phase.REJECTED)
            if (entry.claim_token is not None and outcome is not None and outcome.status in _GIVEN_UP
                    and (unpaid or not outcome.retryable)):
                try:
                    self.lander.unclaim(entry.video.post_id, entry.claim_token)
                except Exception as error:  # the claim expires by itself; the outcomes stand
                    log.warning("Could not give up the claim on %s (%s: %s); it expires by itself",
                                entry.video.url, type(error).__name__, error)
                entry.claim_token = None
