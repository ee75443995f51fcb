"""Every variant the Kie spec lists, parsed once into typed models; every code in both error styles."""

from __future__ import annotations

import json

import pytest

from airflow_sora.services import (
    AuthError,
    InsufficientCreditsError,
    InvalidVideoUrlError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
    ServiceProtocolError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskNotFoundError,
    TaskState,
)
from airflow_sora.services.kie import KieApi, result_from_status
from tests.unit.replies import error_reply, reply

URL = "https://sora.chatgpt.com/p/s_68e83bd7eee88191be79d2ba7158516f"
RESULT = "https://tempfile.aiquickdraw.com/r/clean.mp4"


def record(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "taskId": "t1", "model": "sora-watermark-remover", "state": "success",
        "param": json.dumps({"model": "sora-watermark-remover", "input": {"video_url": URL}}),
        "resultJson": json.dumps({"resultUrls": [RESULT]}), "failCode": "", "failMsg": "",
        "costTime": 1500, "createTime": 1765183831860, "updateTime": 1765183833360,
        "completeTime": 1765183833360,
    }
    base.update(fields)
    return base


def parse_record(data: object, **envelope: object) -> object:
    return KieApi.parse_record(reply({"code": 200, "msg": "success", "data": data, **envelope}), "t1")


class TestCreate:
    def test_task_id_camel_case(self) -> None:
        assert KieApi.parse_create(reply({"code": 200, "msg": "success", "data": {"taskId": "task_abc"}})) == "task_abc"

    def test_task_id_snake_case_and_message_field(self) -> None:
        body = {"code": 200, "message": "success", "data": {"task_id": "0123456789abcdef0123456789abcdef"}}
        assert KieApi.parse_create(reply(body)) == "0123456789abcdef0123456789abcdef"

    @pytest.mark.parametrize("data", [None, {}, {"taskId": ""}, {"taskId": None}, "task"])
    def test_success_without_task_id_is_outcome_unknown_not_a_crash(self, data: object) -> None:
        with pytest.raises(SubmitOutcomeUnknownError, match="may have been charged"):
            KieApi.parse_create(reply({"code": 200, "msg": "success", "data": data}))

    def test_create_request_always_sends_upload_method_and_optional_callback(self) -> None:
        op = KieApi("oss").create_task(URL, "https://hooks.example.com/kie")
        assert op.json == {"model": "sora-watermark-remover", "callBackUrl": "https://hooks.example.com/kie",
                           "input": {"video_url": URL, "upload_method": "oss"}}
        assert op.idempotent is False
        assert "callBackUrl" not in KieApi().create_task(URL).json


class TestRecord:
    def test_success_with_result_json_string(self) -> None:
        status = parse_record(record())
        assert status.state is TaskState.SUCCEEDED
        assert status.result_urls == (RESULT,)
        assert status.video_url == URL
        assert status.cost_time == 1500 and status.completed_at_ms == 1765183833360

    def test_result_json_as_object(self) -> None:
        assert parse_record(record(resultJson={"resultUrls": [RESULT]})).result_urls == (RESULT,)

    def test_param_as_object_and_snake_case_task_id(self) -> None:
        data = record(param={"input": {"video_url": URL}})
        del data["taskId"]
        data["task_id"] = "t-snake"
        status = parse_record(data)
        assert status.task_id == "t-snake" and status.video_url == URL

    @pytest.mark.parametrize("state", ["waiting", "queuing", "generating", "", None, "brand_new_state"])
    def test_non_terminal_and_unknown_states_are_running(self, state: object) -> None:
        status = parse_record(record(state=state, resultJson=None, failCode=None, failMsg=None,
                                     costTime=None, completeTime=None))
        assert status.state is TaskState.RUNNING
        assert not status.terminal

    def test_all_fields_null(self) -> None:
        status = parse_record({k: None for k in record()})
        assert status.state is TaskState.RUNNING and status.task_id == "t1"

    def test_garbage_field_types_are_tolerated(self) -> None:
        status = parse_record(record(costTime="fast", createTime={"x": 1}, failCode=[1], param="{not json"))
        assert status.state is TaskState.SUCCEEDED
        assert status.cost_time is None and status.created_at_ms is None and status.video_url is None

    def test_fail_carries_code_and_message(self) -> None:
        status = parse_record(record(state="fail", resultJson=None, failCode="500",
                                     failMsg="Internal server error"))
        assert status.state is TaskState.FAILED
        assert (status.fail_code, status.fail_message) == ("500", "Internal server error")
        with pytest.raises(TaskFailedError, match="Internal server error"):
            result_from_status(status, URL)

    @pytest.mark.parametrize("result_json", [None, "", "{}", json.dumps({"resultUrls": []}), "not json",
                                             json.dumps({"resultUrls": ["ftp://x/y.mp4"]})])
    def test_success_without_usable_url_is_a_failure(self, result_json: object) -> None:
        status = parse_record(record(resultJson=result_json))
        assert status.state is TaskState.FAILED
        assert "without a usable result URL" in (status.fail_message or "")

    @pytest.mark.parametrize("style", ["body", "status"])
    def test_record_info_is_null_means_not_yet_visible(self, style: str) -> None:
        status = KieApi.parse_record(error_reply(422, "recordInfo is null", style), "t1")
        assert status.state is TaskState.NOT_VISIBLE and not status.terminal

    def test_data_not_an_object_is_a_protocol_error(self) -> None:
        with pytest.raises(ServiceProtocolError):
            parse_record(["a", "list"])

    def test_result_for_landing(self) -> None:
        result = result_from_status(parse_record(record()), URL)
        expected = (RESULT, "s_68e83bd7eee88191be79d2ba7158516f", "t1")
        assert (result.clean_url, result.post_id, result.task_id) == expected


