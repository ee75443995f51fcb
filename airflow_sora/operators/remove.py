"""``SoraWatermarkRemoverOperator``: remove the watermark from one or many Sora videos and land them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from airflow_sora._compat import AirflowException, AirflowFailException
from airflow_sora.batch import BatchRun, BatchSettings, IfExists, OnUnknownSubmit
from airflow_sora.hooks import hook_for_connection
from airflow_sora.landing import ResultLander
from airflow_sora.links import KieTaskLink
from airflow_sora.manifest import Manifest, VideoOutcome, VideoStatus
from airflow_sora.polling import PollSchedule
from airflow_sora.services.base import WatermarkService
from airflow_sora.services.errors import InvalidVideoUrlError
from airflow_sora.services.models import TaskStatus
from airflow_sora.services.urls import validate_video_url
from airflow_sora.state import RunScope, VideoStateStore
from airflow_sora.storage import is_local, protocol_of
from airflow_sora.triggers.kie import KieTaskTrigger

MANIFEST_KEY = "manifest"
TASK_IDS_KEY = "kie_task_ids"
SUBMIT_SECONDS_KEY = "submit_seconds"


def asset_for_output(output_path: str) -> Asset | None:
    """The Asset downstream DAGs can schedule on: the output prefix without any connection id."""
    if "{{" in output_path or "{%" in output_path:
        return None
    path = ObjectStoragePath(output_path)
    protocol = "file" if is_local(path) else protocol_of(path)
    return Asset(uri=f"{protocol}://{str(path.path).rstrip('/')}/")


class SoraWatermarkRemoverOperator(BaseOperator):
    """Remove the visible watermark from Sora videos through Kie.ai or SaveSora; land them with provenance.

    :param video_url: one Sora share link or a list of them (templated); a list is processed in one task.
    :param output_path: where clean videos land, anything ``ObjectStoragePath`` accepts (templated).
    :param conn_id: a ``kie`` or ``savesora`` connection; the service follows its type.
    :param deferrable: wait for Kie in the triggerer (default ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls in the first 30 s (then the spec's back-off).
    :param timeout: seconds to wait for Kie tasks before giving up (task ids are kept for a retry).
    :param callback_url: passed to Kie as ``callBackUrl``.
    :param upload_method: Kie storage, ``s3`` or ``oss`` (default: the connection's, else ``s3``).
    :param if_exists: when ``<post_id>.mp4`` already landed: ``skip`` (no charge), ``overwrite`` or ``fail``.
    :param keep_source: SaveSora only: also land the watermarked original as ``<post_id>.source.mp4``.
    :param fail_on_error: fail the task if any video failed or was rejected; else report and succeed.
    :param on_unknown_submit: a create whose task id was never recorded may have been charged:
        ``fail`` reports it (default), ``resubmit`` pays for a new attempt, logged loudly.
    :param resubmit_failed: on a retry, create a new task for videos the service failed (a new charge).
    :param landing_concurrency: downloads in flight at once.
    :param max_active_submissions: at most this many of the task's videos running at the service at once
        (Kie runs about 100 per account); creates are also paced at the connection's rate limit.
    :param wait_before_defer: seconds to keep polling in the worker after the last create before deferring
        (default 0: defer at once). Tasks take about 2 s, and a deferral round trip (triggerer, scheduler, a
        new worker process) costs more than that, so one-video tasks (mapped mode) do well with about 3 s.
    """

    template_fields: Sequence[str] = ("video_url", "output_path", "conn_id", "callback_url")
    template_fields_renderers = {"video_url": "json"}
    operator_extra_links = (KieTaskLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        video_url: str | list[str],
        output_path: str,
        conn_id: str = "kie_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 2.0,
        timeout: float = 900.0,
        callback_url: str | None = None,
        upload_method: str | None = None,
        if_exists: IfExists = "skip",
        keep_source: bool = False,
        fail_on_error: bool = True,
        on_unknown_submit: OnUnknownSubmit = "fail",
        resubmit_failed: bool = False,
        landing_concurrency: int = 8,
        max_active_submissions: int = 100,
        wait_before_defer: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if if_exists not in ("skip", "overwrite", "fail"):
            raise ValueError(f"if_exists must be 'skip', 'overwrite' or 'fail', got {if_exists!r}")
        if on_unknown_submit not in ("fail", "resubmit"):
            raise ValueError(f"on_unknown_submit must be 'fail' or 'resubmit', got {on_unknown_submit!r}")
        if "outlets" not in kwargs and isinstance(output_path, str):
            asset = asset_for_output(output_path)
            if asset is not None:
                kwargs["outlets"] = [asset]
        super().__init__(**kwargs)
        self.video_url = video_url
        self.output_path = output_path
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.callback_url = callback_url
        self.upload_method = upload_method
        self.if_exists = if_exists
        self.keep_source = keep_source
        self.fail_on_error = fail_on_error
        self.on_unknown_submit = on_unknown_submit
        self.resubmit_failed = resubmit_failed
        self.landing_concurrency = landing_concurrency
        self.max_active_submissions = max_active_submissions
        self.wait_before_defer = wait_before_defer

    # entry points ---------------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any]:
        urls, rejected = self._validated_urls()
        started = time.monotonic()
        with self._batch(context) as batch:
            to_submit = batch.plan(urls)
            batch.submit_all(to_submit)
            submit_seconds = time.monotonic() - started
            known, waiting = batch.task_ids(urls)
            if known:
                context["ti"].xcom_push(key=TASK_IDS_KEY, value=known)
            statuses: dict[str, TaskStatus] = {}
            if waiting and self.deferrable and self.wait_before_defer > 0:
                statuses = batch.poll_until_done(waiting, time.time() + self.wait_before_defer, self._schedule())
                batch.keep_finished(urls, statuses)
                waiting = [task_id for task_id in waiting if not statuses[task_id].terminal]
            if waiting and self.deferrable:
                # XCom survives a deferral within one try (``airflow dags test`` drops defer kwargs).
                context["ti"].xcom_push(key=SUBMIT_SECONDS_KEY, value=round(submit_seconds, 3))
                self.defer(
                    trigger=KieTaskTrigger(task_ids=waiting, conn_id=self.conn_id,
                                           deadline=time.time() + self.timeout,
                                           poll_schedule=self._schedule().as_dict()),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=self.timeout + 120),
                )
            if waiting:
                statuses = batch.poll_until_done(waiting, time.time() + self.timeout, self._schedule())
            outcomes = batch.finish(urls, statuses)
            return self._report(context, batch, urls, rejected, outcomes, worker_seconds=time.monotonic() - started)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: land what finished, from the durable records and the event."""
        started = time.monotonic()
        ti = context["ti"]
        worker_seconds = float(ti.xcom_pull(task_ids=ti.task_id, key=SUBMIT_SECONDS_KEY,
                                            map_indexes=getattr(ti, "map_index", None)) or 0.0)
        urls, rejected = self._validated_urls()
        statuses = {task_id: TaskStatus.model_validate(s) for task_id, s in (event.get("tasks") or {}).items()}
        wait_error = None if event.get("status") == "success" else str(event.get("message"))
        if wait_error:
            self.log.warning("Waiting for Kie ended with %s: %s", event.get("status"), wait_error)
        with self._batch(context) as batch:
            batch.plan(urls)  # settles landed/failed/rejected videos; nothing is submitted on resume
            outcomes = batch.finish(urls, statuses, wait_error=wait_error)
            return self._report(context, batch, urls, rejected, outcomes,
                                worker_seconds=worker_seconds + time.monotonic() - started)

    # pieces ---------------------------------------------------------------------------------------
    def _validated_urls(self) -> tuple[list[str], list[VideoOutcome]]:
        """De-duplicate (order kept) and validate every URL before anything is spent."""
        raw = _as_list(self.video_url)
        urls: list[str] = []
        rejected: list[VideoOutcome] = []
        for url in dict.fromkeys(str(u) if not isinstance(u, str) else u for u in raw):
            try:
                urls.append(validate_video_url(url))
            except InvalidVideoUrlError as error:
                rejected.append(VideoOutcome(video_url=url, status=VideoStatus.REJECTED, error=str(error)))
        if not urls:
            reasons = "; ".join(o.error or "" for o in rejected) or "the list is empty"
            raise AirflowFailException(f"No valid Sora video URL to process, nothing was spent: {reasons}")
        for outcome in rejected:
            self.log.warning("Rejected before any call: %s", outcome.error)
        return urls, rejected

    def _schedule(self) -> PollSchedule:
        return PollSchedule(first_poll_after=min(PollSchedule.first_poll_after, self.poll_interval),
                            interval=self.poll_interval)

    def _client(self) -> WatermarkService:
        hook = hook_for_connection(self.conn_id)
        config = hook.service_config()
        if self.upload_method:
            config = replace(config, upload_method=self.upload_method)
        return hook.client_class(config)

    def _batch(self, context: Any) -> _BatchContext:
        return _BatchContext(self, context)

    def _report(self, context: Any, batch: BatchRun, urls: list[str], rejected: list[VideoOutcome],
                outcomes: list[VideoOutcome], *, worker_seconds: float) -> dict[str, Any]:
        manifest = Manifest(service=batch.client.service_name, output_path=str(batch.lander.output),
                            videos=rejected + outcomes, worker_seconds=round(worker_seconds, 3))
        result = manifest.to_xcom()
        counts = manifest.counts
        self.log.info("Sora watermark removal: %s; %s credits charged", counts, result["credits_charged"])
        for video in manifest.videos:
            if video.status in (VideoStatus.FAILED, VideoStatus.REJECTED):
                self.log.warning("%s %s: %s", video.status.value, video.video_url, video.error)
        if batch.account_error is not None:
            context["ti"].xcom_push(key=MANIFEST_KEY, value=result)
            raise AirflowFailException(f"{batch.account_error}. Manifest: {counts}")
        if any(v.retryable for v in manifest.videos):
            context["ti"].xcom_push(key=MANIFEST_KEY, value=result)
            raise AirflowException(
                f"{sum(v.retryable for v in manifest.videos)} video(s) can still finish on a retry at no new "
                f"cost; raising so Airflow retries. Manifest: {counts}"
            )
        self._annotate_outlets(context, result)
        if self.fail_on_error and (counts["failed"] or counts["rejected"]):
            context["ti"].xcom_push(key=MANIFEST_KEY, value=result)
            raise AirflowFailException(f"{counts['failed']} failed and {counts['rejected']} rejected video(s) "
                                       f"(fail_on_error=True). Manifest: {counts}")
        return result

    def _annotate_outlets(self, context: Any, result: dict[str, Any]) -> None:
        """Tell downstream DAGs where the videos landed, through the asset event's ``extra``."""
        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                events[outlet].extra = {"output_path": result["output_path"], "counts": result["counts"],
                                        "service": result["service"]}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the Sora posts; output: the landing prefix. Needs the ``openlineage`` extra."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        urls = [self.video_url] if isinstance(self.video_url, str) else list(self.video_url)
        output = ObjectStoragePath(self.output_path)
        protocol = protocol_of(output)
        return OperatorLineage(
            inputs=[Dataset(namespace="https://sora.chatgpt.com", name=u.split("sora.chatgpt.com", 1)[-1])
                    for u in urls],
            outputs=[Dataset(namespace=f"{protocol or 'file'}://", name=str(output.path))],
        )


def _as_list(value: Any) -> list[Any]:
    """One URL, a list, or a list rendered as text (a template without ``render_template_as_native_obj``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            import ast

            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return [value]
            return list(parsed) if isinstance(parsed, (list, tuple)) else [value]
        return [value]
    return list(value or [])


class _BatchContext:
    """Builds a ``BatchRun`` for this try and closes its clients afterwards."""

    def __init__(self, operator: SoraWatermarkRemoverOperator, context: Any) -> None:
        self.operator = operator
        self.context = context

    def __enter__(self) -> BatchRun:
        op, ti = self.operator, self.context["ti"]
        output = ObjectStoragePath(op.output_path)
        map_index = getattr(ti, "map_index", None)
        scope = RunScope(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id,
                         map_index=-1 if map_index is None else int(map_index))
        self.client = op._client()
        self.lander = ResultLander(output, allow_private_hosts=self.client.config.allow_private_result_hosts,
                                   holder="/".join(str(part) for part in scope.as_dict().values()))
        first_link = [True]

        def on_submitted(task_id: str) -> None:
            if first_link[0]:
                KieTaskLink.persist(self.context, task_id)
                first_link[0] = False

        settings = BatchSettings(
            if_exists=op.if_exists, keep_source=op.keep_source, on_unknown_submit=op.on_unknown_submit,
            resubmit_failed=op.resubmit_failed, callback_url=op.callback_url,
            landing_concurrency=op.landing_concurrency, max_active_submissions=op.max_active_submissions,
            poll_schedule=op._schedule(),
            provenance={"airflow": {**scope.as_dict(), "try_number": getattr(ti, "try_number", None)}},
        )
        return BatchRun(self.client, VideoStateStore(output, scope), self.lander, settings,
                        on_submitted=on_submitted)

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.lander.close()
