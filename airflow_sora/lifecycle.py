"""The per-video life cycle: phases, the events that move a video between them, and what each costs.

This module is the single place that decides what happens next to a video. ``TRANSITIONS`` says, for every
event, which phases it may come from, which phase it leads to, how it changes the number of paid creates,
and whether the new phase must be written to durable state before anything else happens (money is state:
an intent before every create, the task id right after it). ``decide`` says what a try does with a video it
finds in a given phase. Both are pure: the parts that talk to services and storage only carry them out.

::

    (new) --create_sent--> intent --task_created--> submitted --task_succeeded--> finished --landed--> landed*
                             |  \\--result_returned (SaveSora) ------------------->/   ^  |
                             |--error_reply--> not_created (nothing charged)            |  \\--landing_failed (stays)
                             |--url_refused--> rejected                                 |
                             |--create_failed[_refunded]--> failed <--task_failed-- submitted
                             \\--no_reply--> intent (may have been charged: never resubmitted silently)
    landed --object_missing--> finished (land again from the known result, free)

    * the sidecar written beside the video is the durable record of a landing (no state write)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

IfExists = Literal["skip", "overwrite", "fail"]
OnUnknownSubmit = Literal["fail", "resubmit"]


class Phase(str, Enum):
    """Where a video stands. Persisted in its state record (``None`` there means never touched)."""

    INTENT = "intent"  # about to create: if no task id follows, the create may or may not have happened
    NOT_CREATED = "not_created"  # the service answered the create with an error: nothing was charged
    SUBMITTED = "submitted"  # a task id is known; the result is not
    FINISHED = "finished"  # the result is known and waits to be landed
    LANDED = "landed"
    FAILED = "failed"  # the service failed the work; not resubmitted unless asked
    REJECTED = "rejected"  # the service refused the video URL


class Event(str, Enum):
    """What can happen to a video. Each is produced by exactly one part (submit, wait or land)."""

    CREATE_SENT = "create_sent"  # submit: about to send a paid create
    TASK_CREATED = "task_created"  # submit: the service answered with a task id (Kie)
    RESULT_RETURNED = "result_returned"  # submit: the service answered with the finished result (SaveSora)
    ERROR_REPLY = "error_reply"  # submit: an error reply; nothing was created
    URL_REFUSED = "url_refused"  # submit: the service refused the URL as invalid
    CREATE_FAILED = "create_failed"  # submit: the service failed the work at once, charged
    CREATE_FAILED_REFUNDED = "create_failed_refunded"  # submit: ... and refunded it (SaveSora 5002)
    NO_REPLY = "no_reply"  # submit: the create got no reply (timeout, reset): it may have been charged
    TASK_SUCCEEDED = "task_succeeded"  # wait: a poll found the task done
    TASK_FAILED = "task_failed"  # wait: a poll found the task failed
    LANDED = "landed"  # land: video and sidecar published
    LANDING_FAILED = "landing_failed"  # land: download or publication failed; the result is still known
    OBJECT_MISSING = "object_missing"  # plan: recorded as landed here, but the object is gone


_NEW = None  # a video with no record yet
_CREATABLE = frozenset({_NEW, Phase.NOT_CREATED, Phase.INTENT, Phase.FAILED})


@dataclass(frozen=True)
class Transition:
    sources: frozenset[Phase | None]
    target: Phase
    charge: int  # change to the number of paid creates this video has cost in this logical run
    persist: bool  # write the record before going on (False: cheap to learn again, e.g. by a free poll)
    verdict: Literal["failed", "rejected"] | None = None  # the service's verdict, remembered by the folder


TRANSITIONS: Mapping[Event, Transition] = {
    Event.CREATE_SENT: Transition(_CREATABLE, Phase.INTENT, +1, True),
    Event.TASK_CREATED: Transition(frozenset({Phase.INTENT}), Phase.SUBMITTED, 0, True),
    Event.RESULT_RETURNED: Transition(frozenset({Phase.INTENT}), Phase.FINISHED, 0, True),
    Event.ERROR_REPLY: Transition(frozenset({Phase.INTENT}), Phase.NOT_CREATED, -1, True),
    Event.URL_REFUSED: Transition(frozenset({Phase.INTENT}), Phase.REJECTED, -1, True, "rejected"),
    Event.CREATE_FAILED: Transition(frozenset({Phase.INTENT}), Phase.FAILED, 0, True, "failed"),
    Event.CREATE_FAILED_REFUNDED: Transition(frozenset({Phase.INTENT}), Phase.FAILED, -1, True),
    Event.NO_REPLY: Transition(frozenset({Phase.INTENT}), Phase.INTENT, 0, True),
    Event.TASK_SUCCEEDED: Transition(frozenset({Phase.SUBMITTED}), Phase.FINISHED, 0, False),
    Event.TASK_FAILED: Transition(frozenset({Phase.SUBMITTED}), Phase.FAILED, 0, True, "failed"),
    # The sidecar, written under the landing lease, is the durable record of a landing: no state write.
    Event.LANDED: Transition(frozenset({Phase.FINISHED}), Phase.LANDED, 0, False),
    Event.LANDING_FAILED: Transition(frozenset({Phase.FINISHED}), Phase.FINISHED, 0, False),
    Event.OBJECT_MISSING: Transition(frozenset({Phase.LANDED}), Phase.FINISHED, 0, False),
}


class IllegalTransition(RuntimeError):
    """A part tried to move a video along an edge the life cycle does not have: a bug, never user input."""


def transition(phase: Phase | None, event: Event) -> Transition:
    """The edge ``event`` takes from ``phase``; raises ``IllegalTransition`` if there is none."""
    rule = TRANSITIONS[event]
    if phase not in rule.sources:
        shown = phase.value if phase else "new"
        raise IllegalTransition(f"{event.value} cannot happen to a video in phase {shown}")
    return rule


# What a try does with each video --------------------------------------------------------------------


class Action(str, Enum):
    SUBMIT = "submit"  # pay for a (first or repeated) create
    WAIT = "wait"  # a task id is known: poll it (free)
    LAND = "land"  # the result is known: land it (free)
    SETTLE = "settle"  # nothing to do in this try: report ``status`` with ``reason``


class Settled(str, Enum):
    """The final word on a video, as the manifest reports it."""

    LANDED = "landed"
    SKIPPED = "skipped"
    FAILED = "failed"
    REJECTED = "rejected"
    NOT_SUBMITTED = "not_submitted"  # a guard rail (the budget) kept this try from paying for it


@dataclass(frozen=True)
class Decision:
    action: Action
    status: Settled | None = None
    reason: str | None = None
    loud: bool = False  # the action spends money the user asked to spend despite the risk: log it loudly


@dataclass(frozen=True)
class Policy:
    """The operator's settings that change what a video costs."""

    if_exists: IfExists = "skip"
    on_unknown_submit: OnUnknownSubmit = "fail"
    resubmit_failed: bool = False
    retry_failed_after: float | None = 24 * 3600.0  # seconds; None: never automatically; 0: always
    retry_rejected: bool = False


