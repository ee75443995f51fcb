"""The Airflow side of the local engine: which files to clean, cleaning each on the worker, landing the results.

The engine itself (``airflow_sora.local``) knows nothing of object storage or Airflow; this package takes
watermarked files from any store ``ObjectStoragePath`` reads, hands the engine local copies, and lands what it
writes with the same verified, atomic landing and sidecar as the service operator.
"""

from airflow_sora.local_batch.manifest import FileOutcome, FileStatus, LocalManifest
from airflow_sora.local_batch.run import IfNoMark, LocalBatch, LocalBatchSettings
from airflow_sora.local_batch.sources import InputVideo, SourceProblem, output_name, resolve_sources

__all__ = ["FileOutcome", "FileStatus", "IfNoMark", "InputVideo", "LocalBatch", "LocalBatchSettings",
           "LocalManifest", "SourceProblem", "output_name", "resolve_sources"]
