"""A video is its Sora post id: each input URL is parsed once into a ``VideoRef`` that travels everywhere.

Share links of one post differ by tracking queries and fragments (``?psh=...``, ``#x``); they are one video.
Everything that decides money (de-duplication, state records, ``if_exists``) keys on the post id. The URL sent
to the service is the first variant given, since its query may matter to the service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_sora.services.errors import InvalidVideoUrlError
from airflow_sora.services.urls import post_id_from_url, validate_video_url


@dataclass(frozen=True)
class VideoRef:
    url: str  # the URL sent to the service: the first variant given
    post_id: str
    variants: tuple[str, ...] = field(default=())  # every other URL given for the same post, in order


@dataclass(frozen=True)
class RejectedUrl:
    url: str
    error: str


@dataclass(frozen=True)
class VideoList:
    videos: list[VideoRef]
    rejected: list[RejectedUrl]


def parse_video_list(raw: Iterable[Any]) -> VideoList:
    """Validate every URL (nothing is spent on a bad one) and merge the variants of each post, order kept."""
    by_post: dict[str, list[str]] = {}
    rejected: list[RejectedUrl] = []
    for item in raw:
        url = item if isinstance(item, str) else str(item)
        try:
            validate_video_url(url)
        except InvalidVideoUrlError as error:
            rejected.append(RejectedUrl(url, str(error)))
            continue
        urls = by_post.setdefault(post_id_from_url(url), [])
        if url not in urls:
            urls.append(url)
    videos = [VideoRef(urls[0], post_id, tuple(urls[1:])) for post_id, urls in by_post.items()]
    return VideoList(videos, rejected)