KIE_CODES = [
    (400, "bad request", RequestRejectedError),
    (401, "You do not have access permissions", AuthError),
    (402, "Insufficient credits", InsufficientCreditsError),
    (404, "Task not found", TaskNotFoundError),
    (422, "validation error", RequestRejectedError),
    (429, "rate limited", RateLimitedError),
    (433, "sub-key usage cap exceeded", QuotaExceededError),
    (455, "Service under maintenance", ServiceUnavailableError),
    (500, "Internal server error", ServiceUnavailableError),
    (501, "Generation failed", TaskFailedError),
    (505, "Feature disabled", RequestRejectedError),
]


@pytest.mark.parametrize("style", ["body", "status"])
@pytest.mark.parametrize(("code", "msg", "error"), KIE_CODES)
def test_every_code_in_both_styles_on_poll(style: str, code: int, msg: str, error: type) -> None:
    with pytest.raises(error) as info:
        KieApi.parse_record(error_reply(code, msg, style), "t1")
    assert info.value.code == code and msg in str(info.value)
    assert type(info.value).retryable == (code in (429, 455, 500))


@pytest.mark.parametrize("style", ["body", "status"])
def test_422_on_create_is_an_invalid_video(style: str) -> None:
    with pytest.raises(InvalidVideoUrlError):
        KieApi.parse_create(error_reply(422, "video_url is invalid", style))


@pytest.mark.parametrize("style", ["body", "status"])
def test_404_on_create_is_a_rejected_request(style: str) -> None:
    with pytest.raises(RequestRejectedError) as info:
        KieApi.parse_create(error_reply(404, "Not Found", style))
    assert not isinstance(info.value, TaskNotFoundError)


def test_retry_after_header_is_kept() -> None:
    with pytest.raises(RateLimitedError) as info:
        KieApi.parse_create(reply({"code": 429, "msg": "slow down"}, status=429, headers={"Retry-After": "3"}))
    assert info.value.retry_after == 3.0


def test_error_status_with_ok_body_code_is_still_an_error() -> None:
    with pytest.raises(ServiceUnavailableError):
        KieApi.parse_credit(reply({"code": 200, "msg": "success", "data": 5}, status=503))


class TestNonJson:
    @pytest.mark.parametrize("status", [502, 503, 520, 455])
    def test_cloudflare_page_with_error_status_is_transient(self, status: int) -> None:
        with pytest.raises(ServiceUnavailableError):
            KieApi.parse_record(reply(b"<html>Bad gateway</html>", status=status), "t1")

    def test_html_429_is_rate_limited(self) -> None:
        with pytest.raises(RateLimitedError):
            KieApi.parse_create(reply(b"<html>slow down</html>", status=429, headers={"retry-after": "2"}))

    @pytest.mark.parametrize("body", [b"<html>ok?</html>", b"", b"\xff\xfe", b"[1, 2]", b'{"msg": "no code"}',
                                      b'{"code": "abc"}', b"null"])
    def test_unreadable_reply_with_200_is_a_protocol_error(self, body: bytes) -> None:
        with pytest.raises(ServiceProtocolError, match="unreadable reply"):
            KieApi.parse_record(reply(body, status=200), "t1")

    def test_html_403_is_a_protocol_error_naming_status(self) -> None:
        with pytest.raises(ServiceProtocolError, match="HTTP 403"):
            KieApi.parse_credit(reply(b"<html>Attention required</html>", status=403))

    def test_string_code_is_read_as_a_number(self) -> None:
        assert KieApi.parse_credit(reply({"code": "200", "msg": "success", "data": 12})).balance == 12


class TestCreditsAndLinks:
    @pytest.mark.parametrize(("data", "balance"), [(100, 100.0), (99.5, 99.5), ("42", 42.0)])
    def test_credit_balance_numbers(self, data: object, balance: float) -> None:
        assert KieApi.parse_credit(reply({"code": 200, "msg": "success", "data": data})).balance == balance

    def test_credit_non_number(self) -> None:
        with pytest.raises(ServiceProtocolError):
            KieApi.parse_credit(reply({"code": 200, "msg": "success", "data": {"x": 1}}))

    @pytest.mark.parametrize("data", ["https://cdn/x.mp4?t=1", {"url": "https://cdn/x.mp4?t=1"}])
    def test_download_url(self, data: object) -> None:
        assert KieApi.parse_download_url(reply({"code": 200, "msg": "ok", "data": data})).startswith("https://")

    def test_download_url_for_non_kie_url(self) -> None:
        with pytest.raises(RequestRejectedError):
            KieApi.parse_download_url(error_reply(422, "not a kie url", "body"))


@pytest.mark.parametrize("value", [1.9, "1e999", 1e308, True, [], "NaN", "inf"])
def test_odd_numbers_in_times_never_crash(value: object) -> None:
    """Found by the property tests: a fractional createTime used to escape as a pydantic error."""
    status = parse_record(record(createTime=value, completeTime=value, costTime=value))
    assert status.state is TaskState.SUCCEEDED
