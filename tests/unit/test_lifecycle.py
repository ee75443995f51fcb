"""Every edge of the per-video life cycle, every edge it must not have, and every start-of-try decision."""

from __future__ import annotations

import itertools

import pytest

from airflow_sora.lifecycle import (
    TRANSITIONS,
    Action,
    Event,
    IllegalTransition,
    Phase,
    Policy,
    Settled,
    decide,
    transition,
)

NEW = None
ALL_PHASES: list[Phase | None] = [NEW, *Phase]

# (event, from, to, change in paid creates, written before going on): the life cycle as the spec reads.
EDGES = [
    (Event.CREATE_SENT, NEW, Phase.INTENT, +1, True),
    (Event.CREATE_SENT, Phase.NOT_CREATED, Phase.INTENT, +1, True),
    (Event.CREATE_SENT, Phase.INTENT, Phase.INTENT, +1, True),  # on_unknown_submit='resubmit'
    (Event.CREATE_SENT, Phase.FAILED, Phase.INTENT, +1, True),  # resubmit_failed=True
    (Event.TASK_CREATED, Phase.INTENT, Phase.SUBMITTED, 0, True),
    (Event.RESULT_RETURNED, Phase.INTENT, Phase.FINISHED, 0, True),
    (Event.ERROR_REPLY, Phase.INTENT, Phase.NOT_CREATED, -1, True),
    (Event.URL_REFUSED, Phase.INTENT, Phase.REJECTED, -1, True),
    (Event.CREATE_FAILED, Phase.INTENT, Phase.FAILED, 0, True),
    (Event.CREATE_FAILED_REFUNDED, Phase.INTENT, Phase.FAILED, -1, True),
    (Event.NO_REPLY, Phase.INTENT, Phase.INTENT, 0, True),
    (Event.TASK_SUCCEEDED, Phase.SUBMITTED, Phase.FINISHED, 0, False),
    (Event.TASK_FAILED, Phase.SUBMITTED, Phase.FAILED, 0, True),
    (Event.LANDED, Phase.FINISHED, Phase.LANDED, 0, False),  # the sidecar is the record of a landing
    (Event.LANDING_FAILED, Phase.FINISHED, Phase.FINISHED, 0, False),
    (Event.OBJECT_MISSING, Phase.LANDED, Phase.FINISHED, 0, False),
]


@pytest.mark.parametrize(("event", "source", "target", "charge", "persist"), EDGES,
                         ids=[f"{e.value}-from-{s.value if s else 'new'}" for e, s, *_ in EDGES])
def test_each_edge(event: Event, source: Phase | None, target: Phase, charge: int, persist: bool) -> None:
    rule = transition(source, event)
    assert (rule.target, rule.charge, rule.persist) == (target, charge, persist)


def test_no_other_edges_exist() -> None:
    allowed = {(event, source) for event, source, *_ in EDGES}
    for event, source in itertools.product(Event, ALL_PHASES):
        if (event, source) in allowed:
            continue
        with pytest.raises(IllegalTransition, match=event.value):
            transition(source, event)
    assert set(TRANSITIONS) == set(Event)


def test_money_moments_are_written_before_anything_else() -> None:
    """The retry-safety kill points: an intent before the paid call, and its answer right after."""
    for event in (Event.CREATE_SENT, Event.TASK_CREATED, Event.RESULT_RETURNED, Event.NO_REPLY):
        assert TRANSITIONS[event].persist, event


def test_a_create_and_its_error_reply_cost_nothing_together() -> None:
    charge = transition(NEW, Event.CREATE_SENT).charge + transition(Phase.INTENT, Event.ERROR_REPLY).charge
    assert charge == 0
    unknown = transition(NEW, Event.CREATE_SENT).charge + transition(Phase.INTENT, Event.NO_REPLY).charge
    assert unknown == 1  # a create with no reply counts as charged


DEFAULT = Policy()


