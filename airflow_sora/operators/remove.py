"""``SoraWatermarkRemoverOperator``: remove the watermark from one or many Sora videos and land them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from airflow_sora.batch import BatchRun, BatchSettings, IfExists, OnUnknownSubmit
from airflow_sora.batch.report import balance_after, emit_metrics, judge, write_closing_lines
from airflow_sora.exceptions import SoraFailedError
from airflow_sora.hooks import hook_for_connection
from airflow_sora.landing import ResultLander
from airflow_sora.lease import LEASE_TTL
from airflow_sora.lineage import asset_for_output, input_datasets, output_dataset
from airflow_sora.links import KieTaskLink
from airflow_sora.manifest import Manifest, VideoOutcome, VideoStatus
from airflow_sora.polling import PollSchedule
from airflow_sora.progress import ProgressReporter
from airflow_sora.services.base import WatermarkService
from airflow_sora.state import RunScope, VideoStateStore
from airflow_sora.triggers.kie import KieTaskTrigger, KieWaitEvent
from airflow_sora.videos import VideoList, parse_video_list

MANIFEST_KEY = "manifest"
TASK_IDS_KEY = "kie_task_ids"
SNAPSHOT_KEY = "ledger_before_deferral"


class SoraWatermarkRemoverOperator(BaseOperator):
    """Remove the visible watermark from Sora videos through Kie.ai or SaveSora; land them with provenance.

    :param video_url: one Sora share link or a list of them (templated); a list is processed in one task.
    :param output_path: where clean videos land, anything ``ObjectStoragePath`` accepts (templated).
    :param conn_id: a ``kie`` or ``savesora`` connection; the service follows its type.
    :param deferrable: wait for Kie in the triggerer (default ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls in the first 30 s (then the spec's back-off).
    :param timeout: seconds to wait for Kie tasks before giving up (task ids are kept for a retry).
    :param callback_url: passed to Kie as ``callBackUrl``. ``"auto"``: the provider's own receiver on the API
        server (see the callbacks guide), built from ``[api] base_url`` or the connection's ``callback_url`` extra
        and signed with its ``callback_secret``; the wait then polls only to confirm callbacks and, for tasks
        not heard of, as a slow fallback. None: the connection's ``callback_url`` extra if it has one.
    :param callback_fallback_after: with callbacks, seconds before a task not heard of is polled (then every
        30 s); if no callback at all came by then, the receiver is presumed down and polling takes over.
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
    :param max_credits: the most this logical run of the task (retries included) may be charged; a create
        that could take it past is never sent (one with an unknown outcome counts as charged), and its video is
        reported ``not_submitted``. None: no budget.
    :param retry_failed_after: a video the service failed in an earlier run into the same folder is not paid
        for again until this long after (seconds or a timedelta; default 24 hours; None: never automatically;
        0: always). Refunded attempts are not remembered.
    :param retry_rejected: pay again for a video the service refused as invalid in an earlier run.
    :param claim_wait: with ``if_exists="skip"``, another run paying for the same video into the same folder is
        waited for this many seconds (its file is then reported ``skipped``) instead of paying twice.
    :param wait_before_defer: seconds to keep polling in the worker after the last create before deferring
        (default 0: defer at once). Tasks take about 2 s, and a deferral round trip (triggerer, scheduler, a
        new worker process) costs more than that, so one-video tasks (mapped mode) do well with about 3 s.
    """

    template_fields: Sequence[str] = ("video_url", "output_path", "conn_id", "callback_url", "max_credits")
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
        max_credits: float | str | None = None,
        retry_failed_after: float | timedelta | None = timedelta(hours=24),
        retry_rejected: bool = False,
        claim_wait: float = 600.0,
        callback_fallback_after: float = 60.0,
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
        if isinstance(max_credits, (int, float)) and max_credits < 0:
            raise ValueError(f"max_credits must be >= 0 or None, got {max_credits!r}")
        self.max_credits = max_credits  # templated: a number, None, or a template rendering to one
        self.retry_failed_after = (retry_failed_after.total_seconds() if isinstance(retry_failed_after, timedelta)
                                   else retry_failed_after)
        self.retry_rejected = retry_rejected
        self.claim_wait = claim_wait
        self.callback_fallback_after = callback_fallback_after
        self._inbox: str | None = None  # the run's callback inbox, when this try's creates asked for callbacks

    # entry points ---------------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any]:
        videos = self._videos()
        started = time.monotonic()
        with self._batch(context, videos) as batch, batch.ticking():
            outcome = None
            with batch.landing_as_results_come():  # finished videos land while others are still submitted
                batch.plan_and_submit()
                known = [e.record.task_id for e in batch.ledger.entries.values() if e.record and e.record.task_id]
                if known:
                    context["ti"].xcom_push(key=TASK_IDS_KEY, value=known)
                if self.deferrable and self.wait_before_defer > 0:
                    batch.wait_in_worker(time.time() + self.wait_before_defer)
                if not self.deferrable:
                    outcome = batch.wait_in_worker(time.time() + self.timeout)
            waiting = batch.waiting_task_ids()
            if waiting and self.deferrable:
                self._defer_to_trigger(context, batch, waiting, worker_seconds=time.monotonic() - started)
            wait_error = outcome.message if outcome is not None and outcome.status != "success" else None
            batch.land_and_settle(wait_error=wait_error)
            return self._report(context, batch, videos, worker_seconds=time.monotonic() - started)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: land what finished, from the ledger saved before deferral and the event."""
        wait = KieWaitEvent.from_payload(event)
        started = time.monotonic()
        ti = context["ti"]
        saved = ti.xcom_pull(task_ids=ti.task_id, key=SNAPSHOT_KEY, map_indexes=getattr(ti, "map_index", None))
        videos = self._videos()
        wait_error = None if wait.status == "success" else wait.message
        if wait_error:
            self.log.warning("Waiting for Kie ended with %s: %s", wait.status, wait_error)
        with self._batch(context, videos) as batch, batch.ticking():
            if saved:  # XCom survives a deferral within one try (``airflow dags test`` drops defer kwargs)
                batch.restore(saved["ledger"])
            else:  # deferred by an older release: read the durable records instead; nothing is paid on resume
                batch.plan_only()
            batch.take_statuses(wait.tasks)
            batch.land_and_settle(wait_error=wait_error)
            worker_seconds = float(saved.get("worker_seconds", 0.0)) if saved else 0.0
            return self._report(context, batch, videos, worker_seconds=worker_seconds + time.monotonic() - started)

    # pieces ---------------------------------------------------------------------------------------
    def _videos(self) -> VideoList:
        """Parse and validate every URL once, before anything is spent; variants of one post are one video."""
        videos = parse_video_list(_as_list(self.video_url))
        if not videos.videos:
            reasons = "; ".join(r.error for r in videos.rejected) or "the list is empty"
            raise SoraFailedError(f"No valid Sora video URL to process, nothing was spent: {reasons}")
        for rejected in videos.rejected:
            self.log.warning("Rejected before any call: %s", rejected.error)
        return videos

    def _defer_to_trigger(self, context: Any, batch: BatchRun, waiting: list[str], *, worker_seconds: float
                          ) -> None:
        counts = batch.counts()
        context["ti"].xcom_push(key=SNAPSHOT_KEY, value={"ledger": batch.snapshot(),
                                                         "worker_seconds": round(worker_seconds, 3)})
        self.log.info("Deferring: %d Kie task(s) to wait for in the triggerer", len(waiting))
        self.defer(
            trigger=KieTaskTrigger(task_ids=waiting, conn_id=self.conn_id, deadline=time.time() + self.timeout,
                                   poll_schedule=self._schedule().as_dict(),
                                   progress={k: v for k, v in asdict(counts).items() if k != "running"},
                                   inbox=self._inbox),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 120),
        )

    def _schedule(self) -> PollSchedule:
        return PollSchedule(first_poll_after=min(PollSchedule.first_poll_after, self.poll_interval),
                            interval=self.poll_interval,
                            callback_silence=self.callback_fallback_after if self._inbox else 0.0)

    def _callback_url(self, client: WatermarkService, scope: RunScope, store: VideoStateStore) -> str | None:
        """The ``callBackUrl`` of this try's creates: the user's, or the provider's receiver (``auto``)."""
        self._inbox = None
        if not client.asynchronous:
            return None
        from airflow_sora.plugins.settings import AUTO, load_settings

        wanted = self.callback_url
        settings = load_settings(self.conn_id) if wanted in (None, AUTO) else None
        if wanted is None and settings is not None:
            wanted = AUTO if settings.callback_url else None
        if wanted != AUTO or settings is None:
            return wanted
        from airflow_sora.plugins.inbox import CallbackInbox
        from airflow_sora.plugins.settings import receiver_base
        from airflow_sora.plugins.tokens import CallbackScope, callback_url

        if not settings.callback_secret:
            raise SoraFailedError(f"callback_url='auto' needs a callback_secret in connection {self.conn_id!r}'s "
                                  "extras (the same value the API server reads); nothing was spent")
        receiver = receiver_base(None if settings.callback_url in (None, AUTO) else settings.callback_url)
        names = CallbackScope(conn_id=self.conn_id, output=self.output_path, dag_id=scope.dag_id,
                              run_id=scope.run_id, task_id=scope.task_id, map_index=scope.map_index)
        self._inbox = CallbackInbox.for_state(store).uri
        return callback_url(receiver, settings.callback_secret, names)

    def _client(self) -> WatermarkService:
        hook = hook_for_connection(self.conn_id)
        config = hook.service_config()
        if self.upload_method:
            config = replace(config, upload_method=self.upload_method)
        return hook.client_class(config)

    def _batch(self, context: Any, videos: VideoList) -> _BatchContext:
        return _BatchContext(self, context, videos)

    def _report(self, context: Any, batch: BatchRun, videos: VideoList, *, worker_seconds: float
                ) -> dict[str, Any]:
        rejected = [VideoOutcome(video_url=r.url, status=VideoStatus.REJECTED, error=r.error)
                    for r in videos.rejected]
        manifest = Manifest(service=batch.client.service_name, output_path=str(batch.lander.output),
                            videos=rejected + batch.ledger.outcomes(), worker_seconds=round(worker_seconds, 3),
                            balance_after=balance_after(batch.client))
        verdict = judge(manifest, account_error=batch.account_error, fail_on_error=self.fail_on_error)
        emit_metrics(manifest)
        write_closing_lines(verdict, self.log)
        result = verdict.xcom()
        if verdict.error is not None:
            context["ti"].xcom_push(key=MANIFEST_KEY, value=result)
            raise verdict.error
        self._annotate_outlets(context, result)
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
        """Inputs: the Sora posts; output: the landing prefix, named as its store's provider names it.
        Needs the ``openlineage`` extra."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        urls = [self.video_url] if isinstance(self.video_url, str) else list(self.video_url)
        return OperatorLineage(inputs=input_datasets(urls), outputs=[output_dataset(self.output_path)])


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


def _budget(value: Any) -> float | None:
    """``max_credits`` as rendered: a number, or None/"" for no budget; anything else is a clear error."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise SoraFailedError(f"max_credits must be a number of credits or None, got {value!r}; "
                              "nothing was spent") from None
    if budget < 0:
        raise SoraFailedError(f"max_credits must be >= 0, got {budget:g}; nothing was spent")
    return budget


