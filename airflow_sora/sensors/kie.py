"""``KieTaskSensor``: wait for a Kie task submitted elsewhere (deferrable or poke mode)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_sora._compat import AirflowException, AirflowFailException
from airflow_sora.hooks.kie import KieHook
from airflow_sora.links import KieTaskLink
from airflow_sora.polling import CallbackWatch, PollSchedule, WaitTracker
from airflow_sora.services.errors import ServiceError
from airflow_sora.services.models import TaskState, TaskStatus
from airflow_sora.triggers.kie import KieTaskTrigger, KieWaitEvent


class KieTaskSensor(BaseSensorOperator):
    """Succeed when the Kie task ``kie_task_id`` succeeded (XCom: its status with the result URLs).

    A task the service failed fails the sensor without retries; a transient poll error is retried by the
    client, then by the sensor's next poke.

    :param callback_inbox: the callback inbox the task's callbacks are recorded in (see
        ``airflow_sora.plugins.inbox``), when it was created with the provider's callback URL: the sensor then
        polls once a callback is heard, and otherwise only after ``callback_fallback_after`` seconds.
    :param callback_fallback_after: seconds before a task not heard of is polled anyway.
    """

    template_fields: Sequence[str] = ("kie_task_id", "conn_id", "callback_inbox")
    operator_extra_links = (KieTaskLink(),)

    def __init__(self, *, kie_task_id: str, conn_id: str = KieHook.default_conn_name,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 callback_inbox: str | None = None, callback_fallback_after: float = 60.0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        kwargs.setdefault("timeout", 900.0)
        super().__init__(**kwargs)
        self.kie_task_id = kie_task_id
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.callback_inbox = callback_inbox
        self.callback_fallback_after = callback_fallback_after
        self._tracker: WaitTracker | None = None
        self._watch: CallbackWatch | None = None

    def execute(self, context: Any) -> Any:
        KieTaskLink.persist(context, self.kie_task_id)
        if not self.deferrable:
            return super().execute(context)
        schedule = self._schedule()
        self.defer(
            trigger=KieTaskTrigger(task_ids=[self.kie_task_id], conn_id=self.conn_id,
                                   deadline=time.time() + float(self.timeout), poll_schedule=schedule.as_dict(),
                                   inbox=self.callback_inbox or None),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )
        return None

    def poke(self, context: Any) -> PokeReturnValue | bool:
        """One poll round, judged by the same ``WaitTracker`` as the trigger's and the operator's waits."""
        if self._tracker is None:  # the sensor's own timeout is the deadline
            self._tracker = WaitTracker([self.kie_task_id], deadline=float("inf"))
        if self.callback_inbox and not self._heard_or_due():
            self.log.info("Kie task %s: no callback yet, not polled", self.kie_task_id)
            return False
        try:
            with KieHook(self.conn_id).get_conn() as client:
                status = client.get_status(self.kie_task_id)
        except ServiceError as error:
            outcome = self._tracker.after_round({}, [error])
            if outcome is None:
                self.log.warning("Poll of Kie task %s failed, will poke again: %s", self.kie_task_id, error)
                return False
            if error.retryable:  # the service kept failing: a retry of the sensor may find it back
                raise AirflowException(f"Kie task {self.kie_task_id}: {outcome.message}") from None
            raise AirflowFailException(f"Kie task {self.kie_task_id}: {outcome.message}") from None
        self._tracker.after_round({self.kie_task_id: status}, [])
        if self._watch is not None:
            self._watch.polled({self.kie_task_id: status})
        return self._outcome(status)

    def _schedule(self) -> PollSchedule:
        return PollSchedule(first_poll_after=0.0, interval=float(self.poke_interval),
                            callback_silence=self.callback_fallback_after if self.callback_inbox else 0.0)

    def _heard_or_due(self) -> bool:
        """Poke mode with callbacks: one listing of the inbox, then the same decision as the trigger's."""
        from airflow_sora.plugins.inbox import CallbackInbox

        if self._watch is None:
            self._watch = CallbackWatch(self._schedule())
        if not self._watch.fallback:
            try:
                self._watch.hear(CallbackInbox.at(str(self.callback_inbox)).heard())
            except Exception as error:  # polling covers a store that cannot be listed right now
                self.log.warning("Could not read the callback inbox, polling covers it: %s", type(error).__name__)
        return bool(self._watch.due([self.kie_task_id]))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        wait = KieWaitEvent.from_payload(event)
        status = wait.tasks.get(self.kie_task_id)
        if wait.status == "error":
            raise AirflowFailException(f"Kie task {self.kie_task_id}: {wait.message}")
        if status is None or wait.status == "timeout":
            raise AirflowException(f"Kie task {self.kie_task_id} did not finish in time: {wait.message}")
        outcome = self._outcome(status)
        return outcome.xcom_value if isinstance(outcome, PokeReturnValue) else None

    def _outcome(self, status: TaskStatus) -> PokeReturnValue | bool:
        if status.state is TaskState.FAILED:
            raise AirflowFailException(
                f"Kie task {self.kie_task_id} failed: {status.fail_message} (code {status.fail_code})"
            )
        if status.state is TaskState.SUCCEEDED:
            return PokeReturnValue(is_done=True, xcom_value=status.model_dump(mode="json"))
        self.log.info("Kie task %s is %s", self.kie_task_id, status.raw_state or status.state.value)
        return False
