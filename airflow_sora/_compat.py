"""Imports that moved between Airflow 3.1 and 3.3, resolved once."""

from __future__ import annotations

try:  # Airflow >= 3.2 (task SDK)
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        TaskDeferred,
    )

__all__ = ["AirflowException", "AirflowFailException", "TaskDeferred"]
