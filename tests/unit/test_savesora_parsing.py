"""SaveSora replies and its error table, in both styles (HTTP 200 + body code, or an error status)."""

from __future__ import annotations

import pytest

from airflow_sora.services import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    RateLimitedError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from airflow_sora.services.savesora import SaveSoraApi
from tests.unit.replies import error_reply, reply

URL = "https://sora.chatgpt.com/p/s_6902318491e88191893d935b08d8c428"
OK = {
    "code": 200, "msg": "watermark removed successfully",
    "data": {
        "post_id": "s_68dc40f1f5a481919a01594fef247dd4", "prompt": "A cinematic shot of...",
        "thumbnail": "https://cdn.example/thumb.jpg",
        "download_links": {"mp4": "https://cdn.example/clean.mp4", "mp4_source": "https://cdn.example/src.mp4"},
        "credits_used": 1, "remaining_credits": 99,
    },
}

CODES = [
    (4001, "api_key is required", AuthError, 401),
    (4002, "video_url is required", InvalidVideoUrlError, 400),
    (4003, "invalid api_key", AuthError, 401),
    (4004, "user not found", AuthError, 401),
    (4005, "user account is banned", AuthError, 403),
    (4006, "invalid video url", InvalidVideoUrlError, 400),
    (4007, "insufficient credits", InsufficientCreditsError, 402),
    (5001, "internal server error", ServiceUnavailableError, 500),
    (5002, "watermark removal failed", TaskFailedError, 500),
]


def test_remove_reply() -> None:
    result = SaveSoraApi.parse_remove(reply(OK), URL)
    assert result.post_id == "s_68dc40f1f5a481919a01594fef247dd4"
    assert (result.clean_url, result.source_url) == ("https://cdn.example/clean.mp4", "https://cdn.example/src.mp4")
    assert (result.prompt, result.thumbnail_url) == ("A cinematic shot of...", "https://cdn.example/thumb.jpg")
    assert (result.credits_used, result.remaining_credits) == (1.0, 99.0)


def test_remove_reply_with_nulls_and_message_field() -> None:
    body = {"code": 200, "message": "ok", "data": {"post_id": None, "prompt": None, "thumbnail": None,
                                                   "download_links": {"mp4": "https://c/x.mp4"},
                                                   "credits_used": None, "remaining_credits": "n/a"}}
    result = SaveSoraApi.parse_remove(reply(body), URL)
    assert result.post_id == "s_6902318491e88191893d935b08d8c428"  # taken from the URL
    assert result.source_url is None and result.credits_used == 1.0 and result.remaining_credits is None


@pytest.mark.parametrize("data", [None, {}, {"download_links": {}}, {"download_links": {"mp4": "file:///x"}}])
def test_success_without_link_is_outcome_unknown(data: object) -> None:
    with pytest.raises(SubmitOutcomeUnknownError, match="may have been spent"):
        SaveSoraApi.parse_remove(reply({"code": 200, "msg": "ok", "data": data}), URL)


@pytest.mark.parametrize("style", ["body", "status"])
@pytest.mark.parametrize(("code", "msg", "error", "status"), CODES)
def test_every_code_in_both_styles(style: str, code: int, msg: str, error: type, status: int) -> None:
    data = {"current_credits": 0, "required_credits": 1} if code == 4007 else None
    with pytest.raises(error) as info:
        SaveSoraApi.parse_remove(error_reply(code, msg, style, data=data, status_for_code=status), URL)
    assert info.value.code == code and msg in str(info.value)
    assert type(info.value).retryable == (code == 5001)


def test_insufficient_credits_carries_balance_and_requirement() -> None:
    data = {"current_credits": 0, "required_credits": 1}
    with pytest.raises(InsufficientCreditsError) as info:
        SaveSoraApi.parse_remove(error_reply(4007, "insufficient credits", "body", data=data), URL)
    assert (info.value.balance, info.value.required) == (0.0, 1.0)


def test_5002_is_refunded() -> None:
    with pytest.raises(TaskFailedError, match="refunded") as info:
        SaveSoraApi.parse_remove(error_reply(5002, "watermark removal failed", "body"), URL)
    assert info.value.refunded is True


@pytest.mark.parametrize(("status", "error"), [(429, RateLimitedError), (502, ServiceUnavailableError),
                                               (200, ServiceProtocolError), (404, ServiceProtocolError)])
def test_non_json_bodies(status: int, error: type) -> None:
    with pytest.raises(error):
        SaveSoraApi.parse_remove(reply(b"<html>cloudflare</html>", status=status), URL)


def test_credits() -> None:
    body = {"code": 200, "msg": "success", "data": {"paid_credits": 50, "onetime_credits": 50, "total_credits": 100}}
    balance = SaveSoraApi.parse_credits(reply(body))
    assert balance.balance == 100 and balance.details == {"paid": 50, "onetime": 50}
    partial = {"code": 200, "msg": "success", "data": {"paid_credits": 3, "onetime_credits": 2.5}}
    assert SaveSoraApi.parse_credits(reply(partial)).balance == 5.5


def test_key_is_in_the_body_but_not_in_repr() -> None:
    api = SaveSoraApi("super-secret-key")
    op = api.remove(URL)
    assert op.json["api_key"] == "super-secret-key"
    assert "super-secret-key" not in repr(op) and "super-secret-key" not in repr(api)
