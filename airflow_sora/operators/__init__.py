"""Operators: the watermark remover through a service, for one URL or many, and the local engine's."""

from airflow_sora.operators.local import SoraLocalWatermarkRemoverOperator
from airflow_sora.operators.remove import SoraWatermarkRemoverOperator

__all__ = ["SoraLocalWatermarkRemoverOperator", "SoraWatermarkRemoverOperator"]
