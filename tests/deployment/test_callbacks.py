"""Kie callbacks on a real deployment: the receiver mounted by the provider's plugin on the api-server, the
scheduler, the triggerer and two Celery workers; the sandbox signs every callback with the account's webhook
key and sends it to the api-server over HTTP; the batch lands into S3 (moto).

What must show: a deferrable batch completes with status calls only to confirm the callbacks (one per task),
each callback was answered 200 by the api-server, and no secret shows anywhere.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from airflow_sora.sandbox.process import SandboxProcess
from tests.deployment.cluster import TERMINAL_RUN_STATES, Deployment, wait_for
from tests.deployment.services import S3Process

BUCKET = "callbacks"
VIDEOS = [f"https://sora.chatgpt.com/p/s_{i:032x}" for i in range(301, 311)]
URL_SECRET = "dep-URL-SECRET-" + secrets.token_hex(6)
WEBHOOK_KEY = "dep-WEBHOOK-KEY-" + secrets.token_hex(6)
ANSWERED_200 = re.compile(r"Kie callback for (\S+): (?:recorded|duplicate: ignored) \(200\)")
pytestmark = pytest.mark.timeout(900)  # the waits below, with room for a slow start on a busy machine


@pytest.fixture(scope="module")
def deployed() -> Iterator[tuple[Deployment, SandboxProcess, S3Process]]:
    deployment = Deployment(executor="CeleryExecutor", workers=2, worker_concurrency=4)
    keys = deployment.api_keys
    sandbox = SandboxProcess.start({keys["kie"]: 100_000}, "--latency=8.0", "--latency-jitter=1.0",
                                   f"--webhook-key={WEBHOOK_KEY}", "--callback-retry-delay=1.0")
    s3 = S3Process.start()
    s3.create_bucket(BUCKET)
    deployment.extra_env.update({
        # the opt-in: the receiver on the api-server, and the provider's plugins discovered at start
        "AIRFLOW__SORA__KIE_CALLBACKS": "True",
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
        "AIRFLOW_CONN_KIE_DEFAULT": sandbox.connection("kie", keys["kie"], max_retries=8, callback_url="auto",
                                                       callback_secret=URL_SECRET, webhook_secret=WEBHOOK_KEY),
        "AIRFLOW_CONN_AWS_DEFAULT": s3.connection(),
    })
    try:
        deployment.start()
        deployment.wait_for_dag("sora_watermark_batch")
        yield deployment, sandbox, s3
    finally:
        deployment.stop()
        sandbox.stop()
        s3.stop()


def test_the_receiver_is_mounted_and_refuses_what_it_cannot_verify(
        deployed: tuple[Deployment, SandboxProcess, S3Process]) -> None:
    deployment, _, _ = deployed
    url = f"{deployment.api_url}/sora/kie/callback"
    assert httpx.post(url, json={"code": 200, "data": {"taskId": "t"}}).status_code == 403  # no token
    assert httpx.post(f"{url}?c=kie_default&o=x&d=d&r=r&t=t&m=-1&k=AAAA", content=b"{").status_code == 403
    assert httpx.get(url).status_code == 405
    assert httpx.get(f"{deployment.api_url}/sora/docs").status_code == 404  # nothing to browse


def test_a_deferrable_batch_completes_on_signed_callbacks_with_confirmation_polls_only(
        deployed: tuple[Deployment, SandboxProcess, S3Process]) -> None:
    deployment, sandbox, s3 = deployed
    sandbox.reset()
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    run_id = deployment.trigger("sora_watermark_batch", {"video_urls": VIDEOS,
                                                         "output_path": f"s3://aws_default@{BUCKET}/{prefix}/"})
    stored: list[dict[str, str]] = []

    def deferred() -> bool:  # the trigger's row, read while the task waits (tasks take 8 s here)
        stored.extend(r for r in deployment.trigger_rows() if r["classpath"].endswith("KieTaskTrigger"))
        return bool(stored) or deployment.run_state("sora_watermark_batch", run_id) in TERMINAL_RUN_STATES

    wait_for(deferred, 300, "the task to defer", explain=lambda: deployment.account("sora_watermark_batch", run_id))
    assert deployment.wait_for_run("sora_watermark_batch", run_id, timeout=600) == "success"
    manifest = deployment.xcom("sora_watermark_batch", run_id, "remove_watermarks")
    assert manifest["counts"]["landed"] == len(VIDEOS)

    summary = sandbox.summary()
    assert summary["charges_by_video"] == dict.fromkeys(VIDEOS, 1)  # callbacks never cost anything
    assert summary["requests"]["recordInfo"] == len(VIDEOS)  # one status call per task, to confirm
    delivered = [c for c in httpx.get(f"{sandbox.url}/_sandbox/callbacks").json() if c["outcome"] == 200]
    assert len(delivered) == len(VIDEOS)

    keys = s3.objects(BUCKET)
    inbox = [k for k in keys if k.startswith(f"{prefix}/_state/") and "/_callbacks/" in k]
    assert len(inbox) == len(VIDEOS)
    assert sum(1 for k in keys if k.startswith(f"{prefix}/s_") and k.endswith(".mp4")) == len(VIDEOS)

    rows = deployment.decrypt_trigger_rows(stored)
    assert rows and all(str(row["kwargs"].get("inbox", "")).endswith("/_callbacks") for row in rows)

    def answered() -> set[str]:  # the tasks whose callback the receiver answered 200, from its log lines
        log = deployment.processes["api-server"].log.read_text(errors="replace")
        return set(ANSWERED_200.findall(log))

    # every callback was recorded (the inbox above); its log line may reach the file a moment later. A callback
    # answered 503 (the store slow to answer on a busy machine) may still have been recorded: Kie's retry of it
    # is then answered "duplicate: ignored" with a 200.
    wait_for(lambda: len(answered()) >= len(VIDEOS), 60, "the receiver's log lines")
    assert len(answered()) == len(VIDEOS)
    text = deployment.logs_text() + repr(rows) + repr(manifest)
    text += "".join(s3.read(BUCKET, k).decode(errors="replace") for k in keys if k.endswith(".json"))
    for secret in (URL_SECRET, WEBHOOK_KEY, deployment.api_keys["kie"]):
        assert secret not in text
