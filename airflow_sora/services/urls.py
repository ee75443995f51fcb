"""Validation of Sora share links, done before anything is spent."""

from __future__ import annotations

import re

from airflow_sora.services.errors import InvalidVideoUrlError

MAX_VIDEO_URL_LENGTH = 500
EXPECTED_FORM = "https://sora.chatgpt.com/p/s_<32 lowercase hex characters>[?query][#fragment]"

POST_ID_PATTERN = r"s_[0-9a-f]{32}"  # the one definition of a post id: it names objects, so it must be strict
_POST_ID = re.compile(POST_ID_PATTERN)
_SORA_URL = re.compile(
    r"https://sora\.chatgpt\.com/p/(?P<post_id>" + POST_ID_PATTERN + r")"
    r"(?:\?[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*)?"
    r"(?:#[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*)?"
)


def validate_video_url(url: object) -> str:
    """Return the URL unchanged if it is a public Sora post link, else raise ``InvalidVideoUrlError``.

    The check is strict on purpose: both services charge before they look closely, so anything that is
    not exactly the documented shape is refused here, naming the URL and the expected form.
    """
    if not isinstance(url, str):
        raise InvalidVideoUrlError(
            f"Video URL must be a string, got {type(url).__name__}. Expected {EXPECTED_FORM}.",
            url=None,
        )
    shown = url if len(url) <= 120 else url[:117] + "..."
    if len(url) > MAX_VIDEO_URL_LENGTH:
        raise InvalidVideoUrlError(
            f"Video URL {shown!r} is {len(url)} characters long; the services accept at most "
            f"{MAX_VIDEO_URL_LENGTH}. Expected {EXPECTED_FORM}.",
            url=url,
        )
    if url != url.strip():
        raise InvalidVideoUrlError(
            f"Video URL {shown!r} has leading or trailing whitespace; remove it. Expected {EXPECTED_FORM}.",
            url=url,
        )
    if not _SORA_URL.fullmatch(url):
        raise InvalidVideoUrlError(
            f"Video URL {shown!r} is not a public Sora post link. Expected {EXPECTED_FORM}; "
            "copy the share link of the video from sora.chatgpt.com.",
            url=url,
        )
    return url


def post_id_from_url(url: str) -> str:
    """Return the ``s_<hex>`` post id of a validated Sora URL."""
    match = _SORA_URL.fullmatch(validate_video_url(url))
    assert match is not None  # validate_video_url guarantees the match
    return match.group("post_id")


def is_post_id(value: object) -> bool:
    return isinstance(value, str) and _POST_ID.fullmatch(value) is not None


def is_valid_video_url(url: object) -> bool:
    try:
        validate_video_url(url)
    except InvalidVideoUrlError:
        return False
    return True
