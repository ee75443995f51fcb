"""Run an operator try the way a worker would, including deferral, without a scheduler.

The task instance stand-in only carries identity and an XCom dict: everything the operator touches for real
(the sandbox, object storage, the trigger's event loop) is real. ``airflow dags test`` runs are in tests/e2e.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from airflow_sora._compat import TaskDeferred
from airflow_sora.triggers.kie import KieTaskTrigger


@dataclass
class TaskInstanceStandIn:
    dag_id: str = "sora_test"
    task_id: str = "remove"
    run_id: str = "manual__2026-11-21T00:00:00+00:00"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int | None = None) -> Any:
        assert task_ids == self.task_id and map_indexes == self.map_index
        return self.xcom.get(key)


@dataclass
class TryResult:
    value: Any = None
    error: BaseException | None = None
    deferred: bool = False
    trigger: KieTaskTrigger | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def run_trigger(trigger: KieTaskTrigger) -> dict[str, Any]:
    """Serialise and rebuild the trigger (as the triggerer does), run it, return its single event."""
    path, kwargs = trigger.serialize()
    assert path == "airflow_sora.triggers.kie.KieTaskTrigger"
    rebuilt = KieTaskTrigger(**kwargs)

    async def first_event() -> dict[str, Any]:
        async for event in rebuilt.run():
            return dict(event.payload)
        raise AssertionError("trigger ended without an event")

    return asyncio.run(first_event())


def run_try(operator: Any, ti: TaskInstanceStandIn | None = None) -> TryResult:
    """One try: execute, and if it defers, run the trigger and resume with ``execute_complete``."""
    ti = ti or TaskInstanceStandIn()
    context = {"ti": ti}
    result = TryResult()
    try:
        result.value = operator.execute(context)
        return result
    except TaskDeferred as deferral:
        result.deferred = True
        result.trigger = deferral.trigger  # type: ignore[assignment]
        event = run_trigger(deferral.trigger)  # type: ignore[arg-type]
        result.events.append(event)
        try:
            result.value = getattr(operator, deferral.method_name)(context, event, **(deferral.kwargs or {}))
        except Exception as error:
            result.error = error
    except Exception as error:
        result.error = error
    return result
