"""What the local engine raises: one file's problem, named, never the batch's."""

from __future__ import annotations


class LocalEngineError(Exception):
    """The local engine could not clean one file; the message names the file and what is wrong."""


class NotAVideoError(LocalEngineError):
    """The file is not a video the engine can read: not a media file, truncated, or without a video stream."""


class LocalEngineUnavailableError(LocalEngineError):
    """PyAV or OpenCV is missing: install the ``local`` extra."""
