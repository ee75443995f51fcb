"""Operator extra links: the Kie.ai dashboard entry of the submitted task."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

KIE_DASHBOARD = "https://kie.ai/logs"


def kie_task_url(task_id: str) -> str:
    return f"{KIE_DASHBOARD}?taskId={quote(task_id, safe='')}"


class KieTaskLink(BaseOperatorLink):
    """The link is stored in XCom right after submit; the UI reads it back under ``xcom_key``."""

    name = "Kie.ai task"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return str(value) if value else ""

    @classmethod
    def persist(cls, context: Any, task_id: str) -> None:
        context["ti"].xcom_push(key=cls().xcom_key, value=kie_task_url(task_id))
