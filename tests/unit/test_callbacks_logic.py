"""The pure parts of the callback path: URL tokens, Kie's signature, strict parsing, and which tasks to poll."""

from __future__ import annotations

import json

import pytest

from airflow_sora.plugins.receiver import BadBody, parse_callback
from airflow_sora.plugins.signature import signature_for, signature_problem
from airflow_sora.plugins.tokens import CallbackScope, callback_url, token_for, token_valid
from airflow_sora.polling import CallbackWatch, PollSchedule
from airflow_sora.services.models import TaskState, TaskStatus
from tests.unit.clock import Clock

SECRET = "url-secret-for-tests"
SCOPE = CallbackScope(conn_id="kie_default", output="s3://aws_default@bucket/clean/", dag_id="d",
                      run_id="manual__1", task_id="remove", map_index=-1)


class TestTokens:
    def test_url_round_trip(self) -> None:
        from urllib.parse import parse_qsl, urlsplit

        url = callback_url("https://airflow.example.com/sora/kie/callback", SECRET, SCOPE)
        query = dict(parse_qsl(urlsplit(url).query))
        assert CallbackScope.from_query(query) == SCOPE
        assert token_valid(SECRET, SCOPE, query["k"])
        assert SECRET not in url

    @pytest.mark.parametrize("change", [{"run_id": "manual__2"}, {"output": "s3://aws_default@bucket/other/"},
                                        {"dag_id": "e"}, {"task_id": "remove2"}, {"map_index": 3},
                                        {"conn_id": "kie_other"}])
    def test_any_other_name_breaks_the_token(self, change: dict[str, object]) -> None:
        other = CallbackScope(**{**SCOPE.__dict__, **change})  # type: ignore[arg-type]
        assert not token_valid(SECRET, other, token_for(SECRET, SCOPE))

    def test_names_cannot_be_shifted_between_fields(self) -> None:
        a = CallbackScope(conn_id="k", output="o", dag_id="ab", run_id="c", task_id="t")
        b = CallbackScope(conn_id="k", output="o", dag_id="a", run_id="bc", task_id="t")
        assert token_for(SECRET, a) != token_for(SECRET, b)

    def test_another_secret_breaks_the_token(self) -> None:
        assert not token_valid("another", SCOPE, token_for(SECRET, SCOPE))

    @pytest.mark.parametrize("query", [{}, {**SCOPE.query(), "m": "x"}, {**SCOPE.query(), "r": ""},
                                       {**SCOPE.query(), "o": "x" * 5000}])
    def test_incomplete_names_are_no_scope(self, query: dict[str, str]) -> None:
        assert CallbackScope.from_query(query) is None


class TestSignature:
    def test_good(self) -> None:
        sig = signature_for("key", "task_1", "1000")
        assert signature_problem("key", "task_1", "1000", sig, now=1100, window=300) is None

    @pytest.mark.parametrize(("task", "ts", "sig", "now", "why"), [
        ("task_1", None, None, 1000, "unsigned"),
        ("task_1", "1000", None, 1000, "unsigned"),
        ("task_1", "10x0", "AAAA", 1000, "bad timestamp"),
        ("task_1", "1000", "sig", 1301, "stale timestamp"),
        ("task_1", "1000", "sig", 699, "stale timestamp"),
        ("task_2", "1000", "sig", 1000, "bad signature"),
        ("task_1", "1000", "not base64!", 1000, "bad signature"),
    ])
    def test_refused(self, task: str, ts: str | None, sig: str | None, now: float, why: str) -> None:
        if sig == "sig":
            sig = signature_for("key", "task_1", "1000")
        assert signature_problem("key", task, ts, sig, now=now, window=300) == why

    def test_another_key(self) -> None:
        sig = signature_for("other", "task_1", "1000")
        assert signature_problem("key", "task_1", "1000", sig, now=1000, window=300) == "bad signature"


