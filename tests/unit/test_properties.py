"""Property-based tests: hostile URLs are refused before any call; malformed replies raise typed errors only."""

from __future__ import annotations

import json
import re
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_sora.exceptions import ResultDownloadError
from airflow_sora.landing import safe_object_name
from airflow_sora.services import InvalidVideoUrlError, ServiceError, ServiceProtocolError, TaskStatus
from airflow_sora.services.envelope import Reply
from airflow_sora.services.kie import KieApi
from airflow_sora.services.savesora import SaveSoraApi
from airflow_sora.services.urls import validate_video_url

MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SORA = re.compile(r"https://sora\.chatgpt\.com/p/s_[0-9a-f]{32}(\?[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*)?"
                  r"(#[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*)?")
GOOD = "https://sora.chatgpt.com/p/s_68e83bd7eee88191be79d2ba7158516f"
URL_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/?#[] <>\"\\^`{|}\t\n\x00é"

hostile_urls = st.one_of(
    st.text(max_size=600),
    st.text(alphabet=URL_CHARS, max_size=120).map(lambda s: "https://sora.chatgpt.com/p/" + s),
    st.text(alphabet=URL_CHARS, max_size=60).map(lambda s: GOOD + s),
    st.sampled_from(["http", "ftp", "file", "javascript", "HTTPS", "https"]).flatmap(
        lambda scheme: st.text(alphabet=URL_CHARS, max_size=80).map(lambda rest: f"{scheme}://{rest}")),
    st.from_regex(r"https://sora\.chatgpt\.com(\.[a-z]{1,8})?/p/s_[0-9a-fA-F]{30,34}", fullmatch=True),
)


@MANY
@given(hostile_urls)
def test_only_the_documented_shape_passes(url: str) -> None:
    ok = SORA.fullmatch(url) is not None and len(url) <= 500
    try:
        assert validate_video_url(url) == url
        accepted = True
    except InvalidVideoUrlError as error:
        accepted = False
        assert "Expected https://sora.chatgpt.com/p/s_<32 lowercase hex characters>" in str(error)
    assert accepted == ok, url


@MANY
@given(st.from_regex(r"https://sora\.chatgpt\.com/p/s_[0-9a-f]{32}(\?[a-z0-9=&]{0,40})?", fullmatch=True))
def test_valid_links_pass(url: str) -> None:
    assert validate_video_url(url) == url


@MANY
@given(st.one_of(st.text(max_size=80), st.from_regex(r"s_[0-9a-f]{32}", fullmatch=True)))
def test_object_names_cannot_escape_the_output(post_id: str) -> None:
    try:
        name = safe_object_name(post_id)
    except ResultDownloadError:  # a landing error, not a service error
        return
    assert re.fullmatch(r"s_[0-9a-f]{32}", name) and "/" not in name and ".." not in name


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=5)),
    max_leaves=20,
)
record_fields = st.fixed_dictionaries({}, optional={
    "taskId": json_values, "task_id": json_values, "state": st.one_of(st.sampled_from(
        ["waiting", "queuing", "generating", "success", "fail", "SUCCESS", ""]), json_values),
    "param": json_values, "resultJson": st.one_of(json_values, json_values.map(json.dumps)),
    "failCode": json_values, "failMsg": json_values, "costTime": json_values, "createTime": json_values,
    "completeTime": json_values,
})
envelopes = st.one_of(
    json_values,
    st.fixed_dictionaries({"code": st.one_of(st.integers(-5, 6000), st.sampled_from([200, "200"]), json_values)},
                          optional={"msg": json_values, "message": json_values,
                                    "data": st.one_of(json_values, record_fields)}),
)
bodies = st.one_of(envelopes.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200))
statuses = st.sampled_from([200, 201, 204, 400, 401, 402, 403, 404, 422, 429, 455, 500, 502, 503])
PARSERS: list[Any] = [
    lambda r: KieApi.parse_record(r, "t1"), KieApi.parse_create, KieApi.parse_credit, KieApi.parse_download_url,
    lambda r: SaveSoraApi.parse_remove(r, "https://sora.chatgpt.com/p/s_" + "0" * 32), SaveSoraApi.parse_credits,
]


@MANY
@given(body=bodies, status=statuses, parser=st.sampled_from(range(len(PARSERS))))
def test_any_reply_parses_or_raises_a_typed_error(body: bytes, status: int, parser: int) -> None:
    reply = Reply(status_code=status, headers={"content-type": "application/json"}, content=body)
    try:
        result = PARSERS[parser](reply)
    except ServiceError:
        return
    assert 200 <= status < 300
    if parser == 0:
        assert isinstance(result, TaskStatus)


@MANY
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_non_envelopes_are_protocol_errors(body: bytes) -> None:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), (int, str)):
        return  # an envelope: covered above
    reply = Reply(status_code=200, headers={}, content=body)
    try:
        KieApi.parse_record(reply, "t1")
    except ServiceProtocolError:
        return
    raise AssertionError("a 200 reply without an envelope must be a ServiceProtocolError")
