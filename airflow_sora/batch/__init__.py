"""The parts of one operator try (plan, submit, wait, land), each in its own module, composed by ``BatchRun``.

A reader following one video: ``videos`` parses it, ``batch.plan`` decides with ``lifecycle.decide``,
``batch.submit`` pays for it, ``batch.wait`` (or the trigger) learns its result, ``batch.land`` lands it
through ``landing``, and the operator reports it from the ``batch.ledger``.
"""

from airflow_sora.batch.run import BatchRun
from airflow_sora.batch.settings import BatchSettings
from airflow_sora.lifecycle import IfExists, OnUnknownSubmit

__all__ = ["BatchRun", "BatchSettings", "IfExists", "OnUnknownSubmit"]
