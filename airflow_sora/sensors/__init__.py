"""Sensors: wait for work submitted elsewhere."""

from airflow_sora.sensors.kie import KieTaskSensor

__all__ = ["KieTaskSensor"]
