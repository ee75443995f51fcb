"""Operators: the watermark remover, for one URL or many."""

from airflow_sora.operators.remove import SoraWatermarkRemoverOperator

__all__ = ["SoraWatermarkRemoverOperator"]
