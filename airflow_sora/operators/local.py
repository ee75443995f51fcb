"""``SoraLocalWatermarkRemoverOperator``: clean watermarked Sora files on the worker itself and land them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, get_args

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from airflow_sora import __version__
from airflow_sora.exceptions import SoraFailedError
from airflow_sora.lifecycle import IfExists
from airflow_sora.lineage import asset_for_output, output_dataset, source_datasets
from airflow_sora.local.errors import LocalEngineUnavailableError
from airflow_sora.local.settings import EngineSettings
from airflow_sora.local_batch import IfNoMark, LocalBatch, LocalBatchSettings, LocalManifest, resolve_sources
from airflow_sora.local_batch.land import FileLander
from airflow_sora.local_batch.progress import LocalProgress
from airflow_sora.local_batch.provenance import ENGINE_NAME
from airflow_sora.local_batch.report import emit_metrics, judge, write_closing_lines
from airflow_sora.local_batch.run import Cleaner, engine_clean
from airflow_sora.operators.remove import MANIFEST_KEY, _as_list
from airflow_sora.state import RunScope


class SoraLocalWatermarkRemoverOperator(BaseOperator):
    """Remove the visible watermark from Sora files with the local engine (no paid service); land them with
    provenance, as ``SoraWatermarkRemoverOperator`` lands a service's results.

    Needs the ``local`` extra on the workers (``pip install "airflow-provider-sora[local]"``).

    :param source: the watermarked files (templated): a path, a list of paths, or a folder/prefix meaning every
        file matching ``pattern`` under it, in any store ``ObjectStoragePath`` reads (``s3://conn@bucket/...``).
    :param output_path: where clean files land, anything ``ObjectStoragePath`` accepts (templated). Each lands as
        ``<name>.mp4`` beside its sidecar ``<name>.json``: ``name`` is the Sora post id (``s_<32 hex>``) when
        the file's name carries one, else the file's stem.
    :param pattern: which files of a folder to clean (templated; default ``*.mp4``, case-insensitive); files
        named one by one are cleaned whatever their names.
    :param if_exists: when ``<name>.mp4`` already landed: ``skip`` (no work), ``overwrite`` or ``fail``.
    :param if_no_mark: a file in which the engine finds no mark: ``copy`` lands it unchanged, reported
        ``no_mark``; ``skip`` lands nothing and reports it ``skipped``.
    :param preset: x264 speed preset of the re-encode (faster presets give bigger files at the same quality).
    :param crf: x264 constant rate factor (lower is better; 18 is visually lossless for most content).
    :param threads: encoder and decoder threads (0: one per core).
    :param fail_on_error: fail the task if any file could not be cleaned (not a video, truncated...); else
        report it in the manifest and succeed. A file the store failed is retried either way.
    :param work_dir: where the temporary copies and outputs go (default: the system's temporary folder); each
        file's are removed as soon as it has landed or failed.
    """

    template_fields: Sequence[str] = ("source", "output_path", "pattern")
    template_fields_renderers = {"source": "json"}
    ui_color = "#e8f3ff"

    def __init__(
        self,
        *,
        source: str | list[str],
        output_path: str,
        pattern: str = "*.mp4",
        if_exists: IfExists = "skip",
        if_no_mark: IfNoMark = "copy",
        preset: str = "veryfast",
        crf: int = 18,
        threads: int = 0,
        fail_on_error: bool = True,
        work_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        if if_exists not in get_args(IfExists):
            raise ValueError(f"if_exists must be 'skip', 'overwrite' or 'fail', got {if_exists!r}")
        if if_no_mark not in get_args(IfNoMark):
            raise ValueError(f"if_no_mark must be 'copy' or 'skip', got {if_no_mark!r}")
        self.engine_settings = EngineSettings(preset=preset, crf=crf, threads=threads)  # validated here, at parse
        if "outlets" not in kwargs and isinstance(output_path, str):
            asset = asset_for_output(output_path)
            if asset is not None:
                kwargs["outlets"] = [asset]
        super().__init__(**kwargs)
        self.source = source
        self.output_path = output_path
        self.pattern = pattern
        self.if_exists = if_exists
        self.if_no_mark = if_no_mark
        self.preset = preset
        self.crf = crf
        self.threads = threads
        self.fail_on_error = fail_on_error
        self.work_dir = work_dir

    def execute(self, context: Any) -> dict[str, Any]:
        started = time.monotonic()
        clean = self._engine()
        sources = [str(s) for s in _as_list(self.source) if str(s).strip()]
        if not sources:
            raise SoraFailedError("source is empty: give a file, a list of files or a folder of watermarked videos")
        output = ObjectStoragePath(self.output_path)
        resolved = resolve_sources(sources, pattern=self.pattern, exclude=output)
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        scope = RunScope(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id,
                         map_index=-1 if map_index is None else int(map_index))
        settings = LocalBatchSettings(
            if_exists=self.if_exists, if_no_mark=self.if_no_mark, engine=self.engine_settings,
            provenance={"airflow": {**scope.as_dict(), "try_number": getattr(ti, "try_number", None)}},
            work_dir=self.work_dir)
        self.log.info("Cleaning %d file(s) with the local engine (%s, crf %d) into %s%s", len(resolved.videos),
                      self.preset, self.crf, output, f"; {len(resolved.problems)} source problem(s)"
                      if resolved.problems else "")
        lander = FileLander(output, holder="/".join(str(part) for part in scope.as_dict().values()))
        try:
            progress = LocalProgress(self.log, [v.size for v in resolved.videos])
            outcomes = LocalBatch(resolved.videos, resolved.problems, lander, settings, progress, clean).run()
        finally:
            lander.close()
        manifest = LocalManifest(engine=f"{ENGINE_NAME}/{__version__}", output_path=str(output), videos=outcomes,
                                 worker_seconds=round(time.monotonic() - started, 3))
        return self._report(context, manifest)

    def _engine(self) -> Cleaner:
        try:
            return engine_clean()
        except LocalEngineUnavailableError as error:
            raise SoraFailedError(f"the local engine cannot run on this worker: {error}") from None

    def _report(self, context: Any, manifest: LocalManifest) -> dict[str, Any]:
        error, sentence = judge(manifest, fail_on_error=self.fail_on_error)
        emit_metrics(manifest)
        write_closing_lines(manifest, sentence, self.log)
        result = manifest.to_xcom()
        if error is not None:
            context["ti"].xcom_push(key=MANIFEST_KEY, value=result)
            raise error
        events = context.get("outlet_events")
        if events is not None:
            for outlet in self.outlets or []:
                if isinstance(outlet, Asset):
                    events[outlet].extra = {"output_path": result["output_path"], "counts": result["counts"],
                                            "service": result["service"]}
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the source files or folders; output: the landing prefix, each named as its store's provider
        names it. Needs the ``openlineage`` extra."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        sources = [str(s) for s in _as_list(self.source)]
        return OperatorLineage(inputs=source_datasets(sources), outputs=[output_dataset(self.output_path)])
