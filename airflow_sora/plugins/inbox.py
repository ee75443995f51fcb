"""Where a verified callback is recorded: ``<output>/_state/<dag>/<run>/<task>/_callbacks/<kie task id>.json``.

Chosen over XCom written by the API server and over Redis: the run's state records already live in that folder,
on a store every worker, the triggerer and the API server can reach, so it adds no dependency and no Airflow
internals (XCom rows of a deferred task are not something the API server should write, and Airflow clears them
between tries); one listing tells the waiting side about the whole batch, whatever its size; an entry is
written once (a conditional create), so duplicates change nothing; and it outlives any process, like the state.
"""

from __future__ import annotations

import json
import re
import time

from airflow.sdk import ObjectStoragePath

from airflow_sora.plugins.tokens import CallbackScope
from airflow_sora.state import RunScope, VideoStateStore
from airflow_sora.storage import create_exclusive, list_sizes, read_bytes_or_none

INBOX_DIR = "_callbacks"
SUFFIX = ".json"
TASK_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def valid_task_id(task_id: object) -> bool:
    return isinstance(task_id, str) and TASK_ID.fullmatch(task_id) is not None


def state_store(scope: CallbackScope) -> VideoStateStore:
    run = RunScope(dag_id=scope.dag_id, task_id=scope.task_id, run_id=scope.run_id, map_index=scope.map_index)
    return VideoStateStore(ObjectStoragePath(scope.output), run, service="kie", conn_id=scope.conn_id)


class CallbackInbox:
    """The callbacks heard for one operator try; the waiting side learns of all of them with one listing."""

    def __init__(self, folder: ObjectStoragePath) -> None:
        self.folder = folder

    @classmethod
    def for_state(cls, store: VideoStateStore) -> CallbackInbox:
        return cls(store.root / INBOX_DIR)

    @classmethod
    def for_scope(cls, scope: CallbackScope) -> CallbackInbox:
        return cls.for_state(state_store(scope))

    @classmethod
    def at(cls, uri: str) -> CallbackInbox:
        return cls(ObjectStoragePath(uri))

    @property
    def uri(self) -> str:
        return str(self.folder)

    def record(self, task_id: str, *, code: int | None, state: str | None) -> bool:
        """Write the entry once; False when it was already there (a duplicate or a retry of the callback)."""
        if not valid_task_id(task_id):
            raise ValueError("not a task id")
        entry = {"task_id": task_id, "received_at": time.time(), "code": code, "state": state}
        return create_exclusive(self.folder / f"{task_id}{SUFFIX}", json.dumps(entry).encode())

    def heard(self) -> set[str]:
        """Task ids with a recorded callback: one listing of the folder."""
        return {name[:-len(SUFFIX)] for name in list_sizes(self.folder) if name.endswith(SUFFIX)}

    def entry(self, task_id: str) -> dict[str, object] | None:
        raw = read_bytes_or_none(self.folder / f"{task_id}{SUFFIX}")
        return json.loads(raw) if raw else None
