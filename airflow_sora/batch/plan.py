"""Part one of a try: find out what each video needs, spending nothing.

Reads the run's state records (its own folder: one listing, then only the records that exist), the landed
copies in the output folder (a lookup of each video's sidecar, a few at a time; a listing only where the run
is large enough to outweigh it) and the verdicts (a page of listing, then lookups), and asks
``lifecycle.decide`` what to do with each video: the cost follows the run, not the folder's history. Videos
that need nothing more are settled here; the rest go to submit, wait or land.
"""

from __future__ import annotations

import logging

from airflow_sora.batch.claims import Claims
from airflow_sora.batch.ledger import Entry, Ledger
from airflow_sora.batch.settings import BatchSettings
from airflow_sora.landing import ResultLander
from airflow_sora.lifecycle import Action, Event, Phase, Settled, decide, unknown_create_message
from airflow_sora.sidecar import Sidecar
from airflow_sora.state import StateRecordError
from airflow_sora.verdicts import Verdict, VerdictBook

log = logging.getLogger(__name__)

# Phases where a landed copy changes the decision: if_exists for unpaid videos, "already landed by this run"
# for paid ones (the sidecar is the record of a landing).
_EXISTS_MATTERS = (None, Phase.NOT_CREATED, Phase.SUBMITTED, Phase.FINISHED, Phase.LANDED)


class Planner:
    def __init__(self, ledger: Ledger, lander: ResultLander, settings: BatchSettings,
                 verdicts: VerdictBook | None = None, claims: Claims | None = None) -> None:
        self.claims = claims
        self.ledger = ledger
        self.lander = lander
        self.settings = settings
        self.verdicts = verdicts
        self._verdicts: dict[str, Verdict] = {}

    def plan(self) -> list[str]:
        """Settle what needs no new spending; return the post ids that need a (first or repeated) create."""
        entries = list(self.ledger.entries.values())
        records = self.ledger.store.load_all(e.video for e in entries)
        for entry in entries:
            found = records[entry.video.post_id]
            if isinstance(found, StateRecordError):
                log.error("%s", found)
                self.ledger.settle(entry.video.post_id, Settled.FAILED, error=str(found))
            else:
                entry.record = found
        open_entries = [e for e in entries if e.outcome is None]
        landed = self._landed_copies(open_entries)
        if self.verdicts is not None:  # only videos with nothing paid in this run can be held back
            unpaid = [e.video.post_id for e in open_entries if e.phase in (None, Phase.NOT_CREATED)]
            self._verdicts = self.verdicts.load(unpaid) if unpaid else {}
        to_submit: list[str] = []
        for entry in open_entries:
            if self._act(entry, landed.get(entry.video.post_id)):
                to_submit.append(entry.video.post_id)
            elif self.claims is not None and entry.outcome is None and entry.phase in (Phase.SUBMITTED,
                                                                                       Phase.FINISHED):
                self.claims.claim(entry)  # paid by this run: an earlier try's claim is taken again, renewed
        return to_submit

    def _act(self, entry: Entry, sidecar: Sidecar | None) -> bool:
        """Carry out the decision for one video; True means it needs a create."""
        post_id, record = entry.video.post_id, entry.record
        verdict = self._verdicts.get(post_id)
        entry.had_verdict = verdict is not None
        decision = decide(entry.phase, has_result=bool(record and record.result),
                          landed_here=sidecar is not None, policy=self.settings.policy,
                          error=record.error if record else None,
                          landed_by_this_run=sidecar is not None and self._landed_by_this_run(sidecar),
                          past_verdict=verdict.past() if verdict is not None else None)
        if decision.action is Action.SUBMIT:
            if decision.loud:
                log.warning("RESUBMITTING %s (a new charge): its earlier create %s, and %s asked for it",
                            entry.video.url, "may have been charged" if entry.phase is Phase.INTENT else "failed",
                            "on_unknown_submit='resubmit'" if entry.phase is Phase.INTENT else "resubmit_failed")
            return True
        if decision.action is Action.LAND and entry.phase is Phase.LANDED:
            if record is None or record.result is None:
                self.ledger.settle(post_id, Settled.FAILED, error=f"{self.lander.video_path(post_id)} was "
                                   "landed by this run but is gone, and its result link is not known any more")
            else:
                self.ledger.apply(post_id, Event.OBJECT_MISSING)  # land it again from the known result, free
        elif decision.action is Action.SETTLE:
            assert decision.status is not None
            self._settle(entry, decision.status, decision.reason, sidecar)
        return False  # WAIT and LAND are picked up from the ledger's phases

    def _landed_by_this_run(self, sidecar: Sidecar) -> bool:
        airflow = (sidecar.model_extra or {}).get("airflow") or {}
        scope = self.ledger.store.scope.as_dict()
        return all(airflow.get(key) == value for key, value in scope.items())

    def _settle(self, entry: Entry, status: Settled, reason: str | None, sidecar: Sidecar | None) -> None:
        post_id = entry.video.post_id
        if status in (Settled.SKIPPED, Settled.LANDED) and sidecar is not None:
            self.ledger.settle(post_id, status, **self.lander.landed_fields(post_id, sidecar))
        elif reason == "unknown":
            self.ledger.settle(post_id, status, error=unknown_create_message(entry.video.url))
        elif reason == "verdict" and post_id in self._verdicts:
            self.ledger.settle(post_id, status, error=self._verdicts[post_id].explain(
                retry_failed_after=self.settings.retry_failed_after))
        elif reason == "exists":
            self.ledger.settle(post_id, status, error=f"{self.lander.video_path(post_id)} already exists "
                               "(if_exists='fail'); use 'skip' or 'overwrite'")
        else:
            self.ledger.settle(post_id, status, error=reason)

    def _landed_copies(self, entries: list[Entry]) -> dict[str, Sidecar]:
        """The sidecar of every video already landed in the output folder, where the decision depends on it."""
        candidates = [e.video.post_id for e in entries if e.phase in _EXISTS_MATTERS]
        if not candidates or (self.settings.if_exists == "overwrite"
                              and all(e.phase in (None, Phase.NOT_CREATED) for e in entries)):
            return {}
        return self.lander.landed_copies(candidates, concurrency=self.settings.plan_concurrency)
