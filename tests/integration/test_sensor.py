"""KieTaskSensor in poke mode and deferrable mode."""

from __future__ import annotations

import pytest

from airflow_sora._compat import AirflowFailException, TaskDeferred
from airflow_sora.sandbox import SandboxServer
from airflow_sora.sensors import KieTaskSensor
from airflow_sora.services import KieClient, ServiceConfig
from tests.conftest import VIDEO_URLS
from tests.integration.harness import TaskInstanceStandIn, run_trigger


def submitted(config: ServiceConfig, url: str) -> str:
    with KieClient(config) as client:
        return client.submit(url).task_id or ""


def test_poke_until_success(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    task_id = submitted(kie_config, VIDEO_URLS[0])
    sensor = KieTaskSensor(task_id="wait", kie_task_id=task_id, poke_interval=0.1, timeout=10)
    assert sensor.poke({}) is False  # just created: not visible yet
    ti = TaskInstanceStandIn()
    value = sensor.execute({"ti": ti})
    assert value["state"] == "succeeded" and value["result_urls"]
    assert ti.xcom["_link_KieTaskLink"].endswith(task_id)


def test_poke_fails_on_a_failed_task(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    sandbox_connections.set_faults(fail_video_urls=[VIDEO_URLS[0]])
    task_id = submitted(kie_config, VIDEO_URLS[0])
    sensor = KieTaskSensor(task_id="wait", kie_task_id=task_id, poke_interval=0.1, timeout=10)
    with pytest.raises(AirflowFailException, match="Internal server error"):
        sensor.execute({"ti": TaskInstanceStandIn()})


def test_deferrable(sandbox_connections: SandboxServer, kie_config: ServiceConfig) -> None:
    task_id = submitted(kie_config, VIDEO_URLS[0])
    sensor = KieTaskSensor(task_id="wait", kie_task_id=task_id, poke_interval=0.1, timeout=10, deferrable=True)
    with pytest.raises(TaskDeferred) as deferral:
        sensor.execute({"ti": TaskInstanceStandIn()})
    event = run_trigger(deferral.value.trigger)  # type: ignore[arg-type]
    assert sensor.execute_complete({}, event)["task_id"] == task_id


def test_deferrable_unknown_task_fails(sandbox_connections: SandboxServer) -> None:
    sensor = KieTaskSensor(task_id="wait", kie_task_id="task_nope", poke_interval=0.1, timeout=5, deferrable=True)
    with pytest.raises(TaskDeferred) as deferral:
        sensor.execute({"ti": TaskInstanceStandIn()})
    event = run_trigger(deferral.value.trigger)  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="Task not found"):
        sensor.execute_complete({}, event)
