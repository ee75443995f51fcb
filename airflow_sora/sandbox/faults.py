"""Fault switches of the sandbox, settable at start (CLI/JSON) and at run time (admin API or Python).

Each rule fires for its next ``count`` matching requests, then with probability ``rate``. Counts make tests
deterministic; rates make chaos and benchmark runs realistic.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaultRule(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    rate: float = Field(default=0.0, ge=0.0, le=1.0)
    count: int = Field(default=0, ge=0)

    def fire(self, rng: random.Random) -> bool:
        if self.count > 0:
            self.count -= 1
            return True
        return self.rate > 0 and rng.random() < self.rate


# Endpoint names the ``endpoints`` scope accepts.
ENDPOINTS = ("createTask", "recordInfo", "download-url", "credit", "download", "credits")


class Faults(BaseModel):
    """What can go wrong, per the failures the specs and users report."""

    model_config = ConfigDict(validate_assignment=True)

    error_style: Literal["body", "status"] = "body"  # errors as HTTP 200 + body code, or matching status
    endpoints: list[str] | None = None  # API endpoints the request faults apply to; None = all of them
    server_error: FaultRule = Field(default_factory=FaultRule)  # Kie 500 / SaveSora 5001
    maintenance: FaultRule = Field(default_factory=FaultRule)  # 455
    rate_limit: FaultRule = Field(default_factory=FaultRule)  # 429 on top of the real create limit
    retry_after: float | None = None  # Retry-After header sent with every 429
    non_json: FaultRule = Field(default_factory=FaultRule)  # a Cloudflare-style HTML page
    non_json_status: int = 502
    connection_reset: FaultRule = Field(default_factory=FaultRule)  # drop the connection before processing
    lost_reply: FaultRule = Field(default_factory=FaultRule)  # process (and charge), then drop the reply
    slow_reply: FaultRule = Field(default_factory=FaultRule)  # wait slow_seconds, then process and reply
    slow_seconds: float = 5.0
    task_fail: FaultRule = Field(default_factory=FaultRule)  # Kie task ends "fail" / SaveSora 5002
    truncate_download: FaultRule = Field(default_factory=FaultRule)  # close mid-body, full Content-Length
    expire_links: FaultRule = Field(default_factory=FaultRule)  # result links issued already expired
    callback_drop: FaultRule = Field(default_factory=FaultRule)  # a finished task sends no callback at all
    callback_duplicate: FaultRule = Field(default_factory=FaultRule)  # a callback delivered twice
    callback_unsigned: FaultRule = Field(default_factory=FaultRule)  # signing on, yet sent without a signature
    fail_video_urls: list[str] = Field(default_factory=list)  # these videos always fail at the service
    reject_video_urls: list[str] = Field(default_factory=list)  # refused as invalid (Kie 422, SaveSora 4006)

    def applies_to(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints
