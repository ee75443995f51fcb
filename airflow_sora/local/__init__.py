"""The local engine: remove the visible mark from Sora files on the worker itself, no paid service.

Decode (PyAV), find the mark per frame and segment (``find``), learn its alpha from the video (``matte``),
restore what is under it (``fill``), encode with the audio remuxed (``codec``); ``engine`` composes them with
bounded memory. Needs the ``local`` extra (``pip install "airflow-provider-sora[local]"``).

``clean_file(src, dst)`` cleans one file; ``python -m airflow_sora.local IN.mp4 OUT.mp4`` does the same
from a shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_sora.local.errors import LocalEngineError, LocalEngineUnavailableError, NotAVideoError
from airflow_sora.local.report import CleanReport, MarkSegment
from airflow_sora.local.settings import EngineSettings

if TYPE_CHECKING:
    from airflow_sora.local.engine import clean_file as clean_file

__all__ = ["CleanReport", "EngineSettings", "LocalEngineError", "LocalEngineUnavailableError", "MarkSegment",
           "NotAVideoError", "clean_file"]


def __getattr__(name: str) -> Any:
    """``clean_file`` imports PyAV and OpenCV only when used: the rest of the provider works without them."""
    if name == "clean_file":
        try:
            from airflow_sora.local.engine import clean_file
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise LocalEngineUnavailableError(
                f"the local engine needs PyAV and OpenCV ({exc}): pip install \"airflow-provider-sora[local]\""
            ) from exc
        return clean_file
    raise AttributeError(name)