@pytest.mark.parametrize(("phase", "landed_here", "has_result", "policy", "expected"), [
    (NEW, False, False, DEFAULT, (Action.SUBMIT, None)),
    (NEW, True, False, DEFAULT, (Action.SETTLE, Settled.SKIPPED)),
    (NEW, True, False, Policy(if_exists="overwrite"), (Action.SUBMIT, None)),
    (NEW, True, False, Policy(if_exists="fail"), (Action.SETTLE, Settled.FAILED)),
    (Phase.NOT_CREATED, False, False, DEFAULT, (Action.SUBMIT, None)),
    (Phase.NOT_CREATED, True, False, DEFAULT, (Action.SETTLE, Settled.SKIPPED)),
    (Phase.INTENT, False, False, DEFAULT, (Action.SETTLE, Settled.FAILED)),
    (Phase.INTENT, False, False, Policy(on_unknown_submit="resubmit"), (Action.SUBMIT, None)),
    (Phase.SUBMITTED, False, False, DEFAULT, (Action.WAIT, None)),
    (Phase.SUBMITTED, True, False, Policy(if_exists="overwrite"), (Action.WAIT, None)),
    (Phase.FINISHED, False, True, DEFAULT, (Action.LAND, None)),
    (Phase.LANDED, True, True, DEFAULT, (Action.SETTLE, Settled.LANDED)),
    (Phase.LANDED, False, True, DEFAULT, (Action.LAND, None)),
    (Phase.SUBMITTED, True, False, Policy(if_exists="overwrite"), (Action.WAIT, None)),
    (Phase.FAILED, False, False, DEFAULT, (Action.SETTLE, Settled.FAILED)),
    (Phase.FAILED, False, False, Policy(resubmit_failed=True), (Action.SUBMIT, None)),
    (Phase.REJECTED, False, False, Policy(resubmit_failed=True), (Action.SETTLE, Settled.REJECTED)),
])
def test_decide(phase: Phase | None, landed_here: bool, has_result: bool, policy: Policy,
                expected: tuple[Action, Settled | None]) -> None:
    decision = decide(phase, has_result=has_result, landed_here=landed_here, policy=policy)
    assert (decision.action, decision.status) == expected


@pytest.mark.parametrize("phase", [Phase.SUBMITTED, Phase.FINISHED, Phase.LANDED])
def test_a_landing_by_this_run_is_found_from_its_sidecar(phase: Phase) -> None:
    """A try killed after the sidecar but before any further write is settled, not landed or polled again."""
    decision = decide(phase, has_result=False, landed_here=True, landed_by_this_run=True, policy=DEFAULT)
    assert (decision.action, decision.status) == (Action.SETTLE, Settled.LANDED)
    other_run = decide(phase, has_result=True, landed_here=True, landed_by_this_run=False, policy=DEFAULT)
    assert other_run.action is not Action.SUBMIT  # paid already in this run: never paid again


def test_paying_again_for_a_video_that_may_already_be_paid_is_loud() -> None:
    assert decide(Phase.INTENT, has_result=False, landed_here=False,
                  policy=Policy(on_unknown_submit="resubmit")).loud
    assert decide(Phase.FAILED, has_result=False, landed_here=False, policy=Policy(resubmit_failed=True)).loud
    assert not decide(NEW, has_result=False, landed_here=False, policy=DEFAULT).loud


def test_every_submit_decision_is_a_legal_create() -> None:
    """Whatever ``decide`` sends to submit, the life cycle lets a create start from there."""
    for phase, landed, result in itertools.product(ALL_PHASES, (False, True), (False, True)):
        for policy in (DEFAULT, Policy(if_exists="overwrite", on_unknown_submit="resubmit", resubmit_failed=True)):
            if decide(phase, has_result=result, landed_here=landed, policy=policy).action is Action.SUBMIT:
                transition(phase, Event.CREATE_SENT)
