"""A local emulator of the Kie.ai and SaveSora APIs, for demos, tests and users' own offline DAG tests.

    with SandboxServer(accounts={"test-key": 1000}) as sandbox:
        ...  # point a kie/savesora connection at sandbox.url, with allow_private_result_hosts

or from a shell: ``python -m airflow_sora.sandbox --port 8765``.
"""

from airflow_sora.sandbox.faults import FaultRule, Faults
from airflow_sora.sandbox.server import SandboxServer
from airflow_sora.sandbox.state import SandboxConfig

__all__ = ["FaultRule", "Faults", "SandboxConfig", "SandboxServer"]
