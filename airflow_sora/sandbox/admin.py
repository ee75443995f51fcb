"""The admin API under ``/_sandbox/``: faults, settings, accounts, charges, summary, reset, synthetic files.

It lets tests and benchmarks drive a sandbox running in another process (see ``process.SandboxProcess``)
the way ``SandboxServer``'s methods drive one in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_sora.sandbox import files

if TYPE_CHECKING:
    from airflow_sora.sandbox.server import SandboxHandler


def handle(request: SandboxHandler, method: str, name: str) -> None:
    """Answer ``method /_sandbox/<name>``."""
    state = request.state
    if method == "GET" and name == "charges":
        return request.send_json(200, state.charge_log())
    if method == "GET" and name == "tasks":
        return request.send_json(200, state.task_log())
    if method == "GET" and name == "callbacks":
        with state.lock:
            return request.send_json(200, list(state.callbacks_sent))
    if method == "GET" and name == "summary":
        return request.send_json(200, state.summary())
    if method == "GET" and name == "faults":
        return request.send_json(200, state.faults.model_dump())
    if method == "POST" and name == "faults":
        return request.send_json(200, state.update_faults(request.json_body() or {}).model_dump())
    if method == "POST" and name == "config":
        body = request.json_body() or {}
        with state.lock:
            for key, value in body.items():
                if not hasattr(state.config, key):
                    return request.send_json(400, {"error": f"unknown setting {key}"})
                setattr(state.config, key, type(getattr(state.config, key) or value)(value))
        return request.send_json(200, {"ok": True})
    if method == "POST" and name == "accounts":
        body = request.json_body() or {}
        account = state.add_account(body["api_key"], float(body.get("credits", 0)), body.get("name"))
        return request.send_json(200, {"name": account.name, "credits": account.credits})
    if method == "POST" and name == "reset":
        state.reset()
        return request.send_json(200, {"reset": True})
    if method == "GET" and name.startswith("synthetic/") and name.endswith(".mp4"):
        return files.serve_synthetic(request, int(name[len("synthetic/"):-len(".mp4")]))
    if method == "GET" and name == "health":
        return request.send_json(200, {"ok": True})
    return request.send_json(404, {"error": f"unknown admin call {method} {name}"})
