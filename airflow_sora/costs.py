"""What a list of videos costs, with the same arithmetic the operator's budget uses.

A pre-flight check (the example DAG's ``check_credits``) and the operator must never disagree about what a
run may spend: both count distinct videos (URL variants of one post are one video, invalid URLs cost
nothing) at the service's price, and both cap at ``max_credits`` the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_sora.videos import parse_video_list


def creates_within(max_credits: float | None, credits_per_video: float) -> int | None:
    """How many paid creates fit in ``max_credits`` (None: no budget, no cap)."""
    if max_credits is None:
        return None
    if credits_per_video <= 0:
        return None
    return int((max_credits + 1e-9) // credits_per_video)


@dataclass(frozen=True)
class CostEstimate:
    videos: int  # distinct valid videos in the list
    credits: float  # what they cost if each is created once
    payable: int  # how many of them the budget lets a run create
    payable_credits: float

    def describe(self) -> str:
        text = f"{self.videos} video(s) cost {self.credits:g} credits"
        if self.payable < self.videos:
            text += f"; max_credits lets {self.payable} be created ({self.payable_credits:g} credits)"
        return text


def estimate(video_urls: Iterable[Any], *, credits_per_video: float, max_credits: float | None = None
             ) -> CostEstimate:
    """The most a run over ``video_urls`` can be charged from scratch (nothing landed or paid yet)."""
    videos = len(parse_video_list(video_urls).videos)
    cap = creates_within(max_credits, credits_per_video)
    payable = videos if cap is None else min(videos, cap)
    return CostEstimate(videos, videos * credits_per_video, payable, payable * credits_per_video)