class TestParsing:
    def test_a_kie_callback(self) -> None:
        body = {"code": 200, "msg": "ok", "data": {"taskId": "task_1", "state": "success", "param": json.dumps(
            {"input": {"video_url": "https://sora.chatgpt.com/p/s_" + "a" * 32}})}}
        parsed = parse_callback(json.dumps(body).encode())
        assert parsed.task_id == "task_1" and parsed.code == 200 and parsed.state == "success"
        assert parsed.video_url == "https://sora.chatgpt.com/p/s_" + "a" * 32

    def test_task_id_variant(self) -> None:
        assert parse_callback(b'{"code": 501, "data": {"task_id": "t-2"}}').task_id == "t-2"

    @pytest.mark.parametrize("body", [b"", b"null", b"[]", b"not json", b'{"data": []}', b'{"data": {}}',
                                      b'{"data": {"taskId": 5}}', b'{"data": {"taskId": "../../x"}}',
                                      b'{"data": {"taskId": "a", "taskId": "b"}}', b'{"code": NaN, "data": {}}',
                                      b"\xff\xfe", b'{"data": {"taskId": "' + b"a" * 300 + b'"}}',
                                      b"[" * 100000])
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(BadBody):
            parse_callback(body)


def status(task_id: str, state: TaskState, took: float | None = None) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=state, result_urls=("https://x/y.mp4",) if state is TaskState.SUCCEEDED
                      else (), created_at_ms=0 if took else None, completed_at_ms=int(took * 1000) if took else None)


class TestCallbackWatch:
    def watch(self, clock: Clock) -> CallbackWatch:
        return CallbackWatch(PollSchedule(interval=2.0, callback_silence=60.0, callback_interval=30.0), clock=clock)

    def test_nothing_is_polled_before_a_callback(self) -> None:
        clock = Clock()
        watch = self.watch(clock)
        clock.now += 59
        assert watch.due(["a", "b"]) == [] and not watch.fallback

    def test_a_callback_wakes_only_its_task(self) -> None:
        clock = Clock()
        watch = self.watch(clock)
        clock.now += 5
        watch.hear({"b", "unrelated"})
        assert watch.due(["a", "b"]) == ["b"]
        watch.polled({"b": status("b", TaskState.SUCCEEDED, took=4)})
        watch.hear({"b"})  # a duplicate wakes nothing
        assert watch.due(["a"]) == []

    def test_a_task_heard_of_but_still_running_is_looked_at_again_with_a_growing_pause(self) -> None:
        clock = Clock()
        watch = self.watch(clock)
        watch.hear({"a"})
        assert watch.due(["a"]) == ["a"]
        watch.polled({"a": status("a", TaskState.RUNNING)})
        clock.now += 1.9
        assert watch.due(["a"]) == []
        clock.now += 0.1
        assert watch.due(["a"]) == ["a"]
        watch.polled({"a": status("a", TaskState.RUNNING)})
        clock.now += 2
        assert watch.due(["a"]) == []
        clock.now += 2
        assert watch.due(["a"]) == ["a"]

    def test_silent_tasks_are_polled_slowly_past_their_expected_time(self) -> None:
        clock = Clock()
        watch = self.watch(clock)
        watch.hear({"a"})
        watch.polled({"a": status("a", TaskState.SUCCEEDED, took=50)})  # the service takes 50 s: expect 100 s
        clock.now += 99
        assert watch.due(["b"]) == []
        clock.now += 1
        assert watch.due(["b"]) == ["b"]
        watch.polled({"b": status("b", TaskState.RUNNING)})
        clock.now += 29
        assert watch.due(["b"]) == []
        clock.now += 1
        assert watch.due(["b"]) == ["b"]

    def test_no_callback_at_all_means_the_receiver_is_down_and_polling_takes_over(self) -> None:
        clock = Clock()
        watch = self.watch(clock)
        clock.now += 60
        assert watch.fallback and watch.due(["a", "b"]) == ["a", "b"]

    def test_schedules_without_callbacks_expect_none(self) -> None:
        assert not PollSchedule().expects_callbacks
        assert PollSchedule(**PollSchedule(callback_silence=5).as_dict()).expects_callbacks
