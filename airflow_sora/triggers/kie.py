"""``KieTaskTrigger``: wait in the triggerer for one or many Kie tasks, with one shared async client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_sora.hooks.kie import KieHook
from airflow_sora.polling import PollSchedule
from airflow_sora.services.base import AsyncWatermarkService
from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskStatus

DEFAULT_TIMEOUT = 900.0


class KieTaskTrigger(BaseTrigger):
    """Poll Kie task ids until all are terminal or the wall-clock ``deadline`` (epoch seconds) passes.

    Yields exactly one event: ``{"status": "success" | "timeout" | "error", "message", "tasks": {id: status}}``.
    Serialises only ids, conn id, deadline and polling settings: the key is read from the connection in the
    triggerer. Up to ``max_consecutive_errors`` poll rounds with transient errors are tolerated; a permanent
    error (bad key, unknown task) ends the wait at once.
    """

    def __init__(self, task_ids: list[str], conn_id: str = KieHook.default_conn_name, deadline: float | None = None,
                 poll_schedule: dict[str, float] | None = None, max_consecutive_errors: int = 5,
                 max_in_flight: int = 10) -> None:
        super().__init__()
        self.task_ids = list(dict.fromkeys(task_ids))
        self.conn_id = conn_id
        self.deadline = deadline if deadline is not None else time.time() + DEFAULT_TIMEOUT
        self.poll_schedule = dict(poll_schedule or PollSchedule().as_dict())
        self.max_consecutive_errors = max_consecutive_errors
        self.max_in_flight = max_in_flight

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_ids": self.task_ids,
                "conn_id": self.conn_id,
                "deadline": self.deadline,
                "poll_schedule": self.poll_schedule,
                "max_consecutive_errors": self.max_consecutive_errors,
                "max_in_flight": self.max_in_flight,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        statuses: dict[str, TaskStatus] = {}
        try:
            client = await KieHook(self.conn_id).aget_conn()
        except (ServiceError, ValueError) as error:
            yield TriggerEvent(self._event("error", f"cannot poll Kie: {error}", statuses))
            return
        async with client:
            yield TriggerEvent(await self._wait(client, statuses))

    async def _wait(self, client: AsyncWatermarkService, statuses: dict[str, TaskStatus]) -> dict[str, Any]:
        schedule = PollSchedule(**self.poll_schedule)
        pending = [t for t in self.task_ids if t not in statuses]
        started = time.monotonic()
        failing_rounds = 0
        await asyncio.sleep(min(schedule.first_poll_after, max(0.0, self.deadline - time.time())))
        while True:
            if time.time() >= self.deadline:
                return self._event("timeout", f"{len(pending)} of {len(self.task_ids)} Kie tasks were still "
                                   "running at the deadline", statuses)
            errors = await self._poll_round(client, pending, statuses)
            permanent = [e for e in errors if not e.retryable]
            if permanent:
                return self._event("error", f"polling stopped: {permanent[0]}", statuses)
            pending = [t for t in pending if not (t in statuses and statuses[t].terminal)]
            if not pending:
                return self._event("success", f"all {len(self.task_ids)} Kie tasks finished", statuses)
            failing_rounds = failing_rounds + 1 if errors else 0
            if failing_rounds > self.max_consecutive_errors:
                return self._event("error", f"{failing_rounds} consecutive poll rounds failed: {errors[0]}",
                                   statuses)
            delay = schedule.delay(time.monotonic() - started)
            await asyncio.sleep(min(delay, max(0.0, self.deadline - time.time())))

    async def _poll_round(self, client: AsyncWatermarkService, pending: list[str],
                          statuses: dict[str, TaskStatus]) -> list[ServiceError]:
        """Poll every pending task once, at most ``max_in_flight`` at a time; return the errors seen."""
        gate = asyncio.Semaphore(self.max_in_flight)
        errors: list[ServiceError] = []

        async def poll(task_id: str) -> None:
            async with gate:
                try:
                    statuses[task_id] = await client.get_status(task_id)
                except ServiceError as error:
                    errors.append(error)

        await asyncio.gather(*(poll(t) for t in pending))
        return errors

    def _event(self, status: str, message: str, statuses: dict[str, TaskStatus]) -> dict[str, Any]:
        return {"status": status, "message": message,
                "tasks": {task_id: s.model_dump(mode="json") for task_id, s in statuses.items()}}
