"""Triggers: asynchronous waits that run in the triggerer, holding no worker slot."""

from airflow_sora.triggers.kie import KieTaskTrigger, KieWaitEvent

__all__ = ["KieTaskTrigger", "KieWaitEvent"]