@dataclass(frozen=True)
class PastVerdict:
    """What the output folder remembers the service said about a video in an earlier run."""

    kind: Literal["failed", "rejected"]
    age: float  # seconds since it was given


def decide(phase: Phase | None, *, has_result: bool, landed_here: bool, policy: Policy,
           error: str | None = None, landed_by_this_run: bool = False,
           past_verdict: PastVerdict | None = None) -> Decision:
    """What this try does with a video found in ``phase``.

    ``landed_here``: a video and sidecar for this post id are in the output folder. ``landed_by_this_run``:
    that sidecar says this logical run (dag, run, task, map index) landed it, so an earlier try finished the
    video after its last state write. ``has_result``: the record holds a result that can be landed without
    asking the service again. ``past_verdict``: the service failed or rejected this video in an earlier run
    into the same folder.
    """
    if landed_here and landed_by_this_run and phase in (Phase.SUBMITTED, Phase.FINISHED, Phase.LANDED):
        return Decision(Action.SETTLE, Settled.LANDED)
    if phase is Phase.LANDED:
        # Gone since: land it again from the known result (the planner reports one it no longer knows).
        return Decision(Action.SETTLE, Settled.LANDED) if landed_here else Decision(Action.LAND)
    if phase is Phase.FINISHED:
        return Decision(Action.LAND)
    if phase is Phase.SUBMITTED:
        return Decision(Action.WAIT)
    if phase is Phase.INTENT:
        if policy.on_unknown_submit == "resubmit":
            return Decision(Action.SUBMIT, loud=True)
        return Decision(Action.SETTLE, Settled.FAILED, "unknown")
    if phase is Phase.REJECTED:
        return Decision(Action.SETTLE, Settled.REJECTED, error)
    if phase is Phase.FAILED and not policy.resubmit_failed:
        return Decision(Action.SETTLE, Settled.FAILED, error)
    if phase is Phase.FAILED:
        return Decision(Action.SUBMIT, loud=True)
    # Nothing paid in this run (new, or an error reply created nothing): ``if_exists`` decides, then what the
    # service said about this video in earlier runs.
    if landed_here and policy.if_exists == "skip":
        return Decision(Action.SETTLE, Settled.SKIPPED)
    if landed_here and policy.if_exists == "fail":
        return Decision(Action.SETTLE, Settled.FAILED, "exists")
    if past_verdict is not None and past_verdict.kind == "rejected" and not policy.retry_rejected:
        return Decision(Action.SETTLE, Settled.FAILED, "verdict")
    if past_verdict is not None and past_verdict.kind == "failed" and not _retry_due(past_verdict, policy):
        return Decision(Action.SETTLE, Settled.FAILED, "verdict")
    return Decision(Action.SUBMIT)


def _retry_due(verdict: PastVerdict, policy: Policy) -> bool:
    if policy.retry_failed_after is None:
        return False
    return verdict.age >= policy.retry_failed_after


def unknown_create_message(url: str) -> str:
    return (f"a create for {url} was sent but its task id was never recorded (the worker died or the reply "
            "was lost), so it may have been charged; not resubmitted because on_unknown_submit='fail'. Check "
            "the service's dashboard, or re-run with on_unknown_submit='resubmit' to pay for a new attempt")