class _BatchContext:
    """Builds a ``BatchRun`` for this try and closes its clients afterwards."""

    def __init__(self, operator: SoraWatermarkRemoverOperator, context: Any, videos: VideoList) -> None:
        self.operator = operator
        self.context = context
        self.videos = videos

    def __enter__(self) -> BatchRun:
        op, ti = self.operator, self.context["ti"]
        budget = _budget(op.max_credits)  # before any client exists: a bad value costs nothing
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

        store = VideoStateStore(output, scope, service=self.client.service_name, conn_id=op.conn_id)
        try:
            callback_url = op._callback_url(self.client, scope, store)
        except BaseException:
            self.__exit__()
            raise
        settings = BatchSettings(
            if_exists=op.if_exists, keep_source=op.keep_source, on_unknown_submit=op.on_unknown_submit,
            resubmit_failed=op.resubmit_failed, callback_url=callback_url,
            landing_concurrency=op.landing_concurrency, max_active_submissions=op.max_active_submissions,
            poll_schedule=op._schedule(), max_credits=budget,
            retry_failed_after=op.retry_failed_after, retry_rejected=op.retry_rejected,
            claim_wait=op.claim_wait, claim_ttl=2 * op.timeout + 2 * LEASE_TTL,
            provenance={"airflow": {**scope.as_dict(), "try_number": getattr(ti, "try_number", None)}},
        )
        return BatchRun(self.client, store, self.lander, settings, self.videos.videos,
                        pre_rejected=len(self.videos.rejected), on_submitted=on_submitted,
                        progress=ProgressReporter(op.log))

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.lander.close()
